// The admin's charts, drawn with Chart.js (static/vendor/chartjs-4.6.1). The data is on
// the page as JSON (Django's json_script), never in an inline script, for the site's
// CSP; an alert's charts refresh every two seconds while it is sending.
(function () {
  if (typeof Chart === "undefined") return;

  function json(id) {
    var element = document.getElementById(id);
    return element ? JSON.parse(element.textContent) : null;
  }

  function points(pairs) {
    return pairs.map(function (p) { return {x: p[0], y: p[1]}; });
  }

  var base = {
    responsive: true, maintainAspectRatio: false, animation: false,
    interaction: {mode: "index", intersect: false},
    plugins: {legend: {position: "bottom"}}
  };

  function options(extra) {
    return Object.assign({}, base, extra);
  }

  function axis(title, extra) {
    return Object.assign({title: {display: true, text: title}, beginAtZero: true}, extra || {});
  }

  function draw(id, config) {
    var canvas = document.getElementById(id);
    if (!canvas) return null;
    return new Chart(canvas, config);
  }

  function sendingDatasets(sending) {
    return [
      {label: "Handed off", data: points(sending.handed_off), stepped: true, pointRadius: 0},
      {label: "Delivered", data: points(sending.delivered), stepped: true, pointRadius: 0}
    ];
  }

  function engagementDatasets(engagement) {
    return [
      {label: "Opens", data: engagement.opened},
      {label: "Clicks", data: engagement.clicked},
      {label: "Unsubscribes", data: engagement.unsubscribed}
    ];
  }

  function hourLabels(engagement) {
    return engagement.hours.map(function (h) { return h + "h"; });
  }

  // One alert's page.
  var alertData = json("alert-charts-data");
  if (alertData) {
    var sending = draw("chart-sending", {
      type: "line", data: {datasets: sendingDatasets(alertData.sending)},
      options: options({scales: {x: axis("Seconds since publishing", {type: "linear"}), y: axis("Readers")}})
    });
    var engagement = draw("chart-engagement", {
      type: "bar", data: {labels: hourLabels(alertData.engagement), datasets: engagementDatasets(alertData.engagement)},
      options: options({scales: {x: axis("Hours after publishing"), y: axis("Events")}})
    });
    var holder = document.getElementById("alert-charts");
    var refresh = function () {
      fetch(holder.dataset.url, {credentials: "same-origin"}).then(function (r) { return r.json(); }).then(function (data) {
        sending.data.datasets = sendingDatasets(data.sending);
        sending.update("none");
        engagement.data.labels = hourLabels(data.engagement);
        engagement.data.datasets = engagementDatasets(data.engagement);
        engagement.update("none");
        holder.dataset.status = data.status;
        if (data.live) setTimeout(refresh, 2000);
      });
    };
    holder.dataset.status = alertData.status;
    if (alertData.live) setTimeout(refresh, 2000);
  }

  // The dashboard: the latest alerts, and subscribers.
  var recent = json("recent-alerts-data");
  if (recent) {
    var labels = recent.alerts.map(function (a) { return a.label; });
    var pick = function (key) { return recent.alerts.map(function (a) { return a[key]; }); };
    draw("chart-recent-inbox", {
      type: "bar", data: {labels: labels, datasets: [
        {label: "p50 time to inbox (s)", data: pick("p50")}, {label: "p95 time to inbox (s)", data: pick("p95")}]},
      options: options({scales: {y: axis("Seconds")}})
    });
    draw("chart-recent-engagement", {
      type: "line", data: {labels: labels, datasets: [
        {label: "Opened (% of delivered)", data: pick("open_rate")},
        {label: "Clicked (% of delivered)", data: pick("click_rate")}]},
      options: options({scales: {y: axis("%")}})
    });
  }
  var readers = json("subscriber-charts-data");
  if (readers) {
    var bySource = function (series) {
      return Object.keys(series).map(function (source) { return {label: source, data: series[source]}; });
    };
    var stacked = {x: {stacked: true}, y: axis("Readers", {stacked: true})};
    draw("chart-confirmed", {
      type: "line", data: {labels: readers.days, datasets: [{label: "Confirmed readers", data: readers.confirmed, pointRadius: 0}]},
      options: options({scales: {y: axis("Readers", {beginAtZero: false})}})
    });
    draw("chart-signups", {type: "bar", data: {labels: readers.days, datasets: bySource(readers.signups)},
                           options: options({scales: stacked})});
    draw("chart-unsubscribes", {type: "bar", data: {labels: readers.days, datasets: bySource(readers.unsubscribes)},
                                options: options({scales: stacked})});
  }
})();
