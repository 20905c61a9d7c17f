"""Normalised values the drivers hand to the rest of homedash, and the small coercion
helpers every parser uses to read untrusted JSON.

Units are fixed here so nobody has to guess later: power W, energy **Wh**, voltage V,
current A, temperature °C, humidity/battery/position/brightness in percent, colour
temperature in kelvin, illuminance in lux.

The coercion helpers never raise: a device may send any JSON value in any field (the real
captures contain ``"is_valid": "true"``, ``"mac": "[MAC]"``, ``null`` where a number was
expected), so a field we cannot read becomes ``None`` rather than an exception.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

# Strings from devices end up in pages and logs; names are short on every real device, so
# anything longer is either a bug or hostile and gets cut.
MAX_TEXT = 256

Vendor = str  # "mystrom" | "shelly"


@dataclass(slots=True)
class DeviceInfo:
    """Who a device is. ``mac`` is the identity (12 upper-case hex digits) or None when the
    device did not report a usable one (anonymised captures, broken firmware)."""

    vendor: Vendor
    mac: str | None
    generation: int | None  # myStrom: 0; Shelly: 1..4
    model: str  # model code: "WS2", "106", "SHSW-25", "SNSW-001P16EU", ...
    model_name: str  # "WiFi Switch CH v2", "Shelly Plus 1PM", ... (model code if unknown)
    firmware: str
    name: str | None = None
    auth_enabled: bool = False
    type_code: int | None = None  # myStrom numeric type (101..122) when known
    kind: str = "generic"  # hint: switch, bulb, strip, button, pir, cover, light, meter, sensor, input...
    device_id: str | None = None  # Shelly id ("shellyplus1pm-441793d69718"): digest realm, RPC src
    auth_domain: str | None = None
    profile: str | None = None  # Shelly multi-profile devices ("cover", "switch", ...)
    sleeping: bool = False  # battery device that is off the network most of the time
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def is_rpc(self) -> bool:
        return self.vendor == "shelly" and (self.generation or 1) >= 2


@dataclass(slots=True, frozen=True)
class PhaseReading:
    """One phase of a three-phase meter."""

    phase: str  # "a", "b", "c"
    power_w: float | None = None
    apparent_power_va: float | None = None
    voltage_v: float | None = None
    current_a: float | None = None
    power_factor: float | None = None
    frequency_hz: float | None = None
    energy_wh: float | None = None
    returned_energy_wh: float | None = None


@dataclass(slots=True)
class ChannelState:
    """The state of one controllable or readable part of a device.

    ``key`` is stable per device ("relay", "switch:0", "cover:0", "light:0", "input:1",
    "temperature:0", "em:0", "relay:0", "roller:0", "emeter:2", ...). Every field is
    optional: a field is None when this channel (or this firmware) does not report it.
    """

    key: str
    kind: str  # switch, cover, light, sensor, input, meter, button
    on: bool | None = None
    power_w: float | None = None
    energy_wh: float | None = None
    returned_energy_wh: float | None = None
    voltage_v: float | None = None
    current_a: float | None = None
    power_factor: float | None = None
    frequency_hz: float | None = None
    temperature_c: float | None = None
    humidity_pct: float | None = None
    battery_pct: float | None = None
    battery_v: float | None = None
    external_power: bool | None = None
    position_pct: float | None = None
    moving: str | None = None  # opening, closing, stopped, open, closed, calibrating
    brightness_pct: float | None = None
    colour: tuple[float, ...] | None = None  # (h, s, v), (r, g, b) or (r, g, b, w)
    colour_mode: str | None = None  # hsv, rgb, rgbw, mono, white, cct
    color_temp_k: float | None = None
    motion: bool | None = None
    illuminance_lux: float | None = None
    alarm: bool | None = None  # smoke, flood, gas
    phases: tuple[PhaseReading, ...] | None = None
    source: str | None = None  # what last changed it, as the device says ("http", "WS_in"...)
    errors: tuple[str, ...] | None = None  # device-reported faults (overpower, overtemp...)


@dataclass(slots=True)
class SystemState:
    """Device-wide health values that are not a channel."""

    uptime_s: float | None = None
    unixtime: float | None = None
    sleeping: bool = False
    wakeup_period_s: float | None = None
    restart_required: bool | None = None
    update_available: str | None = None  # version string of an available stable update
    rssi_dbm: float | None = None
    ip: str | None = None
    cfg_rev: int | None = None


@dataclass(slots=True)
class Event:
    """Something that happened (not a state): a button press, an OTA step, a motion start."""

    device: str  # MAC or Shelly id, whatever the caller knows the device by
    channel: str  # channel key ("input:0", "sys", "relay:0")
    kind: str  # single, double, triple, long, single_long, long_single, btn_down, btn_up,
    # input_on, input_off, ota_begin, ota_progress, ota_success, ota_error, motion, ...
    value: Any = None
    ts: float = field(default_factory=time.time)  # our clock; device clocks may be uptime


@dataclass(slots=True)
class LogLine:
    """One line of a device's debug log."""

    device: str
    ts: float | None  # as the device says: epoch seconds or, right after boot, uptime
    level: int | None  # 0 error, 1 warn, 2 info, 3 debug, 4 verbose
    fd: int | None  # Shelly: 1 firmware, 101+ script consoles
    text: str
    truncated: bool = False
    received_at: float = field(default_factory=time.time)


# ----------------------------------------------------------------------------- coercion

_MAC_RE = re.compile(r"^[0-9A-F]{12}$")
_MAC_STRIP = re.compile(r"[:\-. ]")


def as_float(value: Any) -> float | None:
    """A finite float from a number or numeric string; None otherwise (bools included:
    ``True`` is not a reading)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        try:
            f = float(value)
        except (OverflowError, ValueError):
            return None
    elif isinstance(value, str) and 0 < len(value) <= 40:
        try:
            f = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return f if math.isfinite(f) else None


def as_int(value: Any) -> int | None:
    f = as_float(value)
    if f is None or abs(f) > 2**53:
        return None
    return int(f)


def as_bool(value: Any) -> bool | None:
    """Devices use true/false, 0/1 and, in places, "true"/"on" strings."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value in (0, 1):
            return bool(value)
        return None
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("true", "1", "on", "yes"):
            return True
        if v in ("false", "0", "off", "no"):
            return False
    return None


def as_str(value: Any, limit: int = MAX_TEXT) -> str | None:
    """A bounded string; numbers are accepted (firmware versions sometimes are)."""
    if isinstance(value, str):
        return value[:limit]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)[:limit]
    return None


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def clamp_pct(value: Any) -> float | None:
    f = as_float(value)
    if f is None:
        return None
    return min(100.0, max(0.0, f))


def normalise_mac(value: Any) -> str | None:
    """12 upper-case hex digits, or None. Accepts separators (Shelly ids, mDNS TXT)."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    mac = _MAC_STRIP.sub("", value).upper()
    return mac if _MAC_RE.match(mac) else None


def mac_from_shelly_id(device_id: Any) -> str | None:
    """``shellyplus1pm-441793d69718`` -> ``441793D69718`` (the realm/id ends in the MAC)."""
    if not isinstance(device_id, str):
        return None
    return normalise_mac(device_id.rsplit("-", 1)[-1])


__all__ = [
    "ChannelState",
    "DeviceInfo",
    "Event",
    "LogLine",
    "PhaseReading",
    "SystemState",
    "as_bool",
    "as_dict",
    "as_float",
    "as_int",
    "as_list",
    "as_str",
    "clamp_pct",
    "mac_from_shelly_id",
    "normalise_mac",
]
