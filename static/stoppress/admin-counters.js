// How much of the headline and standfirst a phone shows: under each field marked
// data-shown="N", a count and the text as a lock screen or inbox list cuts it, with
// a marker where the cut falls. A file, not an inline script, for the site's CSP; the
// text is set with textContent, never as markup.
(function () {
  function counter(field) {
    var shown = parseInt(field.dataset.shown, 10);
    var box = document.createElement("div");
    // "help" lines it up under the field, as the admin's own help texts are.
    box.className = "help sp-counter";
    box.setAttribute("aria-live", "polite");
    var count = document.createElement("div");
    var preview = document.createElement("div");
    preview.className = "sp-counter__preview";
    var visible = document.createElement("span");
    var marker = document.createElement("span");
    marker.className = "sp-counter__cut";
    marker.textContent = "\u2702";
    marker.title = "A phone cuts the text here";
    var hidden = document.createElement("span");
    hidden.className = "sp-counter__hidden";
    preview.append(visible, marker, hidden);
    box.append(count, preview);
    (field.closest(".flex-container") || field).insertAdjacentElement("afterend", box);
    function update() {
      var text = field.value;
      var length = Array.from(text).length;
      var over = length > shown;
      count.textContent = length + " characters: " + field.dataset.shownWhere + " shows about " + shown +
        (over ? ", so readers see up to the \u2702" : ", so readers see it all");
      box.classList.toggle("sp-counter--over", over);
      var chars = Array.from(text);
      visible.textContent = chars.slice(0, shown).join("");
      hidden.textContent = chars.slice(shown).join("");
      marker.hidden = !over;
      preview.hidden = !over;
    }
    field.addEventListener("input", update);
    update();
  }
  document.querySelectorAll("[data-shown]").forEach(counter);
})();
