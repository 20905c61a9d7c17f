"""Shelly Gen2/Gen3/Gen4 devices: JSON-RPC over HTTP (``POST /rpc``) and over a
websocket session (``ws://host/rpc``) with live notifications.

Pieces, kept apart as in aioshelly:

* pure functions: frame decoding, digest-auth arithmetic, status merging and parsing of
  status/events into our typed values;
* ``RpcAuth``: the per-device digest state for the websocket JSON ``auth`` object;
* ``ShellyRpcHttp``: request/response over HTTP with ``httpx.DigestAuth`` (one instance
  per device, requests serialised, because fw 2.x counts nonce slots and failures);
* ``ShellyRpcSession``: one long-lived websocket per device - reconnects with backoff and
  jitter, re-arms notifications after every reconnect, keeps a merged status cache and
  publishes ``SessionUpdate``s to subscribers;
* ``RpcMethods``: the named device operations, shared by both transports.

Firmware 2.x authentication rules implemented here: a re-challenge with a new nonce (an
expired one, ``stale``) is retried, not reported as a wrong password; ``nc`` starts at 1
for every nonce; 429 drops the nonce and waits before one retry; one request at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from . import http
from .errors import (
    AuthRequired,
    DeviceError,
    DeviceTimeout,
    Flooding,
    ProtocolError,
    RpcError,
    Throttled,
    Unreachable,
    Unsupported,
    WrongCredentials,
)
from .gate import DeviceGate, gate_for
from .shelly_gen1 import parse_shelly_info
from .types import (
    ChannelState,
    DeviceInfo,
    Event,
    PhaseReading,
    SystemState,
    as_bool,
    as_dict,
    as_float,
    as_int,
    as_list,
    as_str,
    clamp_pct,
)

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- named limits / timeouts
RPC_CALL_TIMEOUT = 10.0  # one RPC round trip over the websocket
WS_OPEN_TIMEOUT = 5.0  # TCP connect + websocket handshake
WS_CLOSE_TIMEOUT = 2.0
# websockets' keepalive: a ping every interval, the socket is declared dead when the pong
# does not come back within the timeout (Wi-Fi drops leave half-open TCP sockets).
WS_PING_INTERVAL = 20.0
WS_PING_TIMEOUT = 10.0
# Largest frame we accept. A big device's GetStatus/GetConfig is tens of KiB.
WS_MAX_SIZE = 512 * 1024
# Reconnect backoff: exponential between these, with jitter so a power cut that brings
# back the whole house does not make every session reconnect in the same instant.
RECONNECT_MIN = 1.0
RECONNECT_MAX = 60.0
# After the device refused our password, do not come back quickly: fw 2.x counts failures.
AUTH_FAILURE_BACKOFF = 60.0
# First wait after a 429 when the device gives no Retry-After; doubles while repeated.
THROTTLE_BACKOFF = 2.0
THROTTLE_MAX = 60.0
# Shelly.GetComponents pagination guard.
MAX_COMPONENT_PAGES = 32
MAX_COMPONENTS = 512
# Status cache guards against a device (or attacker) that keeps inventing keys.
MAX_STATUS_KEYS = 256
MAX_MERGE_DEPTH = 16
MAX_CHANNELS = 64
UPDATE_QUEUE_SIZE = 256
# Frame budget per device (token bucket): a real device sends a few notifications a second,
# a misbehaving one (or something posing as it) tens of thousands, each costing a JSON parse,
# a state update and a redraw. Frames past the budget are dropped unread and counted; a device
# still over budget after FLOOD_CLOSE_AFTER seconds has its socket closed and waits
# FLOOD_BACKOFF before the next connect, doubling while it keeps flooding.
FRAME_RATE = 200.0  # frames a second, sustained
FRAME_BURST = 400  # frames at once (a full status after a reconnect, a burst of events)
FLOOD_CLOSE_AFTER = 2.0
FLOOD_BACKOFF = 30.0
FLOOD_BACKOFF_MAX = 600.0
# Methods whose replies may outgrow the status cap (HTTP only; the websocket has max_size).
LARGE_REPLY_METHODS = frozenset({"Shelly.GetConfig", "Shelly.GetComponents", "Sys.GetConfig", "Shelly.ListMethods"})

AUTH_USER = "admin"


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# HA2 of the websocket/JSON auth object is over fixed dummy strings (Shelly's rule).
WS_HA2 = sha256_hex("dummy_method:dummy_uri")


def shelly_ha1(realm: str, password: str) -> str:
    """HA1 = sha256("admin:<realm>:<password>") - also what ``Shelly.SetAuth`` stores."""
    return sha256_hex(f"{AUTH_USER}:{realm}:{password}")


# ----------------------------------------------------------------------------- auth


@dataclass(slots=True, frozen=True)
class AuthChallenge:
    realm: str
    nonce: Any  # int before fw 2.0, an opaque (base64) string after; echoed as received
    algorithm: str = "SHA-256"
    nc: int | None = None
    stale: bool = False
    opaque: str | None = None
    qop: str | None = None


def parse_ws_challenge(message: Any) -> AuthChallenge | None:
    """The 401 error ``message`` is a JSON *string* holding the challenge."""
    data = message
    if isinstance(message, str):
        if len(message) > 4096:
            return None
        try:
            data = json.loads(message)
        except (ValueError, RecursionError):
            return None
    if not isinstance(data, dict):
        return None
    realm = as_str(data.get("realm"), 128)
    nonce = data.get("nonce")
    if not realm or isinstance(nonce, bool) or not isinstance(nonce, (int, str)) or nonce == "":
        return None
    if isinstance(nonce, str) and len(nonce) > 256:
        return None
    algorithm = as_str(data.get("algorithm"), 32) or "SHA-256"
    return AuthChallenge(
        realm=realm,
        nonce=nonce,
        algorithm=algorithm,
        nc=as_int(data.get("nc")),  # the Wall Display sends it as a string
        stale=as_bool(data.get("stale")) is True,
    )


def parse_www_authenticate(header: Any) -> AuthChallenge | None:
    """``WWW-Authenticate: Digest qop="auth", realm="...", nonce="...", algorithm=SHA-256``.

    Fields are split on the first ``=`` only, so base64 nonces ending in ``=`` survive
    (ioBroker.shelly#1543 split on every ``=``)."""
    if not isinstance(header, str) or len(header) > 4096:
        return None
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "digest":
        return None
    fields: dict[str, str] = {}
    for part in _split_header_list(rest):
        key, sep, value = part.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        fields[key.strip().lower()] = value
    realm, nonce = fields.get("realm"), fields.get("nonce")
    if not realm or not nonce:
        return None
    return AuthChallenge(
        realm=realm,
        nonce=nonce,
        algorithm=fields.get("algorithm") or "MD5",
        stale=fields.get("stale", "").lower() == "true",
        opaque=fields.get("opaque"),
        qop=fields.get("qop"),
    )


def _split_header_list(text: str) -> list[str]:
    """Split on commas outside quotes."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    if current:
        parts.append("".join(current).strip())
    return [p for p in parts if p]


_HASHES = {"SHA-256": hashlib.sha256, "MD5": hashlib.md5, "SHA-512": hashlib.sha512}


def digest_authorization(
    challenge: AuthChallenge, *, method: str, uri: str, password: str, nc: int = 1, cnonce: str | None = None
) -> str:
    """An RFC 7616 ``Authorization: Digest ...`` header value (used on the debug-log
    websocket upgrade, which httpx cannot do for us). Raises ProtocolError for an
    algorithm we do not know."""
    algo = challenge.algorithm.upper()
    hasher = _HASHES.get(algo)
    if hasher is None:
        raise ProtocolError(f"unsupported digest algorithm {challenge.algorithm[:32]!r}")

    def h(text: str) -> str:
        return hasher(text.encode()).hexdigest()

    cnonce = cnonce or secrets.token_hex(8)
    ha1 = h(f"{AUTH_USER}:{challenge.realm}:{password}")
    ha2 = h(f"{method}:{uri}")
    nc_text = f"{nc:08x}"
    nonce = str(challenge.nonce)
    if challenge.qop is None:
        response = h(f"{ha1}:{nonce}:{ha2}")
        extra = ""
    else:
        response = h(f"{ha1}:{nonce}:{nc_text}:{cnonce}:auth:{ha2}")
        extra = f', qop=auth, nc={nc_text}, cnonce="{cnonce}"'
    value = (
        f'Digest username="{AUTH_USER}", realm="{challenge.realm}", nonce="{nonce}", uri="{uri}", '
        f'algorithm={challenge.algorithm}, response="{response}"{extra}'
    )
    if challenge.opaque is not None:
        value += f', opaque="{challenge.opaque}"'
    return value


class RpcAuth:
    """Digest state for the websocket JSON ``auth`` object of one device.

    Holds the password, the current nonce and its counter. ``nc`` restarts at 1 for every
    new nonce (fw 2.x tracks it per nonce); a nonce is dropped after a 429.
    """

    __slots__ = ("password", "challenge", "nc")

    def __init__(self, password: str | None) -> None:
        self.password = password or None
        self.challenge: AuthChallenge | None = None
        self.nc = 1

    @property
    def ready(self) -> bool:
        return self.password is not None and self.challenge is not None

    def accept(self, challenge: AuthChallenge) -> None:
        self.challenge = challenge
        self.nc = 1

    def drop_nonce(self) -> None:
        self.challenge = None
        self.nc = 1

    def auth_object(self, cnonce: str | None = None) -> dict[str, Any]:
        if self.challenge is None or self.password is None:
            raise RuntimeError("no challenge to answer")
        ch = self.challenge
        cnonce = cnonce or secrets.token_hex(8)
        nc = self.nc
        self.nc += 1
        ha1 = shelly_ha1(ch.realm, self.password)
        response = sha256_hex(f"{ha1}:{ch.nonce}:{nc}:{cnonce}:auth:{WS_HA2}")
        return {
            "realm": ch.realm,
            "username": AUTH_USER,
            "nonce": ch.nonce,
            "cnonce": cnonce,
            "response": response,
            "algorithm": "SHA-256",
            "nc": nc,
        }


# ----------------------------------------------------------------------------- frames


def decode_frame(data: Any) -> dict[str, Any]:
    """One websocket message -> a frame dict, or ProtocolError."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data).decode("utf-8", "replace")
    if not isinstance(data, str):
        raise ProtocolError("frame is neither text nor bytes")
    frame = http.parse_json(data)
    if not isinstance(frame, dict):
        raise ProtocolError("frame is not a JSON object")
    return frame


def rpc_error_from(error: Any, host: str | None = None) -> DeviceError:
    """An RPC ``error`` object -> our error type."""
    err = as_dict(error)
    code = as_int(err.get("code"))
    message = as_str(err.get("message"), 512) or ""
    if code is None:
        return ProtocolError(f"malformed RPC error: {str(error)[:80]}", host=host)
    if code == 401:
        return WrongCredentials("authentication failed", host=host)
    if code == 429:
        return Throttled(message or "too many requests", host=host)
    if code == 404 or code == -114 or "method not found" in message.lower() or "no handler" in message.lower():
        return Unsupported(message or f"RPC error {code}", host=host)
    return RpcError(code, message, host=host)


def merge_status(cache: dict[str, Any], patch: dict[str, Any], _depth: int = 0) -> None:
    """Deep-merge a ``NotifyStatus`` into the cached status. ``null`` clears a value - it
    is stored as None (not skipped), so a finished timer really disappears."""
    for key, value in patch.items():
        if not isinstance(key, str):
            continue
        if _depth == 0 and key not in cache and len(cache) >= MAX_STATUS_KEYS:
            continue
        old = cache.get(key)
        if isinstance(value, dict) and isinstance(old, dict) and _depth < MAX_MERGE_DEPTH:
            merge_status(old, value, _depth + 1)
        else:
            cache[key] = value


# ----------------------------------------------------------------------------- parsing


def _tc(value: Any) -> float | None:
    return as_float(as_dict(value).get("tC"))


def _errors(value: Any) -> tuple[str, ...] | None:
    items = [s for s in (as_str(e, 64) for e in as_list(value)[:16]) if s]
    return tuple(items) or None


def _metered(key: str, kind: str, c: dict[str, Any]) -> ChannelState:
    """Fields shared by switch, cover, light, rgb(w), cct and pm1."""
    return ChannelState(
        key=key,
        kind=kind,
        power_w=as_float(c.get("apower")),
        energy_wh=as_float(as_dict(c.get("aenergy")).get("total")),
        returned_energy_wh=as_float(as_dict(c.get("ret_aenergy")).get("total")),
        voltage_v=as_float(c.get("voltage")),
        current_a=as_float(c.get("current")),
        power_factor=as_float(c.get("pf")),
        frequency_hz=as_float(c.get("freq")),
        temperature_c=_tc(c.get("temperature")),
        source=as_str(c.get("source"), 32),
        errors=_errors(c.get("errors")),
    )


def _rgb(value: Any) -> tuple[float, ...] | None:
    items = as_list(value)
    if len(items) != 3:
        return None
    nums = [as_float(v) for v in items]
    if any(n is None for n in nums):
        return None
    return tuple(float(n) for n in nums)  # type: ignore[arg-type]


def parse_rpc_component(key: str, value: Any, status: dict[str, Any] | None = None) -> ChannelState | None:
    """One ``type:id`` status entry -> a channel, or None for components that are not
    channels (sys, wifi, script, ...). ``status`` supplies the companion ``emdata``/
    ``em1data`` energy counters for ``em``/``em1``."""
    if not isinstance(key, str) or not isinstance(value, dict):
        return None
    ctype, sep, cid = key.partition(":")
    if not sep:
        return None
    status = status or {}
    c = value
    if ctype == "switch":
        ch = _metered(key, "switch", c)
        ch.on = as_bool(c.get("output"))
        return ch
    if ctype == "cover":
        ch = _metered(key, "cover", c)
        ch.moving = as_str(c.get("state"), 16)
        ch.position_pct = clamp_pct(c.get("current_pos"))
        return ch
    if ctype in ("light", "rgb", "rgbw", "cct"):
        ch = _metered(key, "light", c)
        ch.on = as_bool(c.get("output"))
        ch.brightness_pct = clamp_pct(c.get("brightness"))
        if ctype == "rgb":
            ch.colour, ch.colour_mode = _rgb(c.get("rgb")), "rgb"
        elif ctype == "rgbw":
            rgb = _rgb(c.get("rgb"))
            white = as_float(c.get("white"))
            ch.colour = (*rgb, white) if rgb is not None and white is not None else rgb
            ch.colour_mode = "rgbw"
        elif ctype == "cct":
            ch.color_temp_k = as_float(c.get("ct"))
            ch.colour_mode = "cct"
        return ch
    if ctype == "pm1":
        return _metered(key, "meter", c)
    if ctype == "input":
        return ChannelState(key=key, kind="input", on=as_bool(c.get("state")))
    if ctype == "em":
        data = as_dict(status.get(f"emdata:{cid}"))
        phases = tuple(
            PhaseReading(
                phase=p,
                power_w=as_float(c.get(f"{p}_act_power")),
                apparent_power_va=as_float(c.get(f"{p}_aprt_power")),
                voltage_v=as_float(c.get(f"{p}_voltage")),
                current_a=as_float(c.get(f"{p}_current")),
                power_factor=as_float(c.get(f"{p}_pf")),
                frequency_hz=as_float(c.get(f"{p}_freq")),
                energy_wh=as_float(data.get(f"{p}_total_act_energy")),
                returned_energy_wh=as_float(data.get(f"{p}_total_act_ret_energy")),
            )
            for p in "abc"
        )
        return ChannelState(
            key=key,
            kind="meter",
            power_w=as_float(c.get("total_act_power")),
            current_a=as_float(c.get("total_current")),
            energy_wh=as_float(data.get("total_act")),
            returned_energy_wh=as_float(data.get("total_act_ret")),
            phases=phases,
            errors=_errors(c.get("errors")),
        )
    if ctype == "em1":
        data = as_dict(status.get(f"em1data:{cid}"))
        return ChannelState(
            key=key,
            kind="meter",
            power_w=as_float(c.get("act_power")),
            voltage_v=as_float(c.get("voltage")),
            current_a=as_float(c.get("current")),
            power_factor=as_float(c.get("pf")),
            frequency_hz=as_float(c.get("freq")),
            energy_wh=as_float(data.get("total_act_energy")),
            returned_energy_wh=as_float(data.get("total_act_ret_energy")),
            errors=_errors(c.get("errors")),
        )
    if ctype in ("emdata", "em1data"):
        # Energy counters belong to em:N / em1:N; they only become a channel of their own
        # when the meter component itself is missing.
        base = "em" if ctype == "emdata" else "em1"
        if f"{base}:{cid}" in status:
            return None
        total = "total_act" if ctype == "emdata" else "total_act_energy"
        ret = "total_act_ret" if ctype == "emdata" else "total_act_ret_energy"
        return ChannelState(key=key, kind="meter", energy_wh=as_float(c.get(total)), returned_energy_wh=as_float(c.get(ret)))
    if ctype == "temperature":
        return ChannelState(key=key, kind="sensor", temperature_c=as_float(c.get("tC")))
    if ctype == "humidity":
        return ChannelState(key=key, kind="sensor", humidity_pct=clamp_pct(c.get("rh")))
    if ctype == "devicepower":
        battery = as_dict(c.get("battery"))
        return ChannelState(
            key=key,
            kind="sensor",
            battery_pct=clamp_pct(battery.get("percent")),
            battery_v=as_float(battery.get("V")),
            external_power=as_bool(as_dict(c.get("external")).get("present")),
        )
    if ctype == "illuminance":
        return ChannelState(key=key, kind="sensor", illuminance_lux=as_float(c.get("lux")))
    if ctype in ("smoke", "flood"):
        return ChannelState(key=key, kind="sensor", alarm=as_bool(c.get("alarm")))
    return None


def parse_rpc_status(status: Any, keys: Any = None) -> list[ChannelState]:
    """``Shelly.GetStatus`` (or the session cache) -> channels, in key order.
    ``keys`` limits the result to those components (e.g. the ones a notification changed)."""
    if not isinstance(status, dict):
        raise ProtocolError("RPC status is not a JSON object")
    wanted: set[str] | None = None
    if keys is not None:
        wanted = set()
        for k in keys:
            if isinstance(k, str):
                wanted.add(k)
                # New energy counters change the em:N / em1:N channel they belong to.
                if k.startswith("emdata:"):
                    wanted.add("em:" + k[7:])
                elif k.startswith("em1data:"):
                    wanted.add("em1:" + k[8:])
    channels: list[ChannelState] = []
    for key in sorted(k for k in status if isinstance(k, str)):
        if wanted is not None and key not in wanted:
            continue
        ch = parse_rpc_component(key, status[key], status)
        if ch is not None:
            channels.append(ch)
            if len(channels) >= MAX_CHANNELS:
                break
    return channels


def parse_rpc_system(status: Any) -> SystemState:
    """``sys`` (+ ``wifi``) of a status -> SystemState. A non-zero ``wakeup_period`` marks a
    sleeping battery device."""
    if not isinstance(status, dict):
        raise ProtocolError("RPC status is not a JSON object")
    sys = as_dict(status.get("sys"))
    wifi = as_dict(status.get("wifi"))
    wakeup = as_float(sys.get("wakeup_period"))
    stable = as_dict(as_dict(sys.get("available_updates")).get("stable"))
    return SystemState(
        uptime_s=as_float(sys.get("uptime")),
        unixtime=as_float(sys.get("unixtime")),
        sleeping=bool(wakeup and wakeup > 0),
        wakeup_period_s=wakeup,
        restart_required=as_bool(sys.get("restart_required")),
        update_available=as_str(stable.get("version"), 64),
        rssi_dbm=as_float(wifi.get("rssi")),
        ip=as_str(wifi.get("sta_ip"), 64),
        cfg_rev=as_int(sys.get("cfg_rev")),
    )


# NotifyEvent names -> our event kinds (anything else keeps its own name).
RPC_EVENT_KINDS = {
    "single_push": "single",
    "double_push": "double",
    "triple_push": "triple",
    "long_push": "long",
}


def parse_rpc_events(params: Any, *, device: str = "", now: float | None = None) -> list[Event]:
    """``NotifyEvent`` params -> events. The device ``ts`` can be uptime right after boot,
    so events are stamped with our clock (``now``)."""
    p = as_dict(params)
    when = time.time() if now is None else now
    events: list[Event] = []
    for item in as_list(p.get("events"))[:32]:
        ev = as_dict(item)
        name = as_str(ev.get("event"), 48)
        if not name:
            continue
        component = as_str(ev.get("component"), 48) or "sys"
        kind = RPC_EVENT_KINDS.get(name, name)
        value: Any = None
        if name == "ota_progress":
            value = as_float(ev.get("progress_percent"))
        else:
            extra = {
                k: v
                for k, v in list(ev.items())[:24]
                if k not in ("component", "id", "event", "ts") and isinstance(k, str)
                and (v is None or isinstance(v, (bool, int, float)) or (isinstance(v, str) and len(v) <= 256))
            }
            value = extra or None
        events.append(Event(device=device, channel=component, kind=kind, value=value, ts=when))
    return events


# ----------------------------------------------------------------------------- methods


def _cid(value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535:
        raise ValueError("component id must be an int 0..65535")
    return value


def _num(name: str, value: float, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{name} must be within {low:g}..{high:g}")
    return value


class RpcMethods:
    """Named operations over any RPC transport (``call`` is supplied by the transport)."""

    host: str
    device_id: str | None = None

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:  # pragma: no cover
        raise NotImplementedError

    def _set_password(self, password: str | None) -> None:  # pragma: no cover
        raise NotImplementedError

    async def _dict(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        result = await self.call(method, params)
        if not isinstance(result, dict):
            raise ProtocolError(f"{method} result is not an object", host=self.host)
        return result

    # -- identity / state
    async def device_info(self) -> DeviceInfo:
        data = await self.call("Shelly.GetDeviceInfo")
        try:
            info = parse_shelly_info(data)
        except ProtocolError as exc:
            raise ProtocolError(exc.message, host=self.host) from exc
        if info.generation == 1:
            raise ProtocolError("GetDeviceInfo answered without gen", host=self.host)
        self.device_id = info.auth_domain or info.device_id
        return info

    async def get_status(self) -> dict[str, Any]:
        return await self._dict("Shelly.GetStatus")

    async def channels(self) -> list[ChannelState]:
        return parse_rpc_status(await self.get_status())

    async def get_config(self) -> dict[str, Any]:
        return await self._dict("Shelly.GetConfig")

    async def components(self, *, dynamic_only: bool = False, include: tuple[str, ...] = ("status", "config")) -> list[dict[str, Any]]:
        """All components, following ``offset``/``total`` pages (bounded)."""
        found: list[dict[str, Any]] = []
        offset = 0
        for _ in range(MAX_COMPONENT_PAGES):
            params: dict[str, Any] = {"offset": offset, "include": list(include)}
            if dynamic_only:
                params["dynamic_only"] = True
            page = await self._dict("Shelly.GetComponents", params)
            items = as_list(page.get("components"))
            found.extend(c for c in items if isinstance(c, dict))
            total = as_int(page.get("total")) or 0
            offset += len(items)
            if not items or offset >= total or len(found) >= MAX_COMPONENTS:
                break
        return found[:MAX_COMPONENTS]

    async def list_methods(self) -> list[str]:
        result = await self._dict("Shelly.ListMethods")
        return [m for m in (as_str(x, 64) for x in as_list(result.get("methods"))) if m]

    # -- switches
    async def switch_set(self, cid: int, on: bool, *, toggle_after: float | None = None) -> bool | None:
        """Returns ``was_on``."""
        params: dict[str, Any] = {"id": _cid(cid), "on": bool(on)}
        if toggle_after is not None:
            params["toggle_after"] = _num("toggle_after", toggle_after, 0.1, 86400 * 7)
        return as_bool(as_dict(await self.call("Switch.Set", params)).get("was_on"))

    async def switch_toggle(self, cid: int) -> bool | None:
        return as_bool(as_dict(await self.call("Switch.Toggle", {"id": _cid(cid)})).get("was_on"))

    # -- covers
    async def cover_open(self, cid: int, *, duration: float | None = None) -> None:
        params: dict[str, Any] = {"id": _cid(cid)}
        if duration is not None:
            params["duration"] = _num("duration", duration, 0.1, 300)
        await self.call("Cover.Open", params)

    async def cover_close(self, cid: int, *, duration: float | None = None) -> None:
        params: dict[str, Any] = {"id": _cid(cid)}
        if duration is not None:
            params["duration"] = _num("duration", duration, 0.1, 300)
        await self.call("Cover.Close", params)

    async def cover_stop(self, cid: int) -> None:
        await self.call("Cover.Stop", {"id": _cid(cid)})

    async def cover_go_to_position(self, cid: int, pos: float) -> None:
        await self.call("Cover.GoToPosition", {"id": _cid(cid), "pos": round(_num("pos", pos, 0, 100))})

    # -- lights
    @staticmethod
    def _light_params(
        cid: int, on: bool | None, brightness: float | None, transition: float | None, toggle_after: float | None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"id": _cid(cid)}
        if on is not None:
            params["on"] = bool(on)
        if brightness is not None:
            params["brightness"] = round(_num("brightness", brightness, 0, 100))
        if transition is not None:
            params["transition_duration"] = _num("transition", transition, 0, 10800)
        if toggle_after is not None:
            params["toggle_after"] = _num("toggle_after", toggle_after, 0.1, 86400 * 7)
        return params

    async def light_set(
        self,
        cid: int,
        *,
        on: bool | None = None,
        brightness: float | None = None,
        transition: float | None = None,
        toggle_after: float | None = None,
    ) -> None:
        await self.call("Light.Set", self._light_params(cid, on, brightness, transition, toggle_after))

    async def light_toggle(self, cid: int) -> None:
        await self.call("Light.Toggle", {"id": _cid(cid)})

    @staticmethod
    def _rgb_param(rgb: tuple[int, int, int]) -> list[int]:
        values = list(rgb)
        if len(values) != 3 or any(not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 255 for v in values):
            raise ValueError("rgb must be three ints 0..255")
        return values

    async def rgb_set(
        self,
        cid: int,
        *,
        on: bool | None = None,
        rgb: tuple[int, int, int] | None = None,
        brightness: float | None = None,
        transition: float | None = None,
    ) -> None:
        params = self._light_params(cid, on, brightness, transition, None)
        if rgb is not None:
            params["rgb"] = self._rgb_param(rgb)
        await self.call("RGB.Set", params)

    async def rgbw_set(
        self,
        cid: int,
        *,
        on: bool | None = None,
        rgb: tuple[int, int, int] | None = None,
        white: int | None = None,
        brightness: float | None = None,
        transition: float | None = None,
    ) -> None:
        params = self._light_params(cid, on, brightness, transition, None)
        if rgb is not None:
            params["rgb"] = self._rgb_param(rgb)
        if white is not None:
            params["white"] = round(_num("white", white, 0, 255))
        await self.call("RGBW.Set", params)

    async def cct_set(
        self,
        cid: int,
        *,
        on: bool | None = None,
        brightness: float | None = None,
        ct: int | None = None,
        transition: float | None = None,
    ) -> None:
        params = self._light_params(cid, on, brightness, transition, None)
        if ct is not None:
            params["ct"] = round(_num("ct", ct, 1000, 10000))
        await self.call("CCT.Set", params)

    # -- administration
    async def set_auth(self, new_password: str | None) -> None:
        """Change (or with None, remove) the device password. The realm is the device id;
        afterwards this object authenticates with the new password."""
        if new_password is not None and (not isinstance(new_password, str) or not 1 <= len(new_password) <= 128):
            raise ValueError("password must be 1..128 characters")
        realm = self.device_id
        if not realm:
            info = await self.device_info()
            realm = info.auth_domain or info.device_id
        if not realm:
            raise ProtocolError("device did not tell its id (the digest realm)", host=self.host)
        ha1 = shelly_ha1(realm, new_password) if new_password else None
        await self.call("Shelly.SetAuth", {"user": AUTH_USER, "realm": realm, "ha1": ha1})
        self._set_password(new_password)

    async def reboot(self, delay_ms: int | None = None) -> None:
        params = None if delay_ms is None else {"delay_ms": round(_num("delay_ms", delay_ms, 0, 600_000))}
        await self.call("Shelly.Reboot", params)

    async def check_for_update(self) -> dict[str, str | None]:
        """-> {"stable": version or None, "beta": version or None}"""
        result = as_dict(await self.call("Shelly.CheckForUpdate"))
        return {
            stage: as_str(as_dict(result.get(stage)).get("version"), 64) for stage in ("stable", "beta")
        }

    async def update(self, stage: str = "stable", *, url: str | None = None) -> None:
        if url is not None:
            if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > 512:
                raise ValueError("url must be an http(s) URL")
            await self.call("Shelly.Update", {"url": url})
            return
        if stage not in ("stable", "beta"):
            raise ValueError("stage must be stable or beta")
        await self.call("Shelly.Update", {"stage": stage})

    async def sys_get_config(self) -> dict[str, Any]:
        return await self._dict("Sys.GetConfig")

    async def sys_set_config(self, config: dict[str, Any]) -> bool | None:
        """-> ``restart_required``."""
        if not isinstance(config, dict):
            raise ValueError("config must be a dict")
        return as_bool(as_dict(await self.call("Sys.SetConfig", {"config": config})).get("restart_required"))


# ----------------------------------------------------------------------------- HTTP


def _retry_after(headers: httpx.Headers, fallback: float) -> float:
    value = as_float(headers.get("retry-after"))
    if value is None or value < 0:
        return fallback
    return min(value, THROTTLE_MAX)


class ShellyRpcHttp(RpcMethods):
    """RPC over ``POST /rpc`` for one device. The ``httpx.DigestAuth`` object is kept for
    the device's lifetime (a fresh one per request would cost a nonce slot each time) and
    requests are serialised so its ``nc`` stays in order."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        host: str,
        port: int = 80,
        *,
        password: str | None = None,
        src: str | None = None,
        throttle_retries: int = 1,
        throttle_backoff: float = THROTTLE_BACKOFF,
        mac: str | None = None,
        gate: DeviceGate | None = None,
    ) -> None:
        self.client = client
        self.host = host
        self.port = port
        self.base = http.base_url(host, port)
        self.src = src or f"homedash-{secrets.token_hex(3)}"
        self.throttle_retries = throttle_retries
        self.throttle_backoff = throttle_backoff
        self._password = password or None
        self._auth: httpx.DigestAuth | None = httpx.DigestAuth(AUTH_USER, password) if password else None
        # The device's one turn, shared with its websocket session and every other driver
        # of it in this process (see gate.py).
        self.gate = gate if gate is not None else gate_for(mac=mac, host=host, port=port)
        self._ids = itertools.count(1)
        self._throttle_level = 0

    def _set_password(self, password: str | None) -> None:
        self._password = password or None
        self._auth = httpx.DigestAuth(AUTH_USER, password) if password else None

    def set_password(self, password: str | None) -> None:
        self._set_password(password)

    def _next_backoff(self, headers: httpx.Headers | None) -> float:
        fallback = min(self.throttle_backoff * (2 ** self._throttle_level), THROTTLE_MAX)
        self._throttle_level = min(self._throttle_level + 1, 8)
        return _retry_after(headers, fallback) if headers is not None else fallback

    async def call(self, method: str, params: dict[str, Any] | None = None, *, cap: int | None = None) -> Any:
        if cap is None:
            # Configuration and component dumps are the only big replies a device sends.
            cap = http.DEBUG_BODY_CAP if method in LARGE_REPLY_METHODS else http.STATUS_BODY_CAP
        async with self.gate:
            throttle_left = self.throttle_retries
            stale_left = 1
            while True:
                frame: dict[str, Any] = {"id": next(self._ids), "src": self.src, "method": method}
                if params is not None:
                    frame["params"] = params
                reply = await http.request(
                    self.client,
                    "POST",
                    self.base + "/rpc",
                    host=self.host,
                    headers={"Content-Type": "application/json"},
                    content=json.dumps(frame, separators=(",", ":")),
                    auth=self._auth,
                    cap=cap,
                )
                body: dict[str, Any] | None = None
                with contextlib.suppress(ProtocolError):
                    decoded = reply.json() if reply.body else None
                    body = decoded if isinstance(decoded, dict) else None
                error = as_dict(body.get("error")) if body and "error" in body else None
                error_code = as_int(error.get("code")) if error else None

                if reply.status == 429 or error_code == 429:
                    # Our nonce may be what the device holds against us: forget it, wait,
                    # and come back with a fresh challenge once.
                    self._set_password(self._password)
                    wait = self._next_backoff(reply.headers)
                    if throttle_left > 0:
                        throttle_left -= 1
                        await asyncio.sleep(wait)
                        continue
                    raise Throttled("device throttles us (429)", retry_after=wait, host=self.host)
                if reply.status == 401 or error_code == 401:
                    if self._auth is None:
                        raise AuthRequired("device has a password; none configured", host=self.host)
                    challenge = parse_www_authenticate(reply.headers.get("www-authenticate"))
                    if challenge is not None and challenge.stale and stale_left > 0:
                        # Expired nonce: the next attempt starts from the new challenge.
                        stale_left -= 1
                        continue
                    # Forget the refused challenge: the next call then starts with a plain
                    # request (a challenge, which fw 2.x does not count as a failure)
                    # instead of replaying a wrong answer first.
                    self._set_password(self._password)
                    raise WrongCredentials("password rejected", host=self.host)
                if reply.status == 404 and body is None:
                    raise Unsupported("no /rpc endpoint: not a Gen2+ device", host=self.host)
                if error is not None:
                    raise rpc_error_from(error, self.host)
                if reply.status != 200:
                    raise ProtocolError(f"HTTP {reply.status} from /rpc", status=reply.status, host=self.host)
                if body is None:
                    raise ProtocolError("/rpc reply is not a JSON object", status=reply.status, host=self.host)
                if "result" not in body:
                    raise ProtocolError("/rpc reply has neither result nor error", host=self.host)
                self._throttle_level = 0
                return body["result"]


# ----------------------------------------------------------------------------- websocket


@dataclass(slots=True)
class SessionUpdate:
    """What a ``ShellyRpcSession`` tells its subscribers.

    kind: ``connected`` (after every (re)connect, with the full status), ``disconnected``
    (with the error that ended the connection), ``status`` (components in ``changed``
    were updated; ``channels`` are their new states) or ``event``.
    """

    kind: str
    changed: tuple[str, ...] = ()
    channels: tuple[ChannelState, ...] = ()
    events: tuple[Event, ...] = ()
    error: DeviceError | None = None
    full: bool = False


def translate_ws_error(exc: BaseException, host: str) -> DeviceError:
    if isinstance(exc, DeviceError):
        return exc
    if isinstance(exc, TimeoutError):
        return DeviceTimeout("websocket did not open in time", host=host)
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        if status == 404:
            return Unsupported("no /rpc websocket: not a Gen2+ device", host=host)
        if status == 401:
            return AuthRequired("websocket upgrade needs credentials", host=host)
        if status == 429:
            return Throttled("device throttles us (429)", retry_after=THROTTLE_BACKOFF, host=host)
        return ProtocolError(f"websocket upgrade refused (HTTP {status})", status=status, host=host)
    if isinstance(exc, ConnectionClosed):
        return Unreachable(f"websocket closed ({exc})"[:160], host=host)
    if isinstance(exc, (OSError, EOFError)):
        return Unreachable(f"cannot connect: {exc}"[:160], host=host)
    if isinstance(exc, WebSocketException):
        return ProtocolError(f"websocket failure: {exc}"[:160], host=host)
    return ProtocolError(f"unexpected failure: {type(exc).__name__}", host=host)


class ShellyRpcSession(RpcMethods):
    """One persistent websocket RPC session with a Gen2+ device.

    ``start()`` launches a background task that connects, bootstraps (GetDeviceInfo - which
    also arms notifications, since the device only notifies clients that sent a request
    with ``src`` - then GetStatus), and then applies ``NotifyStatus`` /
    ``NotifyFullStatus`` / ``NotifyEvent`` to ``status`` until the socket dies; then it
    reconnects with exponential backoff and jitter. ``call()`` waits for the connection.

    Consume updates with ``async for update in session.updates(): ...`` or
    ``session.subscribe(callback)``. A runtime runs one session per device.
    """

    def __init__(
        self,
        host: str,
        port: int = 80,
        *,
        password: str | None = None,
        src: str | None = None,
        device: str = "",
        call_timeout: float = RPC_CALL_TIMEOUT,
        open_timeout: float = WS_OPEN_TIMEOUT,
        ping_interval: float | None = WS_PING_INTERVAL,
        ping_timeout: float | None = WS_PING_TIMEOUT,
        reconnect_min: float = RECONNECT_MIN,
        reconnect_max: float = RECONNECT_MAX,
        auth_failure_backoff: float = AUTH_FAILURE_BACKOFF,
        throttle_retries: int = 1,
        throttle_backoff: float = THROTTLE_BACKOFF,
        max_size: int = WS_MAX_SIZE,
        rng: random.Random | None = None,
        mac: str | None = None,
        gate: DeviceGate | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.uri = http.base_url(host, port).replace("http://", "ws://", 1) + "/rpc"
        self.src = src or f"homedash-{secrets.token_hex(4)}"
        self.device = device or host
        self.call_timeout = call_timeout
        self.open_timeout = open_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self.auth_failure_backoff = auth_failure_backoff
        self.throttle_retries = throttle_retries
        self.throttle_backoff = throttle_backoff
        self.max_size = max_size
        self.rng = rng or random.Random()

        self.auth = RpcAuth(password)
        self.status: dict[str, Any] = {}
        self.info: DeviceInfo | None = None
        self.last_error: DeviceError | None = None
        self.connects = 0  # successful (re)connects, for tests and diagnostics
        self.bad_frames = 0  # frames we could not use (ignored, counted)

        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._connected = asyncio.Event()
        self._attempt_done = asyncio.Event()
        # Requests over the socket take the same turn as HTTP RPC calls to the device: the
        # firmware sees one client either way (see gate.py). Notifications are not requests.
        self.gate = gate if gate is not None else gate_for(mac=mac, host=host, port=port)
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._subscribers: list[Callable[[SessionUpdate], None]] = []
        self._throttle_level = 0
        self._reply_tasks: set[asyncio.Task[None]] = set()

    # ---------------------------------------------------------- lifecycle
    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def _set_password(self, password: str | None) -> None:
        self.auth = RpcAuth(password)

    def set_password(self, password: str | None) -> None:
        self._set_password(password)

    async def start(self) -> None:
        if self._task is None or self._task.done():
            self._closing = False
            self.last_error = None
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"shelly-rpc {self.host}")

    async def stop(self) -> None:
        self._closing = True
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), WS_CLOSE_TIMEOUT)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        for task in list(self._reply_tasks):
            task.cancel()
        self._fail_pending(Unreachable("session stopped", host=self.host))

    async def __aenter__(self) -> ShellyRpcSession:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Return once connected. While the session is down after a failed attempt, raise
        that attempt's error at once (a call on an offline device should say so, not hang);
        before the first attempt has finished, wait for it up to ``timeout``."""
        if self._connected.is_set():
            return
        if self.last_error is None:
            attempt = self._attempt_done
            try:
                await asyncio.wait_for(attempt.wait(), timeout if timeout is not None else self.call_timeout)
            except TimeoutError as exc:
                raise DeviceTimeout("no connection yet", host=self.host) from exc
            if self._connected.is_set():
                return
        err = self.last_error or Unreachable("not connected", host=self.host)
        raise err.with_traceback(None)

    def _attempt_finished(self) -> None:
        """Wake everybody waiting for the outcome of a connection attempt."""
        self._attempt_done.set()
        self._attempt_done = asyncio.Event()

    # ---------------------------------------------------------- subscriptions
    def subscribe(self, callback: Callable[[SessionUpdate], None]) -> Callable[[], None]:
        """Call ``callback(update)`` for every update (from the session task; keep it quick).
        Returns a function that unsubscribes."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    async def updates(self, maxsize: int = UPDATE_QUEUE_SIZE) -> AsyncIterator[SessionUpdate]:
        """Async iterator over updates. A consumer that falls behind loses the oldest
        updates, never blocks the session (the next full status repairs its view)."""
        queue: asyncio.Queue[SessionUpdate] = asyncio.Queue(maxsize)

        def put(update: SessionUpdate) -> None:
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(update)

        unsubscribe = self.subscribe(put)
        try:
            while True:
                yield await queue.get()
        finally:
            unsubscribe()

    def _emit(self, update: SessionUpdate) -> None:
        for callback in list(self._subscribers):
            try:
                callback(update)
            except Exception:  # a broken subscriber must not kill the session
                log.exception("%s: update subscriber failed", self.host)

    # ---------------------------------------------------------- connection loop
    async def _run(self) -> None:
        delay = self.reconnect_min
        while not self._closing:
            error: DeviceError | None = None
            was_connected = False
            try:
                ws = await connect(
                    self.uri,
                    open_timeout=self.open_timeout,
                    ping_interval=self.ping_interval,
                    ping_timeout=self.ping_timeout,
                    close_timeout=WS_CLOSE_TIMEOUT,
                    max_size=self.max_size,
                    max_queue=64,
                    compression=None,
                    proxy=None,  # websockets otherwise reads proxy settings from the env
                    user_agent_header=http.USER_AGENT,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every connect failure is typed below
                error = translate_ws_error(exc, self.host)
            else:
                self._ws = ws
                reader = asyncio.get_running_loop().create_task(self._reader(ws))
                try:
                    await self._bootstrap(ws)
                    was_connected = True
                    self.connects += 1
                    self.last_error = None
                    self._connected.set()
                    self._attempt_finished()
                    delay = self.reconnect_min
                    self._emit(
                        SessionUpdate(
                            kind="connected",
                            changed=tuple(self.status),
                            channels=tuple(parse_rpc_status(self.status)),
                            full=True,
                        )
                    )
                    error = await reader
                except asyncio.CancelledError:
                    reader.cancel()
                    raise
                except DeviceError as exc:
                    error = exc
                finally:
                    self._connected.clear()
                    self._ws = None
                    reader.cancel()
                    with contextlib.suppress(BaseException):
                        await reader
                    with contextlib.suppress(Exception):
                        if isinstance(error, Flooding):
                            ws.transport.abort()  # a close handshake would first read through the flood
                        else:
                            await asyncio.wait_for(ws.close(), WS_CLOSE_TIMEOUT)
                    # websockets drops a connection whose peer does not answer the close only
                    # after its own close_timeout, which the wait above may cut short: never
                    # leave the TCP connection open (a flooding peer would keep its socket).
                    with contextlib.suppress(Exception):
                        ws.transport.abort()
                    self._fail_pending(error or Unreachable("connection lost", host=self.host))
            if self._closing:
                break
            self.last_error = error or Unreachable("connection lost", host=self.host)
            self._attempt_finished()
            if was_connected:
                self._emit(SessionUpdate(kind="disconnected", error=error))
            wait = delay
            if isinstance(error, (WrongCredentials, AuthRequired)):
                wait = max(wait, self.auth_failure_backoff)
            elif isinstance(error, (Throttled, Flooding)):
                wait = max(wait, error.retry_after)
            # Full jitter on the upper half: spread reconnects, never below half the delay.
            await asyncio.sleep(wait * (0.5 + 0.5 * self.rng.random()))
            delay = min(delay * 2, self.reconnect_max)

    async def _bootstrap(self, ws: ClientConnection) -> None:
        """GetDeviceInfo (arms notifications and gives the realm) then GetStatus."""
        async with self.gate:
            info = parse_shelly_info(await self._call_locked(ws, "Shelly.GetDeviceInfo", None, self.call_timeout))
            self.info = info
            self.device_id = info.auth_domain or info.device_id
            status = await self._call_locked(ws, "Shelly.GetStatus", None, self.call_timeout)
        if not isinstance(status, dict):
            raise ProtocolError("GetStatus result is not an object", host=self.host)
        self.status = status

    async def _reader(self, ws: ClientConnection) -> DeviceError:
        """Read frames until the socket dies or the device floods us; returns why it ended.
        Calls still waiting for a reply fail at once instead of running into their timeout."""
        error: DeviceError = Unreachable("websocket closed by the device", host=self.host)
        clock = asyncio.get_running_loop().time
        tokens = float(FRAME_BURST)
        last = clock()
        over_since: float | None = None  # when this stretch over budget began
        dropped_here = 0
        flooded = False
        try:
            async for message in ws:
                now = clock()
                tokens = min(float(FRAME_BURST), tokens + (now - last) * FRAME_RATE)
                last = now
                if tokens < 1.0:
                    # Dropped before parsing: the parse is what a flood would cost us.
                    self.frames_dropped += 1
                    dropped_here += 1
                    if over_since is None:
                        over_since = now
                    elif now - over_since >= FLOOD_CLOSE_AFTER:
                        flooded = True
                        error = self._flooding(dropped_here, now - over_since)
                        break
                    continue
                tokens -= 1.0
                if over_since is not None and tokens >= FRAME_BURST / 2:
                    over_since = None  # back within budget for a while: the stretch is over
                try:
                    frame = decode_frame(message)
                except ProtocolError:
                    self.bad_frames += 1
                    continue
                self._dispatch(ws, frame)
        except ConnectionClosed as exc:
            error = translate_ws_error(exc, self.host)
        finally:
            self._connected.clear()
            self._fail_pending(error)
        if not flooded:
            self._flood_level = 0
        return error

    # Counters of the frame budget (class defaults, per session once set): frames past the
    # budget, connections closed for flooding, floods in a row (sets the pause).
    frames_dropped = 0
    floods = 0
    _flood_level = 0

    def _flooding(self, dropped: int, seconds: float) -> Flooding:
        self.floods += 1
        wait = min(FLOOD_BACKOFF * (2 ** self._flood_level), FLOOD_BACKOFF_MAX)
        self._flood_level = min(self._flood_level + 1, 16)
        log.warning("%s sends more than %g messages/s; %d dropped in %.0f s; reconnecting in %.0f s",
                    self.device, FRAME_RATE, dropped, seconds, wait)
        return Flooding(f"sent far more than the {FRAME_RATE:g} messages a second homedash reads from one "
                        f"device ({dropped} dropped in {seconds:.0f} s); trying again in {wait:.0f} s",
                        retry_after=wait, host=self.host)

    def _dispatch(self, ws: ClientConnection, frame: dict[str, Any]) -> None:
        method = frame.get("method")
        fid = frame.get("id")
        if isinstance(method, str) and fid is not None and "result" not in frame and "error" not in frame:
            # The device asks *us* something; we serve no methods, but it expects a reply.
            self._spawn_reply(ws, fid, frame.get("src"))
            return
        if fid is not None and ("result" in frame or "error" in frame):
            future = self._pending.get(fid) if isinstance(fid, int) and not isinstance(fid, bool) else None
            if future is not None and not future.done():
                future.set_result(frame)
            return
        if method == "NotifyStatus" or method == "NotifyFullStatus":
            params = frame.get("params")
            if not isinstance(params, dict):
                self.bad_frames += 1
                return
            patch = {k: v for k, v in params.items() if k != "ts" and isinstance(k, str)}
            full = method == "NotifyFullStatus"
            if full:
                self.status = dict(list(patch.items())[:MAX_STATUS_KEYS])
            else:
                merge_status(self.status, patch)
            changed = tuple(k for k in patch if k in self.status)
            self._emit(
                SessionUpdate(
                    kind="status",
                    changed=changed,
                    channels=tuple(parse_rpc_status(self.status, changed)),
                    full=full,
                )
            )
        elif method == "NotifyEvent":
            events = parse_rpc_events(frame.get("params"), device=self.device)
            if events:
                self._emit(SessionUpdate(kind="event", events=tuple(events)))
        else:
            self.bad_frames += 1

    def _spawn_reply(self, ws: ClientConnection, fid: Any, dst: Any) -> None:
        reply = {
            "id": fid if isinstance(fid, (int, str)) and not isinstance(fid, bool) else None,
            "src": self.src,
            "dst": dst if isinstance(dst, str) else None,
            "error": {"code": -32601, "message": "Not implemented"},
        }

        async def send() -> None:
            with contextlib.suppress(Exception):
                await ws.send(json.dumps(reply))

        task = asyncio.get_running_loop().create_task(send())
        self._reply_tasks.add(task)
        task.add_done_callback(self._reply_tasks.discard)

    def _fail_pending(self, error: DeviceError) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
                # Mark retrieved: a call may already have given up on it.
                future.exception()
        self._pending.clear()

    # ---------------------------------------------------------- calls
    async def call(self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None) -> Any:
        """One RPC over the session (waits for the connection up to ``timeout``)."""
        timeout = self.call_timeout if timeout is None else timeout
        await self.wait_connected(timeout)
        ws = self._ws
        if ws is None:
            raise Unreachable("not connected", host=self.host)
        async with self.gate:
            return await self._call_locked(ws, method, params, timeout)

    async def _roundtrip(self, ws: ClientConnection, frame: dict[str, Any], timeout: float) -> dict[str, Any]:
        fid = frame["id"]
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[fid] = future
        try:
            await ws.send(json.dumps(frame, separators=(",", ":")))
            return await asyncio.wait_for(future, timeout)
        except TimeoutError as exc:
            raise DeviceTimeout(f"{frame.get('method')} got no reply in {timeout:g} s", host=self.host) from exc
        except ConnectionClosed as exc:
            raise translate_ws_error(exc, self.host) from exc
        finally:
            self._pending.pop(fid, None)

    async def _call_locked(self, ws: ClientConnection, method: str, params: dict[str, Any] | None, timeout: float) -> Any:
        auth_retries = 2  # first challenge + one re-challenge (expired nonce)
        throttle_left = self.throttle_retries
        while True:
            frame: dict[str, Any] = {"id": next(self._ids), "src": self.src, "method": method}
            if params is not None:
                frame["params"] = params
            sent_nonce = None
            if self.auth.ready:
                frame["auth"] = self.auth.auth_object()
                sent_nonce = frame["auth"]["nonce"]
            reply = await self._roundtrip(ws, frame, timeout)
            if "error" not in reply:
                self._throttle_level = 0
                return reply.get("result")
            error = as_dict(reply.get("error"))
            code = as_int(error.get("code"))
            if code == 401:
                if self.auth.password is None:
                    raise AuthRequired("device has a password; none configured", host=self.host)
                challenge = parse_ws_challenge(error.get("message"))
                if challenge is None:
                    raise ProtocolError("401 without a usable challenge", host=self.host)
                # Retry when this is the first challenge, when the device says our nonce
                # expired (fw 2.x: stale), or when pre-2.0 firmware (numeric nonces, no
                # failure counting) simply handed out a new nonce. A fw 2.x re-challenge
                # without stale means the answer was wrong: retrying would only add to the
                # device's failure count.
                renewed = isinstance(challenge.nonce, int) and challenge.nonce != sent_nonce
                fresh = sent_nonce is None or challenge.stale or renewed
                if fresh and auth_retries > 0:
                    auth_retries -= 1
                    self.auth.accept(challenge)
                    continue
                # Same nonce refused again: the password itself is wrong.
                self.auth.drop_nonce()
                raise WrongCredentials("password rejected", host=self.host)
            if code == 429:
                self.auth.drop_nonce()
                wait = min(self.throttle_backoff * (2 ** self._throttle_level), THROTTLE_MAX)
                self._throttle_level = min(self._throttle_level + 1, 8)
                if throttle_left > 0:
                    throttle_left -= 1
                    await asyncio.sleep(wait)
                    continue
                raise Throttled(as_str(error.get("message"), 128) or "too many requests", retry_after=wait, host=self.host)
            raise rpc_error_from(error, self.host)

    async def set_auth(self, new_password: str | None) -> None:
        """Change the password, then authenticate once with the new one: protected devices
        push notifications only to clients that authenticated since the change."""
        await super().set_auth(new_password)
        await self.refresh_status()

    async def refresh_status(self) -> dict[str, Any]:
        """Safety poll: replace the cache with a fresh GetStatus and publish what changed."""
        status = await self.get_status()
        changed = tuple(k for k in set(status) | set(self.status) if status.get(k) != self.status.get(k))
        self.status = status
        if changed:
            self._emit(SessionUpdate(kind="status", changed=changed, channels=tuple(parse_rpc_status(status, changed)), full=True))
        return status


__all__ = [
    "AUTH_FAILURE_BACKOFF",
    "AuthChallenge",
    "RECONNECT_MAX",
    "RECONNECT_MIN",
    "RPC_CALL_TIMEOUT",
    "RpcAuth",
    "RpcMethods",
    "SessionUpdate",
    "ShellyRpcHttp",
    "ShellyRpcSession",
    "THROTTLE_BACKOFF",
    "WS_HA2",
    "WS_MAX_SIZE",
    "WS_OPEN_TIMEOUT",
    "WS_PING_INTERVAL",
    "decode_frame",
    "digest_authorization",
    "merge_status",
    "parse_rpc_component",
    "parse_rpc_events",
    "parse_rpc_status",
    "parse_rpc_system",
    "parse_www_authenticate",
    "parse_ws_challenge",
    "rpc_error_from",
    "sha256_hex",
    "shelly_ha1",
    "translate_ws_error",
]
