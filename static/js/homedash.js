/* homedash in the browser: the few things htmx does not do by itself. Loaded as a file,
   never inline (the Content-Security-Policy allows no inline script). */
(function () {
  "use strict";

  /* Live fragments replace cards by id. A card the page does not have yet (a channel
     found, a device adopted while the page is open) is added to its room's or device's
     card list; one the page does not show at all is skipped, instead of htmx logging a
     missing target. */
  var PK = /^(\d+|none)$/;

  function newHome(card) {
    var device = card.getAttribute("data-device") || "", room = card.getAttribute("data-room") || "";
    if (!card.classList.contains("card") || !PK.test(device) || !PK.test(room)) { return null; }
    var box = document.querySelector('[data-cards-for-device="' + device + '"]');
    if (box) { return box; }
    box = document.querySelector('[data-cards-for-room="' + room + '"]');
    if (!box || document.querySelector("[data-cards-for-device]")) { return null; }
    // The home page leaves inputs wired to a relay or light to the device page; if the
    // input's card came first, the output's arrival takes it away again.
    var outputs = '.card[data-device="' + device + '"]:is(.kind-switch, .kind-light, .kind-cover)';
    if (card.classList.contains("kind-input") && document.querySelector(outputs)) { return null; }
    if (card.matches(".kind-switch, .kind-light, .kind-cover")) {
      document.querySelectorAll('.card.arrived.kind-input[data-device="' + device + '"]').forEach(function (old) {
        old.remove();
      });
    }
    card.classList.add("arrived");
    return box;
  }

  /* Live messages are cards. They are applied here rather than by htmx's out-of-band
     swap: a card already on the page is updated in place (only the attributes and text
     that changed), which costs the browser about a fifth less per update than parsing a
     new card in and throwing the old one away (bench/, item 1), and keeps the element a
     finger or the keyboard is on. "live-cards" marks the sockets this applies to. */
  htmx.defineExtension("live-cards", {});

  function isLiveSocket(elt) {
    return !!(elt && elt.getAttribute && /(^|,)\s*live-cards\s*(,|$)/.test(elt.getAttribute("hx-ext") || ""));
  }

  function sameShape(a, b) {
    if (a.length !== b.length) { return false; }
    for (var i = 0; i < a.length; i++) {
      if (a[i].nodeType !== b[i].nodeType || a[i].nodeName !== b[i].nodeName) { return false; }
    }
    return true;
  }

  /* Make `old` look like `fresh` (same tag), touching only what differs. Classes htmx
     puts on while a request runs (htmx-request, …) stay. */
  function morph(old, fresh, busy) {
    var i, name;
    for (i = old.attributes.length - 1; i >= 0; i--) {
      name = old.attributes[i].name;
      // htmx disables a control while its request runs (hx-disabled-elt) and re-enables it.
      if (!fresh.hasAttribute(name) && !(busy && name === "disabled")) { old.removeAttribute(name); }
    }
    for (i = 0; i < fresh.attributes.length; i++) {
      name = fresh.attributes[i].name;
      var value = fresh.attributes[i].value;
      if (name === "class") {
        var busy = Array.prototype.filter.call(old.classList, function (c) { return c.indexOf("htmx-") === 0; });
        if (busy.length) { value = value + " " + busy.join(" "); }
      }
      if (old.getAttribute(name) !== value) { old.setAttribute(name, value); }
    }
    // A control the user already moved no longer follows its value attribute.
    if (old.tagName === "INPUT" && old.type !== "checkbox" && old.type !== "radio" && old.value !== fresh.value) {
      old.value = fresh.value;
    }
    if (old.tagName === "INPUT" && old.checked !== fresh.checked) { old.checked = fresh.checked; }
    var was = old.childNodes, now = fresh.childNodes;
    if (!sameShape(was, now)) {
      old.replaceChildren.apply(old, Array.prototype.slice.call(now));
      return;
    }
    var pairs = Array.prototype.slice.call(now);
    for (i = 0; i < pairs.length; i++) {
      if (pairs[i].nodeType === 1) { morph(was[i], pairs[i], busy); }
      else if (was[i].nodeValue !== pairs[i].nodeValue) { was[i].nodeValue = pairs[i].nodeValue; }
    }
  }

  function applyCard(card, fresh) {
    if (holding(card)) { held[card.id] = fresh.outerHTML; return; }
    var active = document.activeElement;
    var spot = active && card.contains(active) ? focusIndex(card, active) : -1;
    fresh.removeAttribute("hx-swap-oob");
    morph(card, fresh, card.classList.contains("htmx-request"));
    htmx.process(card);
    if (spot >= 0 && !card.contains(document.activeElement)) { refocusAt(card, spot); }
  }

  function applyLive(text) {
    var holder = document.createElement("template");
    holder.innerHTML = text;
    var rest = [];
    Array.prototype.slice.call(holder.content.children).forEach(function (child) {
      var old = child.id ? document.getElementById(child.id) : null;
      if (old && old.classList.contains("card") && child.classList.contains("card") && old.tagName === child.tagName) {
        applyCard(old, child);
      } else if (!old && child.classList.contains("card")) {
        var box = newHome(child);
        if (box) {
          child.removeAttribute("hx-swap-oob");
          box.appendChild(child);
          htmx.process(child);
        }
      } else if (old || child.hasAttribute("hx-swap-oob")) {
        rest.push(child.outerHTML);   // anything else is left to htmx's own swap
      }
    });
    if (rest.length) { htmx.swap(document.body, rest.join(""), { swapStyle: "none" }); }
    document.dispatchEvent(new CustomEvent("homedash:live"));
  }

  document.addEventListener("htmx:wsBeforeMessage", function (evt) {
    if (!isLiveSocket(evt.target) || typeof evt.detail.message !== "string") { return; }
    evt.preventDefault();
    if (evt.detail.message.lastIndexOf("error:", 0) === 0) { return; }  // the server's answer to a bad message
    applyLive(evt.detail.message);
  });

  /* A command's answer is the card as the device now is, swapped by id. If a live update
     replaced the card while the command ran, the button that sent it is gone from the
     page, and htmx would look for the card inside the detached old one: swap against the
     document instead. (Controls target the ever-present #toasts, so this event reaches
     us even then.) */
  document.addEventListener("htmx:beforeSwap", function (evt) {
    var elt = evt.detail.requestConfig && evt.detail.requestConfig.elt;
    if (elt && !document.body.contains(elt) && evt.detail.xhr && evt.detail.xhr.status === 200) {
      evt.detail.shouldSwap = false;
      htmx.swap(document.body, evt.detail.serverResponse, { swapStyle: "none" });
    }
  });

  /* Cards with a live power reading are redrawn every few seconds. A redraw must not eat
     a tap, close an open colour picker, or throw the keyboard focus away: hold a card's
     update while a finger or mouse is down on it or its colour picker is open, and put
     the focus back after (a command's answer replaces the card whole). */
  var pressedCard = null;
  var held = {};

  function holding(card) {
    var active = document.activeElement;
    return card === pressedCard || !!(active && active.type === "color" && card.contains(active));
  }

  var FOCUSABLE = "a, button, input, select";

  function focusIndex(card, elt) {
    return Array.prototype.indexOf.call(card.querySelectorAll(FOCUSABLE), elt);
  }

  function refocusAt(card, index) {
    var focusable = card.querySelectorAll(FOCUSABLE)[index];
    if (focusable) { focusable.focus({ preventScroll: true }); }
  }

  function flush(id) {
    var html = held[id];
    var card = document.getElementById(id);
    if (!html || !card || holding(card)) { return; }
    delete held[id];
    var holder = document.createElement("template");
    holder.innerHTML = html;
    if (holder.content.firstElementChild) { applyCard(card, holder.content.firstElementChild); }
  }

  function release() {
    var card = pressedCard;
    pressedCard = null;
    // After the click event the tap produces, not before it.
    if (card) { setTimeout(function () { flush(card.id); }, 0); }
  }

  document.addEventListener("pointerdown", function (evt) {
    pressedCard = evt.target.closest ? evt.target.closest(".card") : null;
  });
  document.addEventListener("pointerup", release);
  document.addEventListener("pointercancel", release);
  document.addEventListener("focusout", function (evt) {
    var card = evt.target.closest ? evt.target.closest(".card") : null;
    if (card) { setTimeout(function () { flush(card.id); }, 0); }
  });

  var refocus = {};
  document.addEventListener("htmx:oobBeforeSwap", function (evt) {
    var card = evt.detail.target;
    if (!card || !card.classList || !card.classList.contains("card") || !card.id) { return; }
    if (holding(card)) {
      var fresh = evt.detail.fragment && evt.detail.fragment.firstElementChild;
      if (fresh) { held[card.id] = fresh.outerHTML; }
      evt.detail.shouldSwap = false;
      return;
    }
    delete held[card.id];  // the answer is newer than any live update held back before it
    var active = document.activeElement;
    if (active && card.contains(active)) { refocus[card.id] = focusIndex(card, active); }
  });
  document.addEventListener("htmx:oobAfterSwap", function (evt) {
    var card = evt.detail.target && document.getElementById(evt.detail.target.id);
    if (!card || !(card.id in refocus)) { return; }
    var index = refocus[card.id];
    delete refocus[card.id];
    refocusAt(card, index);
  });

  /* Notes about failed commands: dismissed by a tap, or by themselves after a while. */
  function tidyToasts() {
    document.querySelectorAll("#toasts .toast:not([data-timer])").forEach(function (toast) {
      toast.setAttribute("data-timer", "1");
      setTimeout(function () { toast.remove(); }, 15000);
    });
  }
  document.addEventListener("htmx:oobAfterSwap", tidyToasts);
  document.addEventListener("click", function (evt) {
    var close = evt.target.closest && evt.target.closest(".toast-close");
    if (close) { close.parentElement.remove(); }
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
