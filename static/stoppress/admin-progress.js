// Live progress of an alert being sent: refreshes the figures every second while it
// is sending or scheduled. A file, not an inline script, for the site's CSP.
(function () {
  var table = document.getElementById("progress");
  if (!table) return;
  function refresh() {
    fetch(table.dataset.url, {credentials: "same-origin"}).then(function (r) { return r.json(); }).then(function (data) {
      table.querySelectorAll("[data-key]").forEach(function (cell) {
        var value = data[cell.dataset.key];
        cell.textContent = value === null || value === "" ? "–" : value;
      });
      // Once it has been sent (or stopped, or failed) the page stops saying
      // "Sending" and offering "Stop sending".
      var title = document.getElementById("progress-title");
      var word = title && title.getAttribute("data-title-" + data.status);
      if (word) title.textContent = word;
      document.querySelectorAll("[data-while-sending]").forEach(function (element) {
        element.hidden = data.status !== "sending";
      });
      if (data.status === "sending" || data.status === "scheduled") setTimeout(refresh, 1000);
    });
  }
  setTimeout(refresh, 1000);
})();
