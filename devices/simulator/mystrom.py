"""Simulated myStrom devices: WiFi Switch (CH v1, CH v2, EU, Zero), Bulb, LED Strip,
Motion Sensor (PIR) and Button / Button+.

They follow ``../shared/reference/mystrom.md``: the same paths, the same JSON keys and
types as the real firmware, and the same unfriendly edges a client has to live with --
empty bodies after ``/relay``, the HTML redirect of a v1 switch, 404 for a wrong token, the
"CORS protection" that refuses any request carrying ``Accept-Encoding`` without a
matching ``Referer``/``Origin``, ``Ws`` that every caller resets, and UDP announcements
on port 7979 (sent only to a loopback target here).
"""

from __future__ import annotations

import asyncio
import collections
import colorsys
import contextlib
import json
import logging
import re
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from .base import Appliance, SimDevice, check_send_target, json_response

log = logging.getLogger(__name__)

ANNOUNCE_PORT = 7979
ANNOUNCE_INTERVAL = 5.0          # seconds, the official interval
ACTION_URL_MAX = 800             # button firmware limit for one (chained) action string
PIR_ACTION_URL_MAX = 767
CALLBACK_TIMEOUT = 5.0
NOTIFY_PARALLEL = 4              # bulb notifications in flight at most

# Flags byte of the UDP announcement (official picture): bit0 mesh child, bit1 registered
# to a cloud account, bit2 connected to the cloud.
FLAG_REGISTERED = 0x02
FLAG_CLOUD = 0x04

HOME_NETWORKS = ("Stube", "Chalet-Sonnenberg", "Wohnung 3B", "Casa-Lago", "Heimnetz")


def not_found() -> web.Response:
    # The firmware answers 404 for a wrong token, a disabled REST API, a CORS refusal and
    # an unknown path alike; the body is irrelevant to clients.
    return web.Response(status=404, text="")


def bad_request() -> web.Response:
    return web.Response(status=400, text="")


def empty_ok() -> web.Response:
    """What /relay, /timer, /power_cycle answer: 200 with nothing in it."""
    return web.Response(status=200, body=b"")


def decode_form(raw: str) -> dict[str, str]:
    """Parse ``a=1&b=2`` the way the firmware does: percent escapes are decoded except
    ``%3B``, which the firmware keeps literally (so an encoded HSV colour is not one)."""

    def unescape(text: str) -> str:
        text = text.replace("+", " ")
        out = bytearray()
        i = 0
        raw_bytes = text.encode()
        while i < len(raw_bytes):
            ch = raw_bytes[i]
            if ch == 0x25 and i + 2 < len(raw_bytes) and re.fullmatch(
                rb"[0-9A-Fa-f]{2}", raw_bytes[i + 1 : i + 3]
            ):
                code = int(raw_bytes[i + 1 : i + 3], 16)
                if code != 0x3B:
                    out.append(code)
                    i += 3
                    continue
            out.append(ch)
            i += 1
        return out.decode("utf-8", errors="replace")

    fields: dict[str, str] = {}
    for part in raw.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        fields[unescape(key)] = unescape(value)
    return fields


# --------------------------------------------------------------------------- action URLs
@dataclass
class Callback:
    """One HTTP call a device made to an action URL (kept for tests and the control API)."""

    method: str
    url: str
    body: str = ""
    status: int | None = None
    error: str = ""
    at: float = field(default_factory=time.monotonic)


def parse_action(action: str, http_means: str = "POST") -> list[tuple[str, str, str, str]]:
    """Split a myStrom action string into (method, url, body, content type) calls.

    Syntax (reference §5): ``get://``, ``post://``, ``put://``, ``delete://`` replace
    ``http://`` (a trailing ``s`` means HTTPS); ``http://`` itself means ``http_means``;
    for post/put everything after ``?`` is the body, typed by its look; several actions
    are chained with ``||``.
    """
    calls = []
    for one in action.split("||"):
        one = one.strip()
        if not one:
            continue
        scheme, sep, rest = one.partition("://")
        if not sep:
            continue
        scheme = scheme.lower()
        if scheme in ("http", "https"):
            method, secure = http_means, scheme == "https"
        elif scheme in ("get", "post", "put", "delete", "gets", "posts", "puts", "deletes"):
            plain = scheme[:-1] if scheme in ("gets", "posts", "puts", "deletes") else scheme
            method, secure = plain.upper(), plain != scheme
        else:
            continue
        url = ("https://" if secure else "http://") + rest
        body, ctype = "", ""
        if method in ("POST", "PUT") and "?" in url:
            url, _, body = url.partition("?")
            stripped = body.strip()
            if stripped.startswith(("{", "[")):
                ctype = "application/json"
            elif "=" in stripped:
                ctype = "application/x-www-form-urlencoded"
            else:
                ctype = "text/plain"
        calls.append((method, url, body, ctype))
    return calls


class ActionCaller:
    """Makes the HTTP calls a myStrom device sends to its action URLs -- to loopback
    targets only (``check_send_target``); a refused target is recorded, never sent."""

    def __init__(self, device: SimDevice, http_means: str = "POST") -> None:
        self.device = device
        self.http_means = http_means
        self.log: collections.deque[Callback] = collections.deque(maxlen=200)

    async def fire(self, action: str, params: dict[str, str] | None = None) -> list[Callback]:
        done = []
        for method, url, body, ctype in parse_action(action, self.http_means):
            if params:
                extra = "&".join(f"{k}={v}" for k, v in params.items())
                if method in ("POST", "PUT") and ctype != "application/json":
                    body = f"{body}&{extra}" if body else extra
                    ctype = ctype or "application/x-www-form-urlencoded"
                else:
                    url = f"{url}{'&' if '?' in url else '?'}{extra}"
            record = Callback(method=method, url=url, body=body)
            host = urlsplit(url).hostname or ""
            try:
                check_send_target(host)
            except ValueError as exc:
                record.error = str(exc)
            else:
                await self._send(record, ctype)
            self.log.append(record)
            done.append(record)
        return done

    async def post_json(self, url: str, payload: Any) -> Callback:
        """A push that is not an action string (the bulb's notifyurl)."""
        if "://" not in url:
            url = f"http://{url}"
        record = Callback(method="POST", url=url, body=json.dumps(payload, separators=(",", ":")))
        try:
            check_send_target(urlsplit(url).hostname or "")
        except ValueError as exc:
            record.error = str(exc)
        else:
            await self._send(record, "application/json")
        self.log.append(record)
        return record

    async def _send(self, record: Callback, ctype: str) -> None:
        headers = {"Content-Type": ctype} if ctype else {}
        timeout = aiohttp.ClientTimeout(total=CALLBACK_TIMEOUT)
        try:
            # A tiny embedded HTTP client: no compression, no keep-alive.
            async with aiohttp.ClientSession(
                timeout=timeout, skip_auto_headers=("Accept-Encoding", "User-Agent")
            ) as session:
                async with session.request(
                    record.method, record.url, data=record.body.encode() or None,
                    headers=headers, allow_redirects=False, ssl=False,
                ) as resp:
                    await resp.content.read(4096)
                    record.status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, OSError) as exc:
            record.error = f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- base class
class MyStromDevice(SimDevice):
    """What every myStrom device shares: info, settings, token, CORS protection and the
    UDP announcement."""

    vendor = "mystrom"
    oui = "30AEA4"
    type_code = 0
    literal = ""
    firmware = "4.0.14"
    announces = True               # v1 switches reportedly never broadcast
    protection_capable = True      # CORS protection exists from fw 3.82.56 / 2.59.32 / 2.74.36
    reports_signal = False         # /api/v1/info has "signal" on bulbs, buttons, PIR
    strict_referer = False         # button fw: a present Referer must be the device's own
    # Settings that /api/v1/settings accepts: name -> (type, bounds)
    settings_schema: dict[str, tuple[type, Any]] = {
        "rest": (bool, None), "panel": (bool, None), "name": (str, 32), "token": (str, 256),
    }
    hidden_settings = ("token",)

    def __init__(
        self,
        *,
        announce_to: tuple[str, int] | None = None,
        announce_interval: float = ANNOUNCE_INTERVAL,
        token: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if announce_to is not None:
            check_send_target(announce_to[0])
        self.model = str(self.type_code)
        self.announce_to = announce_to
        self.announce_interval = announce_interval
        self.announcements_sent = 0
        self.clock = clock
        self.token = token or ""
        self.protection = self.protection_capable
        self.ssid = self.rng.choice(HOME_NETWORKS)
        self.signal = self.rng.randint(48, 97)
        self.flags = self.rng.choice((FLAG_CLOUD, FLAG_CLOUD | FLAG_REGISTERED, 0))
        self.settings: dict[str, Any] = {"rest": True, "panel": True, "name": self.name}
        self._announcer: asyncio.Task | None = None
        self.boot_epoch = clock()
        self.boot_id = self._new_boot_id()

    # ------------------------------------------------------------ identity
    @property
    def secret(self) -> str:
        return self.token

    def set_secret(self, value: str | None) -> None:
        """Token set or cleared from the device's web UI (empty = no token)."""
        self.token = value or ""

    def describe(self) -> dict[str, Any]:
        row = super().describe()
        row.update(kind=type(self).__name__, asleep=self._site is None and self._runner is not None,
                   protection=self.protection, state=self.summary())
        return row

    def summary(self) -> str:
        return ""

    def _new_boot_id(self) -> str:
        return f"{self.rng.getrandbits(32):08X}"

    def time_since_boot(self) -> int:
        return int(self.clock() - self.boot_epoch)

    def on_boot(self) -> None:
        self.boot_epoch = self.clock()
        self.boot_id = self._new_boot_id()

    def press(self, channel: int = 0, kind: str = "single"):
        raise ValueError(f"{self.label} has no button to press")

    def flip(self, channel: int = 0):
        raise ValueError(f"{self.label} has nothing to switch")

    # ------------------------------------------------------------ payloads
    def connection_status(self) -> dict[str, bool]:
        cloud = bool(self.flags & FLAG_CLOUD)
        return {"ntp": True, "dns": True, "connection": cloud, "handshake": cloud, "login": cloud}

    def info(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "version": self.firmware, "mac": self.mac, "type": self.type_code,
            "ssid": self.ssid, "ip": self.host, "mask": "255.0.0.0",
            "gw": "127.0.0.1", "dns": "127.0.0.1", "static": False, "connected": True,
        }
        if self.reports_signal:
            data["signal"] = self.signal
        data["connectionStatus"] = self.connection_status()
        return data

    def legacy_info(self) -> dict[str, Any]:
        """/info.json on current firmware: the literal type code and the name."""
        data = self.info()
        data.pop("signal", None)
        data["type"] = self.literal
        status = data.pop("connectionStatus")
        data["name"] = self.name
        data["connectionStatus"] = status
        return data

    def settings_view(self) -> dict[str, Any]:
        return {k: v for k, v in self.settings.items() if k not in self.hidden_settings}

    # ------------------------------------------------------------ server
    def build_app(self) -> web.Application:
        app = super().build_app()
        # After the fault middleware, so refused requests still count and still suffer
        # latency like on the real device.
        app.middlewares.append(self._guard)
        return app

    def setup_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/api/v1/info", self.h_info)
        r.add_get("/info.json", self.h_legacy_info)
        r.add_get("/info", self.h_legacy_info)
        r.add_get("/api/v1/settings", self.h_settings)
        r.add_post("/api/v1/settings", self.h_settings_post)
        r.add_post("/api/v1/protection/enable", self.h_protection_on)
        r.add_post("/api/v1/protection/disable", self.h_protection_off)

    def is_state_changing(self, request: web.Request) -> bool:
        """Requests refused whenever Accept-Encoding is present, whatever the Referer."""
        return False

    def uses_panel(self, path: str) -> bool:
        return path.startswith(("/api/v1/settings", "/api/v1/protection"))

    @web.middleware
    async def _guard(self, request: web.Request, handler):
        if self.token and request.headers.get("Token") != self.token:
            return not_found()
        if self.uses_panel(request.path):
            if not self.settings.get("panel", True):
                return not_found()
        elif not self.settings.get("rest", True):
            return not_found()
        referer = request.headers.get("Referer")
        origin = request.headers.get("Origin")
        own = f"http://{self.host}"
        if self.strict_referer and referer is not None and not referer.startswith(own):
            return not_found()
        if self.protection and "Accept-Encoding" in request.headers:
            # The header's mere presence counts (even "identity"): it marks a browser.
            if self.is_state_changing(request):
                return not_found()
            if not ((referer or "").startswith(own) or (origin or "").startswith(own)):
                return not_found()
        return await handler(request)

    async def h_info(self, request: web.Request) -> web.Response:
        return json_response(self.info())

    async def h_legacy_info(self, request: web.Request) -> web.Response:
        return json_response(self.legacy_info())

    async def h_settings(self, request: web.Request) -> web.Response:
        return json_response(self.settings_view())

    async def h_settings_post(self, request: web.Request) -> web.Response:
        try:
            patch = json.loads(await request.text())
        except (ValueError, UnicodeDecodeError):
            return bad_request()
        if not isinstance(patch, dict) or not self.apply_settings(patch):
            return bad_request()
        return json_response(self.settings_view())

    def apply_settings(self, patch: dict[str, Any]) -> bool:
        """Validate the whole patch first, then apply it: a 400 changes nothing."""
        for key, value in patch.items():
            if key not in self.settings_schema:
                return False
            kind, bound = self.settings_schema[key]
            if kind is bool:
                if not isinstance(value, bool):
                    return False
            elif kind is str:
                if not isinstance(value, str) or len(value) > bound:
                    return False
            elif kind is float:
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    return False
                if not bound[0] <= value <= bound[1]:
                    return False
            elif kind is int:
                if isinstance(value, bool) or not isinstance(value, int):
                    return False
                if not bound[0] <= value <= bound[1]:
                    return False
        for key, value in patch.items():
            if key == "token":
                self.token = value
            elif key == "prot_off":
                self.protection = self.protection_capable and not value
            else:
                self.settings[key] = value
            if key == "name":
                self.name = value
        if "prot_off" in self.settings_schema:
            self.settings["prot_off"] = not self.protection
        return True

    async def h_protection_on(self, request: web.Request) -> web.Response:
        self.protection = self.protection_capable
        if "prot_off" in self.settings_schema:
            self.settings["prot_off"] = not self.protection
        return empty_ok()

    async def h_protection_off(self, request: web.Request) -> web.Response:
        self.protection = False
        if "prot_off" in self.settings_schema:
            self.settings["prot_off"] = True
        return empty_ok()

    # ------------------------------------------------------------ announcements
    def announcement(self) -> bytes:
        """8 bytes: 6-byte MAC, type, flags (reference §1.2)."""
        return bytes.fromhex(self.mac) + bytes((self.type_code & 0xFF, self.flags & 0xFF))

    async def on_started(self) -> None:
        await super().on_started()
        if self.announces and self.announce_to is not None and self._announcer is None:
            self._announcer = self.spawn(self._announce_loop())

    async def on_stopping(self) -> None:
        await self._stop_announcing()
        await super().on_stopping()

    async def power_off(self) -> None:
        await self._stop_announcing()
        await super().power_off()

    async def _stop_announcing(self) -> None:
        task, self._announcer = self._announcer, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    async def _announce_loop(self) -> None:
        assert self.announce_to is not None
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            # The datagram's source address is how listeners learn the device's IP, so
            # send from the device's own address (a move_to restarts this loop).
            sock.bind((self.host, 0))
            sock.setblocking(False)
            while True:
                host, port = self.announce_to
                check_send_target(host)
                try:
                    await loop.sock_sendto(sock, self.announcement(), (host, port))
                    self.announcements_sent += 1
                except OSError as exc:
                    log.debug("%s: announcement failed: %s", self.mac, exc)
                # Real devices drift between ~4 and ~15 s; keep a little jitter.
                await asyncio.sleep(self.announce_interval * self.rng.uniform(0.9, 1.1))
        finally:
            sock.close()

    # /api/v1/device[/<MAC>]: bulbs, strips and buttons describe themselves keyed by MAC.
    def device_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def _mine(self, request: web.Request) -> bool:
        mac = request.match_info.get("mac", "")
        return mac == "self" or mac.upper() == self.mac

    async def h_devices(self, request: web.Request) -> web.Response:
        return json_response({self.mac: self.device_state()})

    async def h_device(self, request: web.Request) -> web.Response:
        if not self._mine(request):
            return not_found()
        return json_response({self.mac: self.device_state()})

    # /api/v1/action/...: the action URLs of buttons and motion sensors (raw URL bodies).
    action_url_max = ACTION_URL_MAX
    actions: dict[str, str]

    async def h_action(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        if kind not in self.actions:
            return not_found()
        return json_response({"url": self.actions[kind]})

    async def h_action_post(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        if kind not in self.actions:
            return not_found()
        url = (await request.text()).strip()
        if len(url) > self.action_url_max:
            return bad_request()
        self.actions[kind] = url
        return empty_ok()


# --------------------------------------------------------------------------- switches
SWITCH_VARIANTS: dict[str, dict[str, Any]] = {
    # fw 2.68: only /info.json, /report = power + relay, no protection, no announcement
    "ch_v1": dict(type_code=101, literal="WSW", firmware="2.68.10", label="Switch CH v1"),
    # fw 4.x: boot_id, energy_since_boot, time_since_boot
    "ch_v2": dict(type_code=106, literal="WS2", firmware="4.0.14", label="Switch CH v2"),
    "eu": dict(type_code=107, literal="WSE", firmware="3.83.1", label="Switch EU"),
    "zero": dict(type_code=120, literal="LCS", firmware="4.0.14", label="Switch Zero"),
}

# What a household plugs into a switch: (name, nominal watts).
LOADS = (("fridge", 85.0), ("floor lamp", 42.0), ("television", 96.0), ("desk", 64.0),
         ("dehumidifier", 180.0), ("aquarium", 28.0), ("kettle", 1850.0), ("heater", 900.0))

class MyStromSwitch(MyStromDevice):
    """WiFi Switch, one relay; metering on every variant except the Zero."""

    settings_schema = {
        **MyStromDevice.settings_schema,
        "hap_disable": (bool, None), "temp_offset": (float, (-30.0, 30.0)),
        "prot_off": (bool, None),
    }

    def __init__(self, variant: str = "ch_v2", *, load: tuple[str, float] | None = None,
                 relay: bool = True, **kwargs: Any) -> None:
        if variant not in SWITCH_VARIANTS:
            raise ValueError(f"unknown myStrom switch variant {variant!r}")
        spec = SWITCH_VARIANTS[variant]
        self.variant = variant
        self.type_code = spec["type_code"]
        self.literal = spec["literal"]
        self.firmware = spec["firmware"]
        self.label = spec["label"]
        self.announces = variant != "ch_v1"
        self.protection_capable = variant != "ch_v1"
        super().__init__(**kwargs)
        self.metering = variant != "zero"
        self.load_name, nominal = load or self.rng.choice(LOADS)
        self.load = Appliance(self.rng, nominal, clock=self.clock)
        self.load.switch(relay)
        self.room_temp = round(self.rng.uniform(19.5, 23.5), 2)
        self.settings.update(hap_disable=False, temp_offset=0, prot_off=False)
        self._ws_mark = (self.clock(), 0.0)
        self._timer: asyncio.Task | None = None

    @property
    def relay(self) -> bool:
        return self.load.on

    def summary(self) -> str:
        return f"relay {'on' if self.relay else 'off'} ({self.load_name})"

    def set_relay(self, on: bool) -> None:
        self.load.switch(on)

    def flip(self, channel: int = 0) -> None:
        """Someone pressed the button on the plug."""
        self.set_relay(not self.relay)

    def press(self, channel: int = 0, kind: str = "single") -> None:
        # The only button on a switch toggles the relay.
        if kind != "single":
            raise ValueError("a myStrom switch only knows a single press")
        self.flip(channel)

    def on_boot(self) -> None:
        super().on_boot()
        self.load.reboot()
        self._ws_mark = (self.clock(), 0.0)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # ------------------------------------------------------------ payloads
    def temperature(self) -> dict[str, float]:
        """The sensor sits next to the relay: it reads high, more so under load."""
        compensation = round(8.0 + min(self.load.power, 2500.0) * 0.004, 2)
        offset = self.settings.get("temp_offset", 0)
        room = self.room_temp + 0.3 * self.rng.uniform(-1, 1)
        measured = round(room + compensation, 2)
        return {"measured": measured, "compensation": compensation,
                "compensated": round(measured - compensation + offset, 2), "offset": offset}

    def report(self) -> dict[str, Any]:
        power = self.load.advance()
        if not self.metering:
            return {"relay": self.relay}
        if self.variant == "ch_v1":
            return {"power": round(power, 2), "relay": self.relay}
        # Ws: average power since the previous /report, whoever asked -- each call
        # moves the window, exactly the behaviour that confuses several pollers.
        now, energy = self.clock(), self.load.energy_ws
        then, before = self._ws_mark
        ws = (energy - before) / (now - then) if now > then else power
        self._ws_mark = (now, energy)
        data: dict[str, Any] = {
            "power": round(power, 2), "Ws": round(ws, 2), "relay": self.relay,
            "temperature": self.temperature()["compensated"],
        }
        if self.variant == "ch_v2":
            data.update(boot_id=self.boot_id, energy_since_boot=round(energy, 2),
                        time_since_boot=self.time_since_boot())
        return data

    def legacy_info(self) -> dict[str, Any]:
        if self.variant != "ch_v1":
            return super().legacy_info()
        # fw 2.68: "gateway" instead of "gw", no type, no name
        return {"version": self.firmware, "mac": self.mac, "ssid": self.ssid, "ip": self.host,
                "mask": "255.0.0.0", "gateway": "127.0.0.1", "dns": "127.0.0.1",
                "static": False, "connected": True, "connectionStatus": self.connection_status()}

    # ------------------------------------------------------------ routes
    def setup_routes(self, app: web.Application) -> None:
        r = app.router
        if self.variant == "ch_v1":
            r.add_get("/info.json", self.h_legacy_info)
            r.add_get("/info", self.h_legacy_info)
            r.add_get("/index.html", self.h_index)
            r.add_get("/", self.h_index)
            # fw 2.68 has no /api/v1: its web server sends the browser to the UI page.
            r.add_route("*", "/api/v1/{tail:.*}", self.h_redirect_to_index)
        else:
            super().setup_routes(app)
            r.add_get("/api/v1/scan", self.h_scan)
            if self.metering:
                r.add_get("/api/v1/temperature", self.h_temperature)
                r.add_get("/temp", self.h_temperature)
        r.add_get("/report", self.h_report)
        r.add_get("/relay", self.h_relay)
        r.add_get("/toggle", self.h_toggle)
        r.add_get("/power_cycle", self.h_power_cycle)
        r.add_route("GET", "/timer", self.h_timer)
        r.add_route("POST", "/timer", self.h_timer)

    def uses_panel(self, path: str) -> bool:
        return self.variant != "ch_v1" and super().uses_panel(path)

    def is_state_changing(self, request: web.Request) -> bool:
        return request.path in ("/relay", "/toggle", "/power_cycle", "/timer")

    async def h_index(self, request: web.Request) -> web.Response:
        return web.Response(text="<!DOCTYPE html><html><head><title>myStrom WiFi Switch</title>"
                                 "</head><body><div id=\"app\"></div></body></html>",
                            content_type="text/html")

    async def h_redirect_to_index(self, request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "/index.html"},
                            text="<html><body><a href=\"/index.html\">index</a></body></html>",
                            content_type="text/html")

    async def h_report(self, request: web.Request) -> web.Response:
        return json_response(self.report())

    async def h_temperature(self, request: web.Request) -> web.Response:
        return json_response(self.temperature())

    async def h_scan(self, request: web.Request) -> web.Response:
        nearby = [self.ssid, -self.rng.randint(40, 60), f"{self.ssid}-IoT",
                  -self.rng.randint(40, 70), "Nachbar", -self.rng.randint(70, 88)]
        return json_response(nearby)

    async def h_relay(self, request: web.Request) -> web.Response:
        state = request.query.get("state")
        if state not in ("0", "1"):
            return bad_request()
        self.set_relay(state == "1")
        return empty_ok()

    async def h_toggle(self, request: web.Request) -> web.Response:
        self.flip()
        return json_response({"relay": self.relay})

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _later(self, seconds: float, state: bool) -> None:
        async def switch_back() -> None:
            await asyncio.sleep(seconds)
            self.set_relay(state)
            self._timer = None

        self._cancel_timer()
        self._timer = self.spawn(switch_back())

    async def h_power_cycle(self, request: web.Request) -> web.Response:
        try:
            seconds = int(request.query.get("time", ""))
        except ValueError:
            return bad_request()
        if not 0 <= seconds <= 3600 or not self.relay:
            # Power cycling needs the relay on: there is nothing to cycle otherwise.
            return bad_request()
        self.set_relay(False)
        self._later(seconds, True)
        return empty_ok()

    async def h_timer(self, request: web.Request) -> web.Response:
        params: dict[str, str] = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            params.update(decode_form(await request.text()))
        mode = params.get("mode")
        if mode == "none":
            self._cancel_timer()
            return empty_ok()
        try:
            seconds = int(params.get("time", ""))
        except ValueError:
            return bad_request()
        if mode not in ("on", "off", "toggle") or not 0 <= seconds <= 3600:
            return bad_request()
        if mode == "on":
            self.set_relay(True)
            self._later(seconds, False)
        elif mode == "off":
            self.set_relay(False)
            self._later(seconds, True)
        else:
            before = self.relay
            self.set_relay(not before)
            self._later(seconds, before)
        return empty_ok()


# --------------------------------------------------------------------------- bulb + strip
def parse_color(color: str) -> tuple[str, str] | None:
    """(mode, normalised colour) for "H;S;V", "CT;BRIGHTNESS" or "WWRRGGBB"; None if
    the firmware would not understand it (e.g. an encoded ``%3B``)."""
    if re.fullmatch(r"[0-9A-Fa-f]{8}", color):
        return "rgb", color.upper()
    parts = color.split(";")
    if not all(re.fullmatch(r"\d{1,3}", p) for p in parts):
        return None
    numbers = [int(p) for p in parts]
    if len(numbers) == 3:
        h, s, v = numbers
        if h <= 360 and s <= 100 and v <= 100:
            return "hsv", f"{h};{s};{v}"
    if len(numbers) == 2:
        ct, brightness = numbers
        if 1 <= ct <= 18 and brightness <= 100:
            return "mono", f"{ct};{brightness}"
    return None


def convert_color(color: str, src: str, dst: str) -> str:
    """Re-express a colour when only the mode changes."""
    if src == dst:
        return color
    if src == "hsv":
        h, s, v = (int(x) for x in color.split(";"))
        if dst == "mono":
            return f"9;{v}"
        r, g, b = colorsys.hsv_to_rgb(h / 360, s / 100, v / 100)
        return f"00{int(r * 255):02X}{int(g * 255):02X}{int(b * 255):02X}"
    if src == "rgb":
        w, r, g, b = (int(color[i : i + 2], 16) / 255 for i in range(0, 8, 2))
        h, s, v = colorsys.rgb_to_hsv(max(r, w), max(g, w), max(b, w))
        if dst == "mono":
            return f"9;{round(v * 100)}"
        return f"{round(h * 360)};{round(s * 100)};{round(v * 100)}"
    ct, brightness = (int(x) for x in color.split(";"))
    if dst == "hsv":
        return f"{30 if ct < 9 else 210};{abs(9 - ct) * 3};{brightness}"
    level = round(brightness * 2.55)
    return f"{level:02X}000000"


def brightness_of(color: str, mode: str) -> float:
    if mode == "hsv":
        return int(color.split(";")[2]) / 100
    if mode == "mono":
        return int(color.split(";")[1]) / 100
    return max(int(color[i : i + 2], 16) for i in range(0, 8, 2)) / 255


class MyStromBulb(MyStromDevice):
    """WiFi Bulb (type 102): /api/v1/device with form-encoded POSTs."""

    type_code = 102
    literal = "WRB"
    firmware = "2.59.34"
    label = "Bulb"
    reports_signal = True
    lamp_type = "rgblamp"
    nominal_w = 9.5
    standby_w = 0.45
    settings_schema = {"rest": (bool, None), "panel": (bool, None), "token": (str, 256)}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = {"panel": True, "rest": True}
        self.lamp = Appliance(self.rng, self.nominal_w, clock=self.clock, drift=0.0, noise=0.01)
        self.mode = "hsv"
        self.color = f"{self.rng.randrange(0, 360)};{self.rng.randrange(10, 100)};{self.rng.randrange(30, 100)}"
        self.ramp = 100
        self.notifyurl = ""
        self.notifier = ActionCaller(self, http_means="POST")
        self._notifying = 0
        self.lamp.switch(self.rng.random() < 0.5, brightness_of(self.color, self.mode))

    @property
    def on(self) -> bool:
        return self.lamp.on

    def summary(self) -> str:
        return f"{'on' if self.on else 'off'} {self.mode} {self.color}"

    def flip(self, channel: int = 0) -> None:
        """The wall switch was used (power cut and restored would look different)."""
        self._set(on=not self.on)

    def _set(self, *, on: bool | None = None, color: str | None = None,
             mode: str | None = None, ramp: int | None = None) -> None:
        before = (self.on, self.color, self.mode, self.ramp)
        if color is not None and mode is not None:
            self.color, self.mode = color, mode
        elif mode is not None:
            self.color, self.mode = convert_color(self.color, self.mode, mode), mode
        if ramp is not None:
            self.ramp = ramp
        self.lamp.switch(self.on if on is None else on, brightness_of(self.color, self.mode))
        if (self.on, self.color, self.mode, self.ramp) != before and self.notifyurl \
                and self._notifying < NOTIFY_PARALLEL:
            # The notification's format is undocumented; we post the device state. A slow
            # receiver does not pile up tasks: beyond a few in flight, changes go unsent.
            self._notifying += 1
            self.spawn(self._notify({self.mac: self.device_state()}))

    async def _notify(self, payload: dict[str, Any]) -> None:
        try:
            await self.notifier.post_json(self.notifyurl, payload)
        finally:
            self._notifying -= 1

    def power(self) -> float:
        watts = self.lamp.advance()
        return round(watts + self.standby_w if self.on else self.standby_w, 3)

    def device_state(self) -> dict[str, Any]:
        return {
            "type": self.lamp_type, "battery": False, "reachable": True, "meshroot": False,
            "on": self.on, "color": self.color, "mode": self.mode, "ramp": self.ramp,
            "power": self.power(), "fw_version": self.firmware,
            "connectionStatus": self.connection_status(),
        }

    def setup_routes(self, app: web.Application) -> None:
        super().setup_routes(app)
        r = app.router
        r.add_get("/api/v1/device", self.h_devices)
        r.add_get("/api/v1/device/{mac}", self.h_device)
        r.add_post("/api/v1/device/{mac}", self.h_device_post)

    def is_state_changing(self, request: web.Request) -> bool:
        return request.method == "POST" and request.path.startswith(("/api/v1/device", "/api/v1/effect"))

    async def h_device_post(self, request: web.Request) -> web.Response:
        if not self._mine(request):
            return not_found()
        # The firmware reads the body as a form whatever the Content-Type says
        # (python-mystrom sends "action=on&color=..." as text/plain).
        raw = await request.text()
        if raw.lstrip().startswith(("{", "[")):
            return bad_request()
        form = decode_form(raw)
        change: dict[str, Any] = {}
        action = form.get("action")
        if action is not None:
            if action not in ("on", "off", "toggle"):
                return bad_request()
            change["on"] = {"on": True, "off": False, "toggle": not self.on}[action]
        mode = form.get("mode")
        if mode is not None and mode not in ("hsv", "rgb", "mono"):
            return bad_request()
        if "color" in form:
            parsed = parse_color(form["color"])
            if parsed is None or (mode is not None and parsed[0] != mode):
                return bad_request()
            change["mode"], change["color"] = parsed
        elif mode is not None:
            change["mode"] = mode
        if "ramp" in form:
            if not re.fullmatch(r"\d{1,6}", form["ramp"]):
                return bad_request()
            change["ramp"] = int(form["ramp"])
        if "notifyurl" in form:
            self.notifyurl = form["notifyurl"][:ACTION_URL_MAX]
        self._set(**change)
        echo = {"on": self.on, "color": self.color, "mode": self.mode, "ramp": self.ramp,
                "notifyurl": self.notifyurl}
        return json_response({self.mac: echo})


class MyStromLedStrip(MyStromBulb):
    """WiFi LED Strip controller (type 105): the bulb API plus light effects."""

    type_code = 105
    literal = "WRS"
    firmware = "4.0.4"
    label = "LED Strip"
    reports_signal = False
    lamp_type = "strip"
    nominal_w = 24.0
    standby_w = 0.0
    settings_schema = {**MyStromDevice.settings_schema}
    hidden_settings = ("token",)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = {"rest": True, "panel": True, "name": self.name}
        self.mode, self.color = "mono", f"{self.rng.randint(1, 18)};{self.rng.randint(20, 100)}"
        self.lamp.switch(self.on, brightness_of(self.color, self.mode))
        self.effects: dict[int, list[dict[str, Any]]] = {}
        self.effect_running: int | None = None

    def device_state(self) -> dict[str, Any]:
        state = super().device_state()
        state["meshroot"] = True
        return state

    def setup_routes(self, app: web.Application) -> None:
        super().setup_routes(app)
        r = app.router
        r.add_post("/api/v1/effect/set/{n:\\d+}", self.h_effect_set)
        r.add_post("/api/v1/effect/start/{n:\\d+}", self.h_effect_start)
        r.add_post("/api/v1/effect/stop", self.h_effect_stop)

    async def h_effect_set(self, request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        try:
            steps = json.loads(await request.text())
        except ValueError:
            return bad_request()
        ok = (0 <= n < 10 and isinstance(steps, list) and 0 < len(steps) <= 32
              and all(isinstance(s, dict) and parse_color(str(s.get("color", ""))) for s in steps))
        if not ok:
            return bad_request()
        self.effects[n] = steps
        return empty_ok()

    async def h_effect_start(self, request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        if n not in self.effects:
            return bad_request()
        self.effect_running = n
        first = self.effects[n][0]
        mode, color = parse_color(str(first["color"]))  # type: ignore[misc]
        self._set(on=True, mode=mode, color=color)
        return empty_ok()

    async def h_effect_stop(self, request: web.Request) -> web.Response:
        self.effect_running = None
        return empty_ok()


# --------------------------------------------------------------------------- PIR
PIR_ACTIONS = ("generic", "night", "twilight", "day", "rise", "fall")
PIR_CODES = {"rise": 8, "fall": 9, "night": 14, "twilight": 15, "day": 16}


class MyStromPir(MyStromDevice):
    """WiFi Motion Sensor (type 110): sensors to poll and action URLs it really calls."""

    type_code = 110
    action_url_max = PIR_ACTION_URL_MAX
    literal = "WMS"
    firmware = "3.84.12"
    label = "Motion Sensor"
    reports_signal = True
    settings_schema = {
        **MyStromDevice.settings_schema,
        "hap_disable": (bool, None), "temp_offset": (float, (-30.0, 30.0)),
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings.update(hap_disable=False, temp_offset=0)
        self.motion_detected = False
        self.light = self.rng.randint(20, 400)
        self.room_temp = round(self.rng.uniform(19.0, 23.0), 2)
        self.pir_settings: dict[str, Any] = {"backoff_time": 10, "led_enable": True}
        self.thresholds = {"night": 30, "day": 300}
        self.actions = {name: "" for name in PIR_ACTIONS}
        self.caller = ActionCaller(self, http_means="POST")

    def summary(self) -> str:
        return f"motion {'yes' if self.motion_detected else 'no'}, light {self.light}"

    def band(self) -> str:
        if self.light < self.thresholds["night"]:
            return "night"
        if self.light > self.thresholds["day"]:
            return "day"
        return "twilight"

    def flip(self, channel: int = 0) -> asyncio.Task:
        """Someone walks in (or the back-off ran out)."""
        return self.spawn(self.motion(not self.motion_detected))

    async def motion(self, detected: bool) -> list[Callback]:
        """Simulate motion starting (rise + night/twilight/day) or ending (fall; call it
        when the device's back-off would have run out). Returns the calls made."""
        if detected == self.motion_detected:
            return []
        self.motion_detected = detected
        events = ["rise", self.band()] if detected else ["fall"]
        calls: list[Callback] = []
        for event in events:
            if self.actions[event]:
                calls += await self.caller.fire(self.actions[event])
            if self.actions["generic"]:
                params = {"mac": self.mac, "action": str(PIR_CODES[event]), "value": str(self.light)}
                calls += await self.caller.fire(self.actions["generic"], params)
        return calls

    def temperature(self) -> dict[str, float]:
        compensation = 6.5
        offset = self.settings.get("temp_offset", 0)
        measured = round(self.room_temp + compensation + 0.2 * self.rng.uniform(-1, 1), 2)
        return {"measured": measured, "compensation": compensation,
                "compensated": round(measured - compensation + offset, 2), "offset": offset}

    def setup_routes(self, app: web.Application) -> None:
        super().setup_routes(app)
        r = app.router
        r.add_get("/api/v1/sensors", self.h_sensors)
        r.add_get("/api/v1/motion", self.h_motion)
        r.add_get("/api/v1/light", self.h_light)
        r.add_get("/api/v1/temperature", self.h_temperature)
        r.add_get("/temp", self.h_temperature)
        r.add_get("/api/v1/settings/pir", self.h_pir_settings)
        r.add_post("/api/v1/settings/pir", self.h_pir_settings_post)
        r.add_get("/api/v1/settings/pir/thresholds", self.h_thresholds)
        r.add_post("/api/v1/settings/pir/thresholds", self.h_thresholds_post)
        r.add_get("/api/v1/action", self.h_actions)
        r.add_get("/api/v1/action/pir/{kind}", self.h_action)
        r.add_post("/api/v1/action/pir/{kind}", self.h_action_post)

    def uses_panel(self, path: str) -> bool:
        return path in ("/api/v1/settings",) or path.startswith("/api/v1/protection")

    async def h_sensors(self, request: web.Request) -> web.Response:
        return json_response({"motion": self.motion_detected, "light": self.light,
                              "temperature": self.temperature()["compensated"]})

    async def h_motion(self, request: web.Request) -> web.Response:
        return json_response({"success": True, "motion": self.motion_detected})

    async def h_light(self, request: web.Request) -> web.Response:
        return json_response({"success": True, "intensity": self.light,
                              "day": self.light > self.thresholds["day"],
                              "raw": {"adc0": self.light, "adc1": max(1, self.light // 9)}})

    async def h_temperature(self, request: web.Request) -> web.Response:
        return json_response(self.temperature())

    async def h_pir_settings(self, request: web.Request) -> web.Response:
        return json_response(self.pir_settings)

    async def _json_body(self, request: web.Request) -> dict[str, Any] | None:
        # The PIR ignores Content-Type and reads JSON.
        try:
            body = json.loads(await request.text())
        except (ValueError, UnicodeDecodeError):
            return None
        return body if isinstance(body, dict) else None

    async def h_pir_settings_post(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        if body is None:
            return bad_request()
        for key, value in body.items():
            if key == "backoff_time" and isinstance(value, int) and not isinstance(value, bool) \
                    and 1 <= value <= 84600:
                continue
            if key == "led_enable" and isinstance(value, bool):
                continue
            return bad_request()
        self.pir_settings.update(body)
        return json_response(self.pir_settings)

    async def h_thresholds(self, request: web.Request) -> web.Response:
        return json_response(self.thresholds)

    async def h_thresholds_post(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        if body is None or not all(
            k in ("night", "day") and isinstance(v, int) and not isinstance(v, bool)
            and 0 <= v <= 65535 for k, v in body.items()
        ):
            return bad_request()
        self.thresholds.update(body)
        return json_response(self.thresholds)

    async def h_actions(self, request: web.Request) -> web.Response:
        return json_response({"pir": dict(self.actions)})



# --------------------------------------------------------------------------- buttons
BUTTON_ACTIONS = ("single", "double", "long", "touch", "generic")
BUTTON_CODES = {"single": 1, "double": 2, "long": 3, "touch": 4, "wheel": 5, "battery": 6,
                "wheel_final": 11}
KEEP_AWAKE = 600.0


class MyStromButton(MyStromDevice):
    """WiFi Button (104) or Button+ 1st gen (103, touch wheel). Asleep it refuses
    connections (like a button that is simply not on the network); ``wake()`` keeps
    it reachable for a while, ``press()`` calls its action URLs either way."""

    firmware = "2.74.38"
    reports_signal = True
    strict_referer = True
    settings_schema = {**MyStromDevice.settings_schema}
    hidden_settings = ()

    def __init__(self, plus: bool = False, *, awake: bool = False, battery: int | None = None,
                 **kwargs: Any) -> None:
        self.plus = plus
        self.type_code = 103 if plus else 104
        self.literal = "WBP" if plus else "WBS"
        self.label = "Button+" if plus else "Button"
        super().__init__(**kwargs)
        self.awake_at_start = awake
        self.battery = battery if battery is not None else self.rng.randint(35, 100)
        self.charging = False
        self.actions = {name: "" for name in BUTTON_ACTIONS}
        # http:// in a button action is a plain GET
        self.caller = ActionCaller(self, http_means="GET")
        self._first_start = True

    def summary(self) -> str:
        return f"battery {self.battery}%"

    @property
    def voltage(self) -> float:
        return round(3.3 + 1.4 * self.battery / 100, 3)

    def settings_view(self) -> dict[str, Any]:
        # The button firmware says whether a token is set, never which.
        view = dict(self.settings)
        view["token"] = bool(self.token)
        return view

    # ------------------------------------------------------------ sleep
    async def start(self) -> None:
        await super().start()
        # start() also runs on power_on/move_to; only the very first boot decides.
        if self._first_start:
            self._first_start = False
            if not self.awake_at_start:
                await self.power_off()

    @property
    def awake(self) -> bool:
        return self._site is not None

    async def wake(self, seconds: float = KEEP_AWAKE) -> None:
        """Service mode / USB power: answer HTTP (and announce) for `seconds`."""
        await self.power_on()
        self._arm_sleep(seconds)


    # ------------------------------------------------------------ presses
    def press(self, channel: int = 0, kind: str = "single", wheel: int = 0) -> asyncio.Task:
        """Press the button; returns the task making the calls (await it for the list)."""
        if kind not in BUTTON_CODES or kind == "battery":
            raise ValueError(f"unknown button press {kind!r}")
        if kind in ("touch", "wheel", "wheel_final") and not self.plus:
            raise ValueError("only the Button+ has a touch wheel")
        return self.spawn(self._press(kind, wheel))

    def flip(self, channel: int = 0) -> asyncio.Task:
        return self.press(channel, "single")

    async def _press(self, kind: str, wheel: int) -> list[Callback]:
        calls: list[Callback] = []
        specific = "touch" if kind in ("wheel", "wheel_final") else kind
        extra = {"wheel": str(max(-127, min(127, wheel)))} if kind in ("wheel", "wheel_final") else None
        if self.actions.get(specific):
            calls += await self.caller.fire(self.actions[specific], extra)
        if self.actions["generic"]:
            params = {"mac": self.mac, "action": str(BUTTON_CODES[kind])}
            if extra:
                params.update(extra)
            params["battery"] = str(self.battery)
            calls += await self.caller.fire(self.actions["generic"], params)
        return calls

    # ------------------------------------------------------------ routes
    def device_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "type": "wheel" if self.plus else "button", "battery": True, "reachable": True,
            "meshroot": False, "charge": self.charging, "voltage": self.voltage,
            "fw_version": self.firmware,
        }
        state.update(self.actions)
        state["connectionStatus"] = self.connection_status()
        state["name"] = self.settings.get("name", "")
        return state

    def setup_routes(self, app: web.Application) -> None:
        super().setup_routes(app)
        r = app.router
        r.add_get("/api/v1/device", self.h_devices)
        r.add_get("/api/v1/device/{mac}", self.h_device)
        r.add_post("/api/v1/device/{mac}", self.h_device_post)
        r.add_get("/api/v1/action", self.h_actions)
        r.add_get("/api/v1/action/{kind}", self.h_action)
        r.add_post("/api/v1/action/{kind}", self.h_action_post)
        r.add_post("/api/v1/keep", self.h_keep)
        r.add_post("/api/v1/sleep", self.h_sleep)
        r.add_get("/api/v1/name", self.h_name)
        r.add_post("/api/v1/name", self.h_name_post)

    def uses_panel(self, path: str) -> bool:
        return path.startswith(("/api/v1/settings", "/api/v1/protection"))

    async def h_device_post(self, request: web.Request) -> web.Response:
        if not self._mine(request):
            return not_found()
        # Here the values are properly form-encoded (a URL's & and = arrive as %26 / %3D).
        from urllib.parse import parse_qsl

        form = dict(parse_qsl(await request.text(), keep_blank_values=True))
        wanted = {k: v for k, v in form.items() if k in BUTTON_ACTIONS}
        if not wanted or any(len(v) > ACTION_URL_MAX for v in wanted.values()):
            return bad_request()
        self.actions.update(wanted)
        return json_response({self.mac: dict(self.actions)})

    async def h_actions(self, request: web.Request) -> web.Response:
        return json_response(dict(self.actions))


    async def h_keep(self, request: web.Request) -> web.Response:
        self._arm_sleep(KEEP_AWAKE)
        return empty_ok()

    async def h_sleep(self, request: web.Request) -> web.Response:
        # Answer first, then drop off the network.
        async def later() -> None:
            await asyncio.sleep(0.05)
            await self.sleep()

        self.spawn(later())
        return empty_ok()

    async def h_name(self, request: web.Request) -> web.Response:
        return web.Response(text=self.settings.get("name", ""))

    async def h_name_post(self, request: web.Request) -> web.Response:
        name = (await request.text()).strip()
        if len(name) > 32:
            return bad_request()
        self.settings["name"] = self.name = name
        return empty_ok()
