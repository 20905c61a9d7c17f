/* homedash in the browser: the few things htmx does not do by itself. Loaded as a file,
   never inline (the Content-Security-Policy allows no inline script). */
(function () {
  "use strict";

  /* Live fragments arrive for a whole room or device; a page that does not show one of
     them (a card moved to another room, a channel found a moment ago) simply skips it,
     instead of htmx complaining about a missing target. */
  htmx.defineExtension("live-cards", {
    transformResponse: function (text, xhr) {
      if (xhr) { return text; }  // answers to our own requests are swapped as sent
      var holder = document.createElement("template");
      holder.innerHTML = text;
      var kept = [];
      Array.prototype.forEach.call(holder.content.children, function (child) {
        if (!child.id || document.getElementById(child.id)) { kept.push(child.outerHTML); }
      });
      return kept.join("");
    }
  });

  var socket = null;       // the page's socket wrapper (htmx-ext-ws public interface)
  var retries = 0;
  var hiddenSince = null;

  function say(text) {
    var status = document.getElementById("live-status");
    if (!status) { return; }
    status.textContent = text;
    status.hidden = !text;
  }

  document.addEventListener("htmx:wsOpen", function (evt) {
    socket = evt.detail.socketWrapper;
    retries = 0;
    document.body.classList.remove("live-down");
    say("");
  });

  document.addEventListener("htmx:wsClose", function (evt) {
    var code = evt.detail.event.code;
    var wrapper = evt.detail.socketWrapper;
    document.body.classList.add("live-down");
    if (code === 4401) {
      // Logged out (here or in another tab): go to the login page, unless we were just
      // there, which would mean the socket and the page disagree — then just say so.
      var last = Number(sessionStorage.getItem("homedash-login-redirect") || 0);
      if (Date.now() - last > 30000) {
        sessionStorage.setItem("homedash-login-redirect", String(Date.now()));
        location.assign("/login/?next=" + encodeURIComponent(location.pathname));
      } else {
        say("You are logged out. Reload the page to log in again.");
      }
    } else if (code === 4000) {
      say("Your access changed; reloading…");
      location.reload();
    } else if (code === 4403 || code === 4404) {
      say("This page is no longer shared with you.");
    } else if ([1006, 1011, 1012, 1013].indexOf(code) >= 0) {
      say("Connection lost; reconnecting…");  // htmx-ext-ws retries these by itself
    } else if (wrapper) {
      // 1000/1001 (a server going away cleanly) would end htmx-ext-ws for good: retry
      // with backoff and jitter, like the extension does for the codes it knows.
      say("Connection lost; reconnecting…");
      var delay = Math.random() * 1000 * Math.pow(2, Math.min(retries, 6));
      retries += 1;
      setTimeout(function () { wrapper.reconnect(); }, delay);
    }
  });

  /* A phone that slept may have a socket that looks alive but missed updates: ask for a
     fresh snapshot when the page comes back after a while. */
  document.addEventListener("visibilitychange", function () {
    if (document.hidden) { hiddenSince = Date.now(); return; }
    if (socket && hiddenSince && Date.now() - hiddenSince > 30000) {
      socket.send(JSON.stringify({ type: "refresh" }));
    }
    hiddenSince = null;
  });

  /* Range sliders: show the value while dragging (the command goes out on release). */
  document.addEventListener("input", function (evt) {
    var input = evt.target;
    if (input.type !== "range" || !input.id) { return; }
    var out = document.querySelector('output[for="' + input.id + '"]');
    if (out) { out.textContent = input.value + (input.dataset.unit || ""); }
  });
})();
