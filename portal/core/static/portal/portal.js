// Small progressive enhancements; every page works without them.
// No inline script anywhere: the Content-Security-Policy allows only script-src 'self'.
(function () {
  "use strict";

  // Confirm destructive POSTs (cancel, requeue, revoke, delete, drain). The question sits on
  // the form, or on the button when one form has several (a node's Drain and Resume).
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var button = event.submitter;
    var question = (button && button.getAttribute("data-confirm")) || form.getAttribute("data-confirm");
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

  // A read-only field to copy from (a new token) selects itself: data-select-on-focus, not an
  // inline onfocus, which the CSP would block.
  document.addEventListener("focusin", function (event) {
    if (event.target.matches && event.target.matches("input[data-select-on-focus]")) { event.target.select(); }
  });

  // ------------------------------------------------------------ times in the reader's zone
  // The server writes times in its own zone, naming it; here they become the browser's zone,
  // still named ("Nov 30, 07:03:04 EST"), so no reader has to guess which clock a time is on.
  var STYLES = {
    seconds: { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" },
    minutes: { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" },
    day: { weekday: "short", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" },
    clock: { hour: "2-digit", minute: "2-digit", second: "2-digit" },
    full: { year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" }
  };
  function formatTime(date, style) {
    if (style === "date") {
      return new Intl.DateTimeFormat("en-US", { year: "numeric", month: "short", day: "numeric" }).format(date);
    }
    var options = Object.assign({ hourCycle: "h23", timeZoneName: "short" }, STYLES[style] || STYLES.seconds);
    return new Intl.DateTimeFormat("en-US", options).format(date);
  }
  function localiseTimes(root) {
    if (!root.querySelectorAll) return;
    var times = Array.prototype.slice.call(root.querySelectorAll("time[datetime][data-style]"));
    if (root.matches && root.matches("time[datetime][data-style]")) { times.push(root); }
    times.forEach(function (el) {
      var date = new Date(el.getAttribute("datetime"));
      if (isNaN(date.getTime())) return;
      el.textContent = formatTime(date, el.getAttribute("data-style"));
      el.title = formatTime(date, "full");
    });
  }
  localiseTimes(document);

  // ------------------------------------------------------------ output follow
  // Stay pinned to the bottom while the reader is at the bottom.
  function pinned(pre) { return pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 24; }
  function scrollOutput() {
    var pre = document.getElementById("output-text");
    if (pre) { pre.scrollTop = pre.scrollHeight; }
  }
  document.addEventListener("htmx:oobBeforeSwap", function () {
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
    localiseTimes(elt);
    if (elt.id === "output-text" || (elt.querySelector && elt.querySelector("#output-text"))) { scrollOutput(); }
  });

  // ------------------------------------------------------------ polling
  // A poll is an element whose hx-trigger says "every Ns". Polls rest while the tab is hidden,
  // and while the element's data-poll-pause selector matches (an open drain form, say), so
  // typing is never swapped away. This lives here rather than in hx-trigger filters because
  // those are evaluated with eval, which the CSP forbids.
  function isPoll(elt) { return !!elt && /\bevery\b/.test(elt.getAttribute("hx-trigger") || ""); }
  document.addEventListener("htmx:beforeRequest", function (event) {
    var elt = event.detail.elt;
    if (!isPoll(elt)) return;
    var pauseWhen = elt.getAttribute("data-poll-pause");
    if (document.visibilityState !== "visible" || (pauseWhen && document.querySelector(pauseWhen))) {
      event.preventDefault();
    }
  });

  // Stale data is said, not hidden: while any live area's polls fail, the page shows since
  // when that area has not been updated. Each area counts on its own, so the output follow
  // still answering does not hide a job status that has stopped.
  var pageLoaded = new Date();
  var lastFresh = {};  // area id -> time of its last good answer
  var failing = {};    // area id -> true while its polls fail
  function areaOf(elt) { return elt.id || elt.getAttribute("hx-get") || "poll"; }
  function showFreshness() {
    var notice = document.getElementById("live-stale");
    if (!notice) return;
    var since = null;
    Object.keys(failing).forEach(function (area) {
      var at = lastFresh[area] || pageLoaded;
      if (!since || at < since) { since = at; }
    });
    notice.hidden = !since;
    notice.textContent = since ? "Not updated since " + formatTime(since, "clock") + " — retrying" : "";
    document.body.classList.toggle("stale", !!since);
  }
  ["htmx:responseError", "htmx:sendError", "htmx:timeout"].forEach(function (name) {
    document.addEventListener(name, function (event) {
      if (isPoll(event.detail.elt)) { failing[areaOf(event.detail.elt)] = true; showFreshness(); }
    });
  });
  // Fresh as soon as a poll's good answer arrives (before its swap: afterwards the polling
  // element may have left the page, and events from it no longer reach the document).
  function pollAnswered(event) {
    var xhr = event.detail.xhr;
    var elt = event.detail.elt;
    if (!isPoll(elt) || !xhr || xhr.status < 200 || xhr.status >= 400) return;
    var area = areaOf(elt);
    lastFresh[area] = new Date();
    if (failing[area]) { delete failing[area]; showFreshness(); }
  }

  // ------------------------------------------------------------ swaps: focus and announcements
  // Elements that carry data-announce and data-state say their state changes out loud, through
  // the polite live region: "Job 12 train: now Running".
  var before = {};
  var refocus = null;
  function focusables(root) {
    return Array.prototype.slice.call(root.querySelectorAll("a[href], button, input, select, textarea, summary, [tabindex]"));
  }
  function snapshot(root) {
    var states = {};
    var els = Array.prototype.slice.call(root.querySelectorAll("[data-announce][data-state][id]"));
    if (root.matches("[data-announce][data-state][id]")) { els.push(root); }
    els.forEach(function (el) { states[el.id] = el.getAttribute("data-state"); });
    return states;
  }
  function stateLabel(el) {
    var badge = el.querySelector(".badge");
    return el.getAttribute("data-state-label") || (badge ? badge.textContent.trim() : el.getAttribute("data-state"));
  }
  function announce(text) {
    var region = document.getElementById("live-announcer");
    if (!region) return;
    region.textContent = "";
    // A fresh text node after a tick, so the same words said twice are read twice.
    setTimeout(function () { region.textContent = text; }, 50);
  }

  document.addEventListener("htmx:beforeSwap", function (event) {
    // A poll that lands on the login page means the session ended: show it as a whole page.
    var url = event.detail.xhr && event.detail.xhr.responseURL;
    if (url && url.indexOf("/accounts/login/") !== -1) { event.preventDefault(); window.location.reload(); return; }
    pollAnswered(event);
    var target = event.detail.target;
    if (!target || !target.id || !event.detail.shouldSwap) return;
    Object.assign(before, snapshot(target));
    // htmx itself puts focus back on an element with an id; for one without, remember its place.
    var active = document.activeElement;
    if (active && active !== document.body && !active.id && target.contains(active)) {
      refocus = { container: target.id, index: focusables(target).indexOf(active) };
    }
  });
  document.addEventListener("htmx:afterSettle", function () {
    if (refocus) {
      var container = document.getElementById(refocus.container);
      var again = container && focusables(container)[refocus.index];
      if (again && (document.activeElement === document.body || !document.activeElement)) {
        again.focus({ preventScroll: true });
      }
      refocus = null;
    }
    var news = [];
    Object.keys(before).forEach(function (id) {
      var el = document.getElementById(id);
      if (el && el.getAttribute("data-state") !== before[id]) {
        news.push(el.getAttribute("data-announce") + ": now " + stateLabel(el));
      }
    });
    before = {};
    if (news.length) { announce(news.join(". ")); }
  });
})();
