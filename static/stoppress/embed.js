/* Embed the signup box in an article page:
     <div data-stoppress-signup></div>
     <script src="https://NEWS-SITE/static/stoppress/embed.js" async></script>
   Each placeholder becomes an iframe of /embed/ on the site that served this script,
   sized to its content. Pages that want their own markup can POST JSON to
   /api/subscribe instead (origin must be in CORS_ALLOWED_ORIGINS). */
(function () {
  "use strict";
  var script = document.currentScript;
  var origin = new URL(script.src).origin;
  document.querySelectorAll("[data-stoppress-signup]").forEach(function (slot) {
    if (slot.querySelector("iframe")) return;
    var frame = document.createElement("iframe");
    // The article the box sits in, so that signups are counted by article ("top
    // articles by signups"), with any utm_* tags of its address.
    frame.src = origin + "/embed/?page=" + encodeURIComponent(location.href.split("#")[0]);
    frame.title = "Sign up to our free breaking news emails";
    frame.style.cssText = "width:100%;border:0;min-height:320px;display:block";
    frame.loading = "lazy";
    slot.appendChild(frame);
  });
  window.addEventListener("message", function (event) {
    if (event.origin !== origin || !event.data || typeof event.data.stoppressHeight !== "number") return;
    document.querySelectorAll("[data-stoppress-signup] iframe").forEach(function (frame) {
      if (frame.contentWindow === event.source) frame.style.height = event.data.stoppressHeight + "px";
    });
  });
})();
