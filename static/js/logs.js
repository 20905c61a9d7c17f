/* Debug-log views (console page, device page panel). A file, never inline (CSP).
   The server sends escaped lines as out-of-band fragments; this file only acknowledges
   frames (the server sends just a few ahead of us), filters and trims what is shown, and
   asks the server to pause and resume. Its events are kept away from homedash.js, which
   handles the page's own socket. */
(function () {
  "use strict";
  if (window.homedashLogs) { return; }
  window.homedashLogs = true;

  var MAX_LINES = 5000;   // lines kept on the page; the download has the server's buffer

  function isLogSocket(evt) {
    var el = evt.target;
    return !!(el && el.classList && el.classList.contains("log-view"));
  }
  function viewOf(el) { return el && el.closest ? el.closest(".log-view") : null; }
  function linesOf(view) { return view.querySelector(".log-lines"); }

  function say(view, text) {
    var status = view.querySelector(".log-status");
    if (!status) { return; }
    status.textContent = text;
    status.hidden = !text;
  }

  function matches(view, line) {
    var text = view.logFilter;
    if (!text || line.classList.contains("log-note") || line.classList.contains("log-dropped")) { return true; }
    return line.textContent.toLowerCase().indexOf(text) >= 0;
  }

  function applyFilter(view, nodes) {
    Array.prototype.forEach.call(nodes, function (line) {
      line.setAttribute("data-seen", "");
      line.hidden = !matches(view, line);
    });
  }

  function setPaused(view, paused, tell) {
    view.logPaused = paused;
    var button = view.querySelector(".log-pause");
    if (button) {
      button.textContent = paused ? "Resume" : "Pause";
      button.setAttribute("aria-pressed", paused ? "true" : "false");
    }
    if (tell && view.logSocket) { view.logSocket.send(JSON.stringify({ type: paused ? "pause" : "resume" })); }
    say(view, paused ? "Paused. New lines wait on the server (its most recent lines per device) and appear when you resume." : "");
  }

  function updateDownload(view) {
    var link = view.querySelector(".log-download");
    var level = view.querySelector(".log-level");
    if (!link || !level) { return; }
    link.href = link.getAttribute("data-base") + (level.value !== "4" ? "&level=" + level.value : "");
  }

  document.addEventListener("htmx:wsOpen", function (evt) {
    if (!isLogSocket(evt)) { return; }
    evt.stopPropagation();
    var view = evt.target;
    view.logSocket = evt.detail.socketWrapper;
    view.logRetries = 0;
    view.classList.remove("log-down");
    setPaused(view, false, false);  // a fresh connection starts live, with the buffer replayed
  }, true);

  document.addEventListener("htmx:wsBeforeMessage", function (evt) {
    if (!isLogSocket(evt)) { return; }
    evt.stopPropagation();
    var lines = linesOf(evt.target);
    evt.target.logStick = !!lines && (lines.scrollHeight - lines.scrollTop - lines.clientHeight < 40);
  }, true);

  document.addEventListener("htmx:wsAfterMessage", function (evt) {
    if (!isLogSocket(evt)) { return; }
    evt.stopPropagation();
    var view = evt.target;
    evt.detail.socketWrapper.send('{"type":"ack"}');
    var lines = linesOf(view);
    if (!lines) { return; }
    applyFilter(view, lines.querySelectorAll(".log-line:not([data-seen])"));
    var extra = lines.children.length - MAX_LINES;
    while (extra-- > 0) { lines.removeChild(lines.firstElementChild); }
    if (view.logStick) { lines.scrollTop = lines.scrollHeight; }
  }, true);

  document.addEventListener("htmx:wsClose", function (evt) {
    if (!isLogSocket(evt)) { return; }
    evt.stopPropagation();
    var view = evt.target;
    var code = evt.detail.event.code;
    var wrapper = evt.detail.socketWrapper;
    view.classList.add("log-down");
    view.logSocket = null;
    if (code === 4401) {
      say(view, "You are logged out. Reload the page to log in again.");
    } else if (code === 4000) {
      say(view, "Your access changed; reloading…");
      location.reload();
    } else if (code === 4400 || code === 4403 || code === 4404) {
      var status = view.querySelector(".log-status");
      if (status && !status.textContent) { say(view, "You may not read this log."); }
    } else if ([1006, 1011, 1012, 1013].indexOf(code) >= 0) {
      say(view, "Connection to homedash lost; reconnecting…");  // htmx-ext-ws retries these
    } else if (wrapper && document.body.contains(view)) {
      say(view, "Connection to homedash lost; reconnecting…");
      var delay = Math.random() * 1000 * Math.pow(2, Math.min(view.logRetries || 0, 6));
      view.logRetries = (view.logRetries || 0) + 1;
      setTimeout(function () { if (document.body.contains(view)) { wrapper.reconnect(); } }, delay);
    }
  }, true);

  document.addEventListener("change", function (evt) {
    var select = evt.target;
    if (!select.classList || !select.classList.contains("log-level")) { return; }
    var view = viewOf(select);
    var lines = view && linesOf(view);
    if (!lines) { return; }
    lines.classList.remove("max-0", "max-1", "max-2", "max-3");
    if (select.value !== "4") { lines.classList.add("max-" + select.value); }
    updateDownload(view);
  });

  document.addEventListener("input", function (evt) {
    var input = evt.target;
    if (!input.classList || !input.classList.contains("log-filter")) { return; }
    var view = viewOf(input);
    var lines = view && linesOf(view);
    if (!lines) { return; }
    view.logFilter = input.value.trim().toLowerCase();
    applyFilter(view, lines.children);
  });

  document.addEventListener("click", function (evt) {
    var button = evt.target.closest ? evt.target.closest(".log-pause, .log-clear") : null;
    var view = viewOf(button);
    if (!button || !view) { return; }
    if (button.classList.contains("log-clear")) {
      var lines = linesOf(view);
      if (lines) { lines.replaceChildren(); }
      return;
    }
    setPaused(view, !view.logPaused, true);
  });
})();
