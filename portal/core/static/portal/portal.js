// Small progressive enhancements; every page works without them.
(function () {
  "use strict";

  // Confirm destructive POSTs (cancel, requeue, revoke, delete).
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { event.preventDefault(); return; }
    // One click, one request: the server's idempotency key makes a second one harmless anyway.
    if (form.hasAttribute("data-once")) {
      setTimeout(function () {
        form.querySelectorAll("button[type=submit]").forEach(function (b) { b.disabled = true; });
      }, 0);
    }
  });
  // A page restored from the back/forward cache must not keep its buttons disabled.
  window.addEventListener("pageshow", function () {
    document.querySelectorAll("form[data-once] button[type=submit]").forEach(function (b) { b.disabled = false; });
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var field = document.querySelector(button.getAttribute("data-copy"));
    field.select();
    if (navigator.clipboard) { navigator.clipboard.writeText(field.value); }
    button.textContent = "Copied";
  });

  // Output follow: stay pinned to the bottom while the reader is at the bottom.
  function pinned(pre) { return pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 24; }
  function scrollOutput() {
    var pre = document.getElementById("output-text");
    if (pre) { pre.scrollTop = pre.scrollHeight; }
  }
  document.addEventListener("htmx:oobBeforeSwap", function (event) {
    var pre = document.getElementById("output-text");
    if (pre) { pre.dataset.pinned = pinned(pre) ? "1" : ""; }
  });
  document.addEventListener("htmx:oobAfterSwap", function () {
    var pre = document.getElementById("output-text");
    if (pre && pre.dataset.pinned) { pre.scrollTop = pre.scrollHeight; }
  });
  // htmx:load fires for the first page and for every swapped-in element, e.g. a new output card.
  document.addEventListener("htmx:load", function (event) {
    var elt = event.detail.elt;
    if (elt.id === "output-text" || (elt.querySelector && elt.querySelector("#output-text"))) { scrollOutput(); }
  });

  // A poll that lands on the login page means the session ended: show it as a whole page.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var url = event.detail.xhr && event.detail.xhr.responseURL;
    if (url && url.indexOf("/accounts/login/") !== -1) { event.preventDefault(); window.location.reload(); }
  });
})();
