/* Progressive enhancement for the signup box: the browser's own check with our
   words, the reader's time zone, and a "Did you mean" hint for mistyped domains.
   Without JavaScript the form posts as usual and the server says the same. */
(function () {
  "use strict";
  var MESSAGE = "Please enter a valid email address";
  var DOMAINS = ["gmail.com", "googlemail.com", "hotmail.com", "hotmail.co.uk", "outlook.com",
    "live.com", "live.co.uk", "yahoo.com", "yahoo.co.uk", "icloud.com", "me.com", "aol.com",
    "btinternet.com", "sky.com", "virginmedia.com", "protonmail.com", "proton.me", "msn.com"];

  function distance(a, b) {
    var prev = [], cur, i, j;
    for (j = 0; j <= b.length; j++) prev[j] = j;
    for (i = 1; i <= a.length; i++) {
      cur = [i];
      for (j = 1; j <= b.length; j++) {
        cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
      }
      prev = cur;
    }
    return prev[b.length];
  }

  function suggestion(value) {
    var at = value.lastIndexOf("@");
    if (at < 1) return null;
    var domain = value.slice(at + 1).toLowerCase();
    if (!domain || DOMAINS.indexOf(domain) !== -1) return null;
    var best = null, bestScore = 3;
    DOMAINS.forEach(function (d) {
      var score = distance(domain, d);
      if (score > 0 && score < bestScore) { best = d; bestScore = score; }
    });
    return best ? value.slice(0, at + 1) + best : null;
  }

  function enhance(form) {
    var input = form.querySelector("input[name=email]");
    var error = form.querySelector(".signup__error");
    var hint = form.querySelector("#email-hint");
    var tz = form.querySelector("input[name=tz]");
    try { tz.value = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (e) { /* old browser */ }
    form.noValidate = true;

    function showError(show) {
      error.hidden = !show;
      input.classList.toggle("is-invalid", show);
      if (show) { input.setAttribute("aria-invalid", "true"); } else { input.removeAttribute("aria-invalid"); }
      input.setCustomValidity(show ? MESSAGE : "");
    }

    function valid() {
      input.setCustomValidity("");
      var value = input.value.trim();
      // The browser's type=email check plus a dot in the domain, which it does not require.
      return value !== "" && input.checkValidity() && /@[^@.\s]+\.[^@\s]+$/.test(value);
    }

    input.addEventListener("input", function () { if (!error.hidden && valid()) showError(false); });
    input.addEventListener("blur", function () {
      var s = input.value.trim() && suggestion(input.value.trim());
      hint.hidden = !s;
      hint.textContent = "";
      if (s) {
        var button = document.createElement("button");
        button.type = "button";
        button.textContent = s;
        button.addEventListener("click", function () { input.value = s; hint.hidden = true; input.focus(); });
        hint.append("Did you mean ", button, "?");
      }
    });
    form.addEventListener("submit", function (event) {
      if (!valid()) {
        event.preventDefault();
        showError(true);
        input.focus();
      }
    });
  }

  document.querySelectorAll("[data-signup-form]").forEach(enhance);
  var thanks = document.getElementById("signup-thanks");
  if (thanks) thanks.focus();
})();

/* Inside an embed iframe: tell the host page how tall we are. */
(function () {
  "use strict";
  if (window.parent === window) return;
  function report() { window.parent.postMessage({ stoppressHeight: document.documentElement.scrollHeight }, "*"); }
  window.addEventListener("load", report);
  new ResizeObserver(report).observe(document.body);
})();
