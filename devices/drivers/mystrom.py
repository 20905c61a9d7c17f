"""myStrom local REST API: switches, bulbs, LED strips, buttons, motion sensors.

Protocol facts (see ../shared/reference/mystrom.md): plain HTTP on port 80, JSON replies,
an optional ``Token`` header, and a firmware "CORS protection" that answers 404 to any
request carrying ``Accept-Encoding`` (which we therefore never send). A 404 is ambiguous -
missing/wrong token, REST disabled, CORS refusal or an endpoint this firmware lacks - so
``MyStrom`` explains each 404 with one cheap follow-up probe before raising.

The pure ``parse_*`` functions take decoded JSON of any shape and return typed values or
raise ProtocolError; the ``MyStrom`` class adds transport, one-request-at-a-time and the
404 diagnosis.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import httpx

from . import http
from .errors import (
    AuthRequired,
    BadToken,
    CorsRefused,
    DeviceError,
    ProtocolError,
    Unsupported,
)
from .gate import DeviceGate, gate_for
from .types import (
    ChannelState,
    DeviceInfo,
    as_bool,
    as_dict,
    as_float,
    as_int,
    as_str,
    clamp_pct,
    normalise_mac,
)

# Longest a relay timer / power cycle may run, per the vendor doc.
MAX_TIMER_S = 3600
# Action URLs are stored in a 767-character field on the device.
MAX_ACTION_URL = 767

# numeric type -> (literal code, name, kind hint)
MYSTROM_TYPES: dict[int, tuple[str, str, str]] = {
    101: ("WSW", "WiFi Switch CH v1", "switch"),
    102: ("WRB", "WiFi Bulb", "bulb"),
    103: ("WBP", "WiFi Button+", "button"),
    104: ("WBS", "WiFi Button", "button"),
    105: ("WRS", "WiFi LED Strip", "strip"),
    106: ("WS2", "WiFi Switch CH v2", "switch"),
    107: ("WSE", "WiFi Switch EU", "switch"),
    108: ("DINGZ", "dingz", "generic"),
    110: ("WMS", "WiFi Motion Sensor", "pir"),
    112: ("GW", "myStrom Gateway", "generic"),
    113: ("WLL", "modulo STECCO / CUBO", "generic"),
    114: ("SCS", "Swisscom Smart Switch", "switch"),
    118: ("BP2", "WiFi Button Plus (2nd gen)", "button_plus"),
    120: ("LCS", "WiFi Switch Zero", "switch"),
    122: ("WSX", "WiFi Switch Ex", "switch"),
}
# literal code -> numeric type (None: a code with no known number, e.g. Button Max)
MYSTROM_CODES: dict[str, int | None] = {code: num for num, (code, _, _) in MYSTROM_TYPES.items()}
MYSTROM_CODES.update({"WSEU": 107, "BM1": None})
_CODE_ONLY: dict[str, tuple[str, str]] = {"BM1": ("WiFi Button Max", "button")}

SWITCH_TYPES = frozenset({101, 106, 107, 114, 120, 122})
LIGHT_TYPES = frozenset({102, 105})

# Where a 404 is explained: both answer on every firmware when the token (if any) is right.
_PROBE_PATHS = ("/api/v1/info", "/info.json")
_ACTION_NAME = re.compile(r"^[a-z0-9_]{1,16}(/[a-z0-9_]{1,16})?$")


# ----------------------------------------------------------------------------- parsing


def parse_mystrom_type(value: Any) -> tuple[int | None, str | None]:
    """``type`` arrives as int (106), numeric string ("106"), literal code ("WS2", "BM1")
    or not at all. Returns (numeric type, literal code), either may be None."""
    if isinstance(value, bool):
        return None, None
    num = as_int(value) if isinstance(value, (int, float)) else None
    if isinstance(value, str):
        v = value.strip()
        if v.isdigit() and len(v) <= 6:
            num = int(v)
        elif v:
            code = v.upper()[:16]
            return MYSTROM_CODES.get(code), code
    if num is None:
        return None, None
    known = MYSTROM_TYPES.get(num)
    return num, (known[0] if known else None)


def parse_mystrom_info(data: Any, *, legacy: bool = False) -> DeviceInfo:
    """``/api/v1/info`` (or legacy ``/info.json``) -> DeviceInfo.

    A missing type is the Switch CH v1 (the only firmware without one); an unknown type is
    a generic device, never an error.
    """
    if not isinstance(data, dict):
        raise ProtocolError("myStrom info is not a JSON object")
    num, code = parse_mystrom_type(data.get("type"))
    if num is None and code is None:
        num, code = 101, "WSW"  # Switch v1 has no type field (HA core #95929)
    if num is not None and num in MYSTROM_TYPES:
        _, model_name, kind = MYSTROM_TYPES[num]
    elif code in _CODE_ONLY:
        model_name, kind = _CODE_ONLY[code]  # type: ignore[index]
    else:
        model_name, kind = f"myStrom device ({code or num})", "generic"
    return DeviceInfo(
        vendor="mystrom",
        mac=normalise_mac(data.get("mac")),
        generation=0,
        model=code or str(num),
        model_name=model_name,
        firmware=as_str(data.get("version"), 64) or "",
        name=as_str(data.get("name")) or None,
        auth_enabled=False,  # the token is not visible in info; 404s tell us instead
        type_code=num,
        kind=kind,
        sleeping=kind in ("button", "button_plus"),
        raw=data,
    )


class MyStromEnergy:
    """Lifetime energy of a switch from ``energy_since_boot`` (Ws) and ``boot_id``.

    The vendor's rule: when ``boot_id`` changes, the total so far becomes the new base;
    the total is base + energy since boot. State is three numbers, so the runtime can
    persist it (``state()`` / ``MyStromEnergy(**state)``) and keep the total across
    homedash restarts as well as device reboots.
    """

    __slots__ = ("boot_id", "begin_ws", "total_ws", "last_since_boot_ws")

    def __init__(
        self,
        boot_id: str | None = None,
        begin_ws: float = 0.0,
        total_ws: float = 0.0,
        last_since_boot_ws: float = 0.0,
    ) -> None:
        self.boot_id = boot_id
        self.begin_ws = begin_ws
        self.total_ws = total_ws
        self.last_since_boot_ws = last_since_boot_ws

    def update(self, boot_id: Any, energy_since_boot: Any) -> float | None:
        """Feed one ``/report``; returns the lifetime total in Wh (None if the firmware
        has no boot_id/energy_since_boot, i.e. before 4.x)."""
        esb = as_float(energy_since_boot)
        bid = as_str(boot_id, 64)
        if esb is None or bid is None or esb < 0:
            return None
        if bid != self.boot_id or esb < self.last_since_boot_ws:
            # New boot - or a counter that went backwards under the same id, which can
            # only be a reset we were not told about; either way start a new segment.
            self.begin_ws = self.total_ws
            self.boot_id = bid
        self.last_since_boot_ws = esb
        self.total_ws = self.begin_ws + esb
        return self.total_ws / 3600.0

    @property
    def total_wh(self) -> float:
        return self.total_ws / 3600.0

    def state(self) -> dict[str, Any]:
        return {
            "boot_id": self.boot_id,
            "begin_ws": self.begin_ws,
            "total_ws": self.total_ws,
            "last_since_boot_ws": self.last_since_boot_ws,
        }


def parse_switch_report(data: Any, energy: MyStromEnergy | None = None) -> ChannelState:
    """``/report`` -> the relay channel. Switch Zero has no power/temperature, v1 has no
    temperature, only fw 4.x has boot_id/energy_since_boot. ``Ws`` is deliberately ignored:
    it is an average since the previous caller's poll, not a counter."""
    if not isinstance(data, dict):
        raise ProtocolError("myStrom report is not a JSON object")
    energy_wh = None
    if energy is not None:
        energy_wh = energy.update(data.get("boot_id"), data.get("energy_since_boot"))
    elif "energy_since_boot" in data:
        esb = as_float(data.get("energy_since_boot"))
        energy_wh = esb / 3600.0 if esb is not None and esb >= 0 else None
    return ChannelState(
        key="relay",
        kind="switch",
        on=as_bool(data.get("relay")),
        power_w=as_float(data.get("power")),
        energy_wh=energy_wh,
        temperature_c=as_float(data.get("temperature")),
    )


@dataclass(slots=True, frozen=True)
class MyStromTemperature:
    measured: float | None
    compensation: float | None
    compensated: float | None
    offset: float | None


def parse_temperature(data: Any) -> MyStromTemperature:
    if not isinstance(data, dict):
        raise ProtocolError("myStrom temperature is not a JSON object")
    return MyStromTemperature(
        measured=as_float(data.get("measured")),
        compensation=as_float(data.get("compensation")),
        compensated=as_float(data.get("compensated")),
        offset=as_float(data.get("offset")),
    )


def parse_colour(color: Any, mode: Any) -> tuple[tuple[float, ...] | None, str | None, float | None]:
    """Bulb/strip colour string -> (colour tuple, colour mode, brightness %).

    ``hsv``: "H;S;V" (V is the brightness); ``mono``: "CT;BRIGHTNESS" (CT is a 1..18
    index, not kelvin); ``rgb``: "WWRRGGBB" hex with the white channel first.
    """
    text = as_str(color, 64)
    mode_s = as_str(mode, 16)
    if text is None:
        return None, mode_s, None
    text = text.strip()
    if ";" in text:
        parts = [as_float(p) for p in text.split(";")]
        if any(p is None for p in parts):
            return None, mode_s, None
        nums = tuple(float(p) for p in parts)  # type: ignore[arg-type]
        if len(nums) == 3 and mode_s in (None, "hsv"):
            return nums, "hsv", clamp_pct(nums[2])
        if len(nums) == 2:
            return nums, "mono", clamp_pct(nums[1])
        return None, mode_s, None
    if len(text) == 8 and all(c in "0123456789abcdefABCDEF" for c in text):
        w, r, g, b = (int(text[i : i + 2], 16) for i in (0, 2, 4, 6))
        level = max(w, r, g, b) / 255.0 * 100.0
        return (float(r), float(g), float(b), float(w)), "rgbw", round(level, 1)
    if len(text) == 6 and all(c in "0123456789abcdefABCDEF" for c in text):
        r, g, b = (int(text[i : i + 2], 16) for i in (0, 2, 4))
        return (float(r), float(g), float(b)), "rgb", round(max(r, g, b) / 255.0 * 100.0, 1)
    return None, mode_s, None


def _device_entry(data: Any, mac: str | None) -> tuple[str | None, dict[str, Any]]:
    """``/api/v1/device`` is keyed by MAC; pick ours, else the only/first object."""
    if not isinstance(data, dict):
        raise ProtocolError("myStrom device reply is not a JSON object")
    if mac and isinstance(data.get(mac), dict):
        return mac, data[mac]
    for key, value in data.items():
        if isinstance(value, dict):
            return normalise_mac(key), value
    # Some firmware might answer with the bare object; accept it if it looks like one.
    if "on" in data or "type" in data:
        return None, data
    raise ProtocolError("myStrom device reply has no device entry")


def parse_light_device(data: Any, mac: str | None = None) -> ChannelState:
    """Bulb / LED strip ``/api/v1/device`` (or the POST echo) -> the light channel."""
    _, entry = _device_entry(data, mac)
    colour, colour_mode, brightness = parse_colour(entry.get("color"), entry.get("mode"))
    return ChannelState(
        key="light",
        kind="light",
        on=as_bool(entry.get("on")),
        power_w=as_float(entry.get("power")),
        brightness_pct=brightness,
        colour=colour,
        colour_mode=colour_mode,
    )


def light_ramp_ms(data: Any, mac: str | None = None) -> int | None:
    _, entry = _device_entry(data, mac)
    return as_int(entry.get("ramp"))


_BUTTON_ACTIONS = ("single", "double", "long", "touch", "generic")


def parse_button_device(data: Any, mac: str | None = None) -> tuple[ChannelState, dict[str, str]]:
    """Button / Button+ ``/api/v1/device`` -> (battery channel, configured action URLs)."""
    _, entry = _device_entry(data, mac)
    state = ChannelState(
        key="button",
        kind="button",
        battery_v=as_float(entry.get("voltage")),
        external_power=as_bool(entry.get("charge")),
    )
    actions = {name: url for name in _BUTTON_ACTIONS if (url := as_str(entry.get(name), MAX_ACTION_URL + 64)) is not None}
    return state, actions


def parse_actions(data: Any) -> dict[str, str]:
    """Action listings -> flat ``{"single": url}`` / ``{"pir/rise": url}`` /
    ``{"btn1/single": url}``. Accepts ``{"url": ...}`` single-action replies as ``{"": url}``."""
    if not isinstance(data, dict):
        raise ProtocolError("myStrom action reply is not a JSON object")
    out: dict[str, str] = {}
    for key, value in list(data.items())[:64]:
        if not isinstance(key, str):
            continue
        if isinstance(value, dict):
            for sub, url in list(value.items())[:32]:
                s = as_str(url, MAX_ACTION_URL + 64)
                if isinstance(sub, str) and s is not None:
                    out[f"{key[:16]}/{sub[:16]}"] = s
        else:
            s = as_str(value, MAX_ACTION_URL + 64)
            if s is not None:
                out["" if key == "url" else key[:32]] = s
    return out


def parse_sensors(data: Any) -> list[ChannelState]:
    """``/api/v1/sensors`` of the motion sensor (motion, light, temperature) or of the
    Button Plus 2nd gen (temperature, humidity, battery, charger)."""
    if not isinstance(data, dict):
        raise ProtocolError("myStrom sensors reply is not a JSON object")
    channels: list[ChannelState] = []
    if "motion" in data:
        channels.append(ChannelState(key="motion", kind="sensor", motion=as_bool(data.get("motion"))))
    if "light" in data:
        # The PIR reports a raw 0..65535 brightness level, which is the closest thing it
        # has to illuminance; it is absent while the LED is lit.
        channels.append(ChannelState(key="light", kind="sensor", illuminance_lux=as_float(data.get("light"))))
    if "temperature" in data or "humidity" in data:
        channels.append(
            ChannelState(
                key="temperature",
                kind="sensor",
                temperature_c=as_float(data.get("temperature")),
                humidity_pct=clamp_pct(data.get("humidity")),
            )
        )
    if "battery" in data or "charger" in data:
        battery = as_dict(data.get("battery"))
        charger = as_dict(data.get("charger"))
        channels.append(
            ChannelState(
                key="battery",
                kind="sensor",
                battery_v=as_float(battery.get("voltage")),
                external_power=as_bool(charger.get("connected")),
            )
        )
    return channels


# ----------------------------------------------------------------------------- client


def _hsv_text(h: float, s: float, v: float) -> str:
    for name, value, top in (("hue", h, 360), ("saturation", s, 100), ("value", v, 100)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or not 0 <= value <= top:
            raise ValueError(f"{name} must be within 0..{top}")
    return f"{round(h)};{round(s)};{round(v)}"


def _byte(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 255:
        raise ValueError(f"{name} must be an int within 0..255")
    return value


class MyStrom:
    """One myStrom device. Requests are serialised (tiny ESP8266 servers), the token is
    sent when configured, ``Accept-Encoding`` never is.

    The caller owns ``client`` (see ``http.make_client``). ``energy`` keeps the lifetime
    energy state of a switch between polls.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        host: str,
        port: int = 80,
        *,
        token: str | None = None,
        mac: str | None = None,
        send_referer: bool = False,
        energy: MyStromEnergy | None = None,
        gate: DeviceGate | None = None,
    ) -> None:
        self.client = client
        self.host = host
        self.port = port
        self.token = token or None
        self.mac = normalise_mac(mac)
        self.send_referer = send_referer
        self.energy = energy if energy is not None else MyStromEnergy()
        self.base = http.base_url(host, port)
        # The device's one turn, shared with every other driver of it in this process
        # (discovery, runtime, views): see gate.py.
        self.gate = gate if gate is not None else gate_for(mac=self.mac, host=host, port=port)

    # ------------------------------------------------------------- transport
    def _headers(self, *, token: bool = True, content_type: str | None = None) -> dict[str, str]:
        headers: dict[str, str] = {}
        if token and self.token:
            headers["Token"] = self.token
        if self.send_referer:
            # Allowed by the CORS rule when it names the device itself; pointless without
            # Accept-Encoding, but harmless and some integrators like to send it.
            headers["Referer"] = self.base + "/"
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        content: str | bytes | None = None,
        content_type: str | None = None,
        allow: tuple[int, ...] = (),
    ) -> http.HttpReply:
        reply = await http.request(
            self.client,
            method,
            self.base + path,
            host=self.host,
            headers=self._headers(content_type=content_type),
            params=params,
            content=content,
        )
        status = reply.status
        if status in allow or 200 <= status < 300:
            return reply
        if status == 404:
            raise await self._explain_404(reply, path)
        if 300 <= status < 400:
            # Switch v1 redirects unknown API paths to its web UI.
            raise Unsupported(f"{path} redirects (HTTP {status}): not on this firmware", host=self.host)
        if status in (401, 403):
            if self.token:
                raise BadToken(f"HTTP {status} with token", host=self.host)
            raise AuthRequired(f"HTTP {status}", host=self.host)
        if status == 400:
            raise ProtocolError(f"device rejected {method} {path} (HTTP 400)", status=status, host=self.host)
        raise ProtocolError(f"HTTP {status} on {path}", status=status, host=self.host)

    async def _probe(self, *, with_token: bool) -> bool:
        """Does an info endpoint answer with these credentials? (No Accept-Encoding either
        way, so the CORS rule cannot be what refuses it.)"""
        for path in _PROBE_PATHS:
            reply = await http.request(
                self.client, "GET", self.base + path, host=self.host, headers=self._headers(token=with_token)
            )
            if reply.status == 200 or reply.is_redirect:
                return True
            if reply.status != 404:
                return False
        return False

    async def _explain_404(self, reply: http.HttpReply, path: str) -> DeviceError:
        sent = reply.request_headers
        if "accept-encoding" in sent:
            return CorsRefused(f"{path}: refused by the device's CORS protection", host=self.host)
        referer = sent.get("referer")
        if referer is not None and not referer.startswith(self.base):
            return CorsRefused(f"{path}: refused because of the Referer header", host=self.host)
        if path not in _PROBE_PATHS and await self._probe(with_token=True):
            # Our credentials work elsewhere, so this firmware simply lacks the path.
            return Unsupported(f"{path} is not available on this device/firmware", host=self.host)
        if self.token:
            if await self._probe(with_token=False):
                return BadToken("the device does not accept the configured token", host=self.host)
            return BadToken("token rejected (or the device's REST API is disabled)", host=self.host)
        return AuthRequired("the device answers 404: it needs a token (or its REST API is disabled)", host=self.host)

    async def _json(self, method: str, path: str, **kw: Any) -> Any:
        reply = await self._send(method, path, **kw)
        try:
            return reply.json()
        except ProtocolError as exc:
            raise ProtocolError(f"{path}: {exc.message}", status=reply.status, host=self.host) from exc

    # ------------------------------------------------------------- common
    async def info(self) -> DeviceInfo:
        """``/api/v1/info``, falling back to ``/info.json`` when the answer is not a JSON
        object (Switch v1 redirects to HTML)."""
        async with self.gate:
            first = await self._send("GET", "/api/v1/info", allow=(301, 302, 303, 307, 308, 404))
            if first.status == 200:
                try:
                    data = first.json()
                except ProtocolError:
                    data = None
                if isinstance(data, dict):
                    info = self._parsed(parse_mystrom_info, data)
                    self.mac = self.mac or info.mac
                    return info
            legacy = await self._send("GET", "/info.json", allow=(301, 302, 303, 307, 308, 404))
            if legacy.status == 200:
                info = self._parsed(lambda: parse_mystrom_info(legacy.json(), legacy=True))
                self.mac = self.mac or info.mac
                return info
            if first.status == 404:
                raise await self._explain_404(first, "/api/v1/info")
            # Something answers, but not like a myStrom device does.
            raise ProtocolError("neither /api/v1/info nor /info.json gave device info", host=self.host)

    def _parsed(self, parser, *args: Any, **kw: Any):  # noqa: ANN001 - tiny adaptor
        try:
            return parser(*args, **kw)
        except ProtocolError as exc:
            raise ProtocolError(exc.message, status=exc.status, host=self.host) from exc

    async def settings(self) -> dict[str, Any]:
        async with self.gate:
            data = await self._json("GET", "/api/v1/settings")
        if not isinstance(data, dict):
            raise ProtocolError("settings reply is not a JSON object", host=self.host)
        return data

    async def set_settings(self, **patch: Any) -> dict[str, Any]:
        """POST a partial settings object (``name=``, ``token=``, ``temp_offset=`` ...)."""
        async with self.gate:
            reply = await self._send(
                "POST", "/api/v1/settings", content=json.dumps(patch), content_type="application/json"
            )
        try:
            data = reply.json() if reply.body.strip() else {}
        except ProtocolError:
            data = {}
        if "token" in patch:
            # From now on the device expects the new token (empty string = none).
            self.token = patch["token"] or None
        return data if isinstance(data, dict) else {}

    async def set_protection(self, enabled: bool) -> None:
        """Switch the CORS protection on or off (it does not affect us; it affects
        browsers and clients that send Accept-Encoding)."""
        path = "/api/v1/protection/enable" if enabled else "/api/v1/protection/disable"
        async with self.gate:
            await self._send("POST", path)

    # ------------------------------------------------------------- switch
    async def report(self) -> ChannelState:
        async with self.gate:
            return await self._report()

    async def _report(self) -> ChannelState:
        data = await self._json("GET", "/report")
        return self._parsed(parse_switch_report, data, self.energy)

    async def set_relay(self, on: bool) -> ChannelState:
        """``/relay?state=`` answers with an empty body, so the state is re-read."""
        async with self.gate:
            await self._send("GET", "/relay", params={"state": "1" if on else "0"})
            return await self._report()

    async def toggle(self) -> ChannelState:
        async with self.gate:
            data = await self._json("GET", "/toggle")
            new = as_bool(as_dict(data).get("relay"))
            state = await self._report()
        if state.on is None:
            state.on = new
        return state

    async def power_cycle(self, seconds: int) -> None:
        """Off, wait, on. The relay must be on (the device refuses otherwise)."""
        if not isinstance(seconds, int) or not 1 <= seconds <= MAX_TIMER_S:
            raise ValueError(f"seconds must be 1..{MAX_TIMER_S}")
        async with self.gate:
            await self._send("GET", "/power_cycle", params={"time": str(seconds)})

    async def timer(self, mode: str, seconds: int) -> None:
        """``mode``: on (on, later off), off (off, later on), toggle, none (cancel)."""
        if mode not in ("on", "off", "toggle", "none"):
            raise ValueError("mode must be on, off, toggle or none")
        if not isinstance(seconds, int) or not 0 <= seconds <= MAX_TIMER_S:
            raise ValueError(f"seconds must be 0..{MAX_TIMER_S}")
        async with self.gate:
            await self._send(
                "POST",
                "/timer",
                content=f"mode={mode}&time={seconds}",
                content_type="application/x-www-form-urlencoded",
            )

    async def temperature(self) -> MyStromTemperature:
        """``/api/v1/temperature``, or the old ``/temp`` on firmware without it."""
        async with self.gate:
            try:
                data = await self._json("GET", "/api/v1/temperature")
            except Unsupported:
                data = await self._json("GET", "/temp")
        return self._parsed(parse_temperature, data)

    # ------------------------------------------------------------- bulb / strip
    async def _device_mac(self) -> str:
        if self.mac:
            return self.mac
        data = await self._json("GET", "/api/v1/device")
        mac, _ = _device_entry(data, None)
        if mac is None:
            raise ProtocolError("device did not tell its MAC", host=self.host)
        self.mac = mac
        return mac

    async def light_state(self) -> ChannelState:
        async with self.gate:
            data = await self._json("GET", "/api/v1/device")
        return self._parsed(parse_light_device, data, self.mac)

    async def set_light(
        self,
        *,
        action: str | None = None,
        hsv: tuple[float, float, float] | None = None,
        rgbw: tuple[int, int, int, int] | None = None,
        mono: tuple[int, int] | None = None,
        ramp_ms: int | None = None,
    ) -> ChannelState:
        """One POST with any combination of on/off/toggle, a colour and a ramp.

        The body is built by hand: the firmware does not decode ``%3B``, so the ``;`` of
        an HSV/mono colour must go out literally. Returns the state the device echoes
        (which carries no power reading).
        """
        parts: list[str] = []
        if action is not None:
            if action not in ("on", "off", "toggle"):
                raise ValueError("action must be on, off or toggle")
            parts.append(f"action={action}")
        colours = [c for c in (hsv, rgbw, mono) if c is not None]
        if len(colours) > 1:
            raise ValueError("give one of hsv, rgbw, mono")
        if hsv is not None:
            parts += ["mode=hsv", "color=" + _hsv_text(*hsv)]
        elif rgbw is not None:
            r, g, b, w = (_byte(n, v) for n, v in zip("rgbw", rgbw))
            parts += ["mode=rgb", f"color={w:02X}{r:02X}{g:02X}{b:02X}"]
        elif mono is not None:
            ct, level = mono
            if not isinstance(ct, int) or not 1 <= ct <= 18 or not isinstance(level, int) or not 0 <= level <= 100:
                raise ValueError("mono is (colour temperature index 1..18, brightness 0..100)")
            parts += ["mode=mono", f"color={ct};{level}"]
        if ramp_ms is not None:
            if not isinstance(ramp_ms, int) or not 0 <= ramp_ms <= 3_600_000:
                raise ValueError("ramp_ms must be 0..3600000")
            parts.append(f"ramp={ramp_ms}")
        if not parts:
            raise ValueError("nothing to set")
        async with self.gate:
            mac = await self._device_mac()
            data = await self._json(
                "POST",
                f"/api/v1/device/{mac}",
                content="&".join(parts),
                content_type="application/x-www-form-urlencoded",
            )
        return self._parsed(parse_light_device, data, mac)

    async def light_on(self, ramp_ms: int | None = None) -> ChannelState:
        return await self.set_light(action="on", ramp_ms=ramp_ms)

    async def light_off(self, ramp_ms: int | None = None) -> ChannelState:
        return await self.set_light(action="off", ramp_ms=ramp_ms)

    async def light_toggle(self) -> ChannelState:
        return await self.set_light(action="toggle")

    # ------------------------------------------------------------- sensors / buttons
    async def sensors(self) -> list[ChannelState]:
        """Motion sensor (motion, light, temperature) or Button Plus 2nd gen readings."""
        async with self.gate:
            data = await self._json("GET", "/api/v1/sensors")
        return self._parsed(parse_sensors, data)

    async def button(self) -> tuple[ChannelState, dict[str, str]]:
        """Button / Button+ (awake only): battery state and the configured action URLs."""
        async with self.gate:
            data = await self._json("GET", "/api/v1/device")
        return self._parsed(parse_button_device, data, self.mac)

    async def actions(self, *, plural: bool = False) -> dict[str, str]:
        """All action URLs: ``/api/v1/action`` (button, PIR) or, with ``plural``,
        ``/api/v1/actions`` (Button Plus 2nd gen). Keys like "single", "pir/rise",
        "btn1/double"."""
        async with self.gate:
            data = await self._json("GET", "/api/v1/actions" if plural else "/api/v1/action")
        return self._parsed(parse_actions, data)

    async def set_action(self, name: str, url: str) -> None:
        """Set one action URL (``"single"``, ``"pir/generic"``, ``"btn2/long"``); an empty
        URL deletes it. Sent as the raw body, as the firmware expects."""
        if not _ACTION_NAME.match(name or ""):
            raise ValueError("bad action name")
        if not isinstance(url, str) or len(url) > MAX_ACTION_URL or any(c in url for c in "\r\n\0"):
            raise ValueError(f"url must be a single line of at most {MAX_ACTION_URL} characters")
        async with self.gate:
            await self._send("POST", f"/api/v1/action/{name}", content=url.encode(), content_type="text/plain")


__all__ = [
    "LIGHT_TYPES",
    "MYSTROM_TYPES",
    "MyStrom",
    "MyStromEnergy",
    "MyStromTemperature",
    "SWITCH_TYPES",
    "light_ramp_ms",
    "parse_actions",
    "parse_button_device",
    "parse_colour",
    "parse_light_device",
    "parse_mystrom_info",
    "parse_mystrom_type",
    "parse_sensors",
    "parse_switch_report",
    "parse_temperature",
]
