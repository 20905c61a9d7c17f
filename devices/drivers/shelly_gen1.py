"""Shelly Gen1 ("block") devices over HTTP, plus the ``/shelly`` identification that every
Shelly generation answers.

Gen1 speaks plain HTTP GETs with query strings, optional HTTP Basic auth, and a ``/status``
document with arrays per channel type (``relays``, ``rollers``, ``lights``, ``meters``,
``emeters``, ``inputs``) and device-level sensors (``tmp``, ``hum``, ``bat``...). Meters
count energy in **watt-minutes**; emeters in Wh. Button presses are not pushed over HTTP:
they show up as an incremented ``inputs[N].event_cnt``, so ``gen1_events`` diffs two
consecutive polls.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from . import http
from .errors import AuthRequired, ProtocolError, Unsupported, WrongCredentials
from .gate import DeviceGate, gate_for
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
    mac_from_shelly_id,
    normalise_mac,
)

# Arrays longer than any real device are cut: a hostile /status cannot make us build
# thousands of channels.
MAX_CHANNELS = 16

# type code -> (name, kind hint)
GEN1_MODELS: dict[str, tuple[str, str]] = {
    "SHSW-1": ("Shelly 1", "switch"),
    "SHSW-PM": ("Shelly 1PM", "switch"),
    "SHSW-L": ("Shelly 1L", "switch"),
    "SHSW-21": ("Shelly 2", "switch"),
    "SHSW-22": ("Shelly HD", "switch"),
    "SHSW-25": ("Shelly 2.5", "switch"),
    "SHSW-44": ("Shelly 4Pro", "switch"),
    "SHPLG-S": ("Shelly Plug S", "switch"),
    "SHPLG-1": ("Shelly Plug", "switch"),
    "SHPLG2-1": ("Shelly Plug E", "switch"),
    "SHPLG-U1": ("Shelly Plug US", "switch"),
    "SHUNI-1": ("Shelly UNI", "switch"),
    "SHDM-1": ("Shelly Dimmer", "light"),
    "SHDM-2": ("Shelly Dimmer 2", "light"),
    "SHRGBW2": ("Shelly RGBW2", "light"),
    "SHBDUO-1": ("Shelly Duo", "light"),
    "SHVIN-1": ("Shelly Vintage", "light"),
    "SHBLB-1": ("Shelly Bulb", "light"),
    "SHCB-1": ("Shelly Bulb RGBW", "light"),
    "SHEM": ("Shelly EM", "meter"),
    "SHEM-3": ("Shelly 3EM", "meter"),
    "SHIX3-1": ("Shelly i3", "input"),
    "SHHT-1": ("Shelly H&T", "sensor"),
    "SHWT-1": ("Shelly Flood", "sensor"),
    "SHDW-1": ("Shelly Door/Window", "sensor"),
    "SHDW-2": ("Shelly Door/Window 2", "sensor"),
    "SHSM-01": ("Shelly Smoke", "sensor"),
    "SHGS-1": ("Shelly Gas", "sensor"),
    "SHMOS-01": ("Shelly Motion", "sensor"),
    "SHMOS-02": ("Shelly Motion 2", "sensor"),
    "SHTRV-01": ("Shelly TRV", "sensor"),
    "SHBTN-1": ("Shelly Button1", "button"),
    "SHBTN-2": ("Shelly Button1", "button"),
    "SHSEN-1": ("Shelly Sense", "sensor"),
}
GEN1_SLEEPERS = frozenset({"SHHT-1", "SHWT-1", "SHDW-1", "SHDW-2", "SHSM-01", "SHBTN-1", "SHBTN-2", "SHTRV-01"})

# Gen2+ model code -> name (the common ones; unknown models show their code).
RPC_MODELS: dict[str, str] = {
    "SNSW-001X16EU": "Shelly Plus 1",
    "SNSW-001P16EU": "Shelly Plus 1PM",
    "SNSW-001X8EU": "Shelly Plus 1 Mini",
    "SNSW-001P8EU": "Shelly Plus 1PM Mini",
    "SNSW-002P16EU": "Shelly Plus 2PM",
    "SNSW-102P16EU": "Shelly Plus 2PM",
    "SNPL-00112EU": "Shelly Plus Plug S",
    "SNPL-00110IT": "Shelly Plus Plug IT",
    "SNPL-00112UK": "Shelly Plus Plug UK",
    "SNPL-00116US": "Shelly Plus Plug US",
    "SNSN-0013A": "Shelly Plus H&T",
    "SNSN-0024X": "Shelly Plus i4",
    "SNSN-0D24X": "Shelly Plus i4DC",
    "SNSN-0031Z": "Shelly Plus Smoke",
    "SNDM-0013US": "Shelly Plus Wall Dimmer",
    "SNDM-00100WW": "Shelly Plus 0-10V Dimmer",
    "SNDC-0D4P10WW": "Shelly Plus RGBW PM",
    "SPSW-001XE16EU": "Shelly Pro 1",
    "SPSW-001PE16EU": "Shelly Pro 1PM",
    "SPSW-201PE16EU": "Shelly Pro 1PM",
    "SPSW-002PE16EU": "Shelly Pro 2PM",
    "SPSW-102PE16EU": "Shelly Pro 2PM",
    "SPSW-202PE16EU": "Shelly Pro 2PM",
    "SPSW-003XE16EU": "Shelly Pro 3",
    "SPSW-004PE16EU": "Shelly Pro 4PM",
    "SPSW-104PE16EU": "Shelly Pro 4PM",
    "SPSW-204PE16EU": "Shelly Pro 4PM",
    "SPEM-003CEBEU": "Shelly Pro 3EM",
    "SPEM-002CEBEU50": "Shelly Pro EM-50",
    "SPDM-001PE01EU": "Shelly Pro Dimmer 1PM",
    "SPDM-002PE01EU": "Shelly Pro Dimmer 2PM",
    "SPDC-0D5PE16EU": "Shelly Pro RGBWW PM",
    "SAWD-0A1XX10EU1": "Shelly Wall Display",
    "SNGW-BT01": "Shelly BLU Gateway",
    "S3SW-001X16EU": "Shelly 1 Gen3",
    "S3SW-001P16EU": "Shelly 1PM Gen3",
    "S3SW-001X8EU": "Shelly 1 Mini Gen3",
    "S3SW-001P8EU": "Shelly 1PM Mini Gen3",
    "S3SW-002P16EU": "Shelly 2PM Gen3",
    "S3SW-0A2X4EUL": "Shelly 2L Gen3",
    "S3PM-001PCEU16": "Shelly PM Mini Gen3",
    "S3PL-00112EU": "Shelly Plug S Gen3",
    "S3PL-20112EU": "Shelly Outdoor Plug S Gen3",
    "S3SN-0U12A": "Shelly H&T Gen3",
    "S3SN-0024X": "Shelly i4 Gen3",
    "S3SH-0A2P4EU": "Shelly Shutter",
    "S3EM-002CXCEU": "Shelly EM Gen3",
    "S3EM-003CXCEU63": "Shelly 3EM-63 Gen3",
    "S3DM-0A101WWL": "Shelly Dimmer Gen3",
    "S3GW-1DBT001": "Shelly BLU Gateway Gen3",
    "S4SW-001X16EU": "Shelly 1 Gen4",
    "S4SW-001P16EU": "Shelly 1PM Gen4",
    "S4SW-001X8EU": "Shelly 1 Mini Gen4",
    "S4SW-001P8EU": "Shelly 1PM Mini Gen4",
    "S4SW-002P16EU": "Shelly 2PM Gen4",
    "S4PL-00416EU": "Shelly Power Strip 4 Gen4",
    "S4EM-001PXCEU16": "Shelly EM Mini Gen4",
    "S4SN-0071A": "Shelly Flood Gen4",
}
RPC_SLEEPER_MODELS = frozenset({"SNSN-0013A", "SNSN-0031Z", "S3SN-0U12A", "S4SN-0071A"})

# Gen1 input event letters -> our event kinds.
GEN1_INPUT_EVENTS = {
    "S": "single",
    "SS": "double",
    "SSS": "triple",
    "L": "long",
    "SL": "single_long",
    "LS": "long_single",
}


# ----------------------------------------------------------------------------- /shelly


_RPC_KIND_BY_PREFIX = (
    (("SPEM", "S3EM", "S4EM", "S3PM"), "meter"),
    (("SPDM", "SNDM", "S3DM", "SNDC", "SPDC"), "light"),
    (("S3SH",), "cover"),
    (("SNSN-0024X", "SNSN-0D24X", "S3SN-0024X"), "input"),
    (("SNSN", "S3SN", "S4SN"), "sensor"),
    (("SNGW", "S3GW"), "generic"),
)


def _rpc_kind(model: str, app: str, profile: str | None) -> str:
    """A display hint only; the channels a device really has come from its status."""
    if profile == "cover":
        return "cover"
    if profile in ("light", "rgb", "rgbw", "rgbcct", "cct"):
        return "light"
    if profile in ("triphase", "monophase"):
        return "meter"
    for prefixes, kind in _RPC_KIND_BY_PREFIX:
        if model.startswith(prefixes):
            return kind
    a = app.lower()
    if any(w in a for w in ("dimmer", "rgb", "bulb")):
        return "light"
    if a.startswith(("proem", "pro3em", "miniem", "minipm")) or a.endswith(("emg3", "emg4")):
        return "meter"
    return "switch"


def parse_shelly_info(data: Any) -> DeviceInfo:
    """``GET /shelly`` of any generation (for Gen2+ identical to ``Shelly.GetDeviceInfo``).

    No ``gen`` key means Gen1; any ``gen >= 2`` speaks RPC (code that tests ``gen == 2``
    broke on Gen3).
    """
    if not isinstance(data, dict):
        raise ProtocolError("/shelly reply is not a JSON object")
    if "gen" not in data:
        model = as_str(data.get("type"), 32)
        if not model:
            raise ProtocolError("/shelly reply has neither gen nor type: not a Shelly")
        name, kind = GEN1_MODELS.get(model, (model, "generic"))
        if model == "SHSW-25" and data.get("mode") == "roller":
            kind = "cover"
        sleeping = as_bool(data.get("sleep_mode")) is True or model in GEN1_SLEEPERS
        return DeviceInfo(
            vendor="shelly",
            mac=normalise_mac(data.get("mac")),
            generation=1,
            model=model,
            model_name=name,
            firmware=as_str(data.get("fw"), 64) or "",
            name=as_str(data.get("name")) or None,
            auth_enabled=as_bool(data.get("auth")) is True,
            kind=kind,
            profile=as_str(data.get("mode"), 16),
            sleeping=sleeping,
            raw=data,
        )
    gen = as_int(data.get("gen"))
    if gen is None or gen < 2:
        raise ProtocolError(f"/shelly reply has an unusable gen {str(data.get('gen'))[:16]!r}")
    model = as_str(data.get("model"), 32) or ""
    app = as_str(data.get("app"), 32) or ""
    device_id = as_str(data.get("id"), 64)
    profile = as_str(data.get("profile"), 16)
    return DeviceInfo(
        vendor="shelly",
        mac=normalise_mac(data.get("mac")) or mac_from_shelly_id(device_id),
        generation=gen,
        model=model or app or "unknown",
        model_name=RPC_MODELS.get(model) or (f"Shelly {app}" if app else model or "Shelly"),
        firmware=as_str(data.get("ver"), 64) or as_str(data.get("fw_id"), 64) or "",
        name=as_str(data.get("name")) or None,
        auth_enabled=as_bool(data.get("auth_en")) is True,
        kind=_rpc_kind(model, app, profile),
        device_id=device_id,
        # The Wall Display has no auth_domain; its realm is the id (aioshelly PR #640).
        auth_domain=as_str(data.get("auth_domain"), 64) or device_id,
        profile=profile,
        sleeping=model in RPC_SLEEPER_MODELS,
        raw=data,
    )


# ----------------------------------------------------------------------------- /status


def _valid(obj: dict[str, Any]) -> bool:
    # is_valid arrives as bool or as the string "true" (RGBW2 meters); missing means valid.
    return as_bool(obj.get("is_valid")) is not False


def _meter_energy_wh(meter: dict[str, Any]) -> float | None:
    total = as_float(meter.get("total"))
    return total / 60.0 if total is not None else None  # watt-minutes -> Wh


def _errors(obj: dict[str, Any]) -> tuple[str, ...] | None:
    found = tuple(
        name for name in ("overpower", "overtemperature", "overvoltage", "safety_switch")
        if as_bool(obj.get(name)) is True
    )
    return found or None


def _gen1_light(i: int, light: dict[str, Any]) -> ChannelState:
    mode = as_str(light.get("mode"), 16)
    state = ChannelState(
        key=f"light:{i}",
        kind="light",
        on=as_bool(light.get("ison")),
        power_w=as_float(light.get("power")),
        source=as_str(light.get("source"), 32),
        errors=_errors(light),
    )
    if mode == "color":
        rgbw = tuple(as_float(light.get(c)) for c in ("red", "green", "blue", "white"))
        if all(v is not None for v in rgbw):
            state.colour = tuple(float(v) for v in rgbw)  # type: ignore[arg-type]
        state.colour_mode = "rgbw"
        state.brightness_pct = clamp_pct(light.get("gain"))
    else:
        state.colour_mode = "white" if mode == "white" or "temp" in light else None
        state.brightness_pct = clamp_pct(light.get("brightness"))
        state.color_temp_k = as_float(light.get("temp"))
    return state


def _sensor_channel(status: dict[str, Any], device_temp: float | None) -> ChannelState | None:
    """Battery sensors and the like keep their readings at the top level of /status."""
    hum = as_dict(status.get("hum"))
    bat = as_dict(status.get("bat"))
    lux = as_dict(status.get("lux"))
    sensor = as_dict(status.get("sensor"))
    gas = as_dict(status.get("gas_sensor"))
    alarm: bool | None = None
    if "flood" in status:
        alarm = as_bool(status.get("flood"))
    elif "smoke" in status:
        alarm = as_bool(status.get("smoke"))
    elif gas:
        state = as_str(gas.get("alarm_state"), 16)
        alarm = None if state is None else state not in ("none", "unknown")
    state = ChannelState(
        key="sensor:0",
        kind="sensor",
        temperature_c=device_temp,
        humidity_pct=clamp_pct(hum.get("value")) if hum and _valid(hum) else None,
        battery_pct=clamp_pct(bat.get("value")),
        battery_v=as_float(bat.get("voltage")),
        illuminance_lux=as_float(lux.get("value")) if lux and _valid(lux) else None,
        motion=as_bool(sensor.get("motion")) if sensor else None,
        alarm=alarm,
    )
    if all(
        getattr(state, f) is None
        for f in ("temperature_c", "humidity_pct", "battery_pct", "battery_v", "illuminance_lux", "motion", "alarm")
    ):
        return None
    return state


def parse_gen1_status(status: Any) -> list[ChannelState]:
    """Gen1 ``/status`` -> channels. Meter readings are attached to the output they
    measure when the arrays pair up one to one; otherwise they become meter channels."""
    if not isinstance(status, dict):
        raise ProtocolError("Gen1 status is not a JSON object")
    relays = [as_dict(r) for r in as_list(status.get("relays"))[:MAX_CHANNELS]]
    rollers = [as_dict(r) for r in as_list(status.get("rollers"))[:MAX_CHANNELS]]
    lights = [as_dict(r) for r in as_list(status.get("lights"))[:MAX_CHANNELS]]
    meters = [as_dict(r) for r in as_list(status.get("meters"))[:MAX_CHANNELS]]
    emeters = [as_dict(r) for r in as_list(status.get("emeters"))[:MAX_CHANNELS]]
    inputs = [as_dict(r) for r in as_list(status.get("inputs"))[:MAX_CHANNELS]]

    tmp = as_dict(status.get("tmp"))
    device_temp = as_float(tmp.get("tC")) if tmp and _valid(tmp) else as_float(status.get("temperature"))
    channels: list[ChannelState] = []
    used_meters = False

    if rollers:
        # 2.5 in roller mode: its relays drive the motor and are not channels of their own;
        # both meters measure the same motor.
        energy = [e for e in (_meter_energy_wh(m) for m in meters) if e is not None]
        for i, roller in enumerate(rollers):
            state = as_str(roller.get("state"), 16)
            positioning = as_bool(roller.get("positioning")) is True
            channels.append(
                ChannelState(
                    key=f"roller:{i}",
                    kind="cover",
                    power_w=as_float(roller.get("power")),
                    energy_wh=sum(energy) if energy and len(rollers) == 1 else None,
                    temperature_c=device_temp,
                    position_pct=clamp_pct(roller.get("current_pos")) if positioning else None,
                    moving={"open": "opening", "close": "closing", "stop": "stopped"}.get(state or "", state),
                    source=as_str(roller.get("source"), 32),
                    errors=_errors(roller),
                )
            )
        used_meters = True
    else:
        outputs: list[ChannelState] = []
        for i, relay in enumerate(relays):
            outputs.append(
                ChannelState(
                    key=f"relay:{i}",
                    kind="switch",
                    on=as_bool(relay.get("ison")),
                    temperature_c=device_temp,
                    source=as_str(relay.get("source"), 32),
                    errors=_errors(relay),
                )
            )
        for i, light in enumerate(lights):
            ch = _gen1_light(i, light)
            ch.temperature_c = device_temp
            outputs.append(ch)
        if outputs and len(meters) == len(outputs):
            for ch, meter in zip(outputs, meters):
                if _valid(meter):
                    ch.power_w = as_float(meter.get("power"))
                    ch.energy_wh = _meter_energy_wh(meter)
            used_meters = True
        elif outputs and meters and len(outputs) > len(meters) and lights and not relays:
            # RGBW2 in white mode reports power per light itself.
            used_meters = False
        channels.extend(outputs)

    if meters and not used_meters:
        for i, meter in enumerate(meters):
            channels.append(
                ChannelState(
                    key=f"meter:{i}",
                    kind="meter",
                    power_w=as_float(meter.get("power")) if _valid(meter) else None,
                    energy_wh=_meter_energy_wh(meter),
                )
            )

    if len(emeters) == 3:
        # 3EM: one three-phase meter, shaped like the Gen2 em:0 component.
        phases = []
        for letter, em in zip("abc", emeters):
            phases.append(
                PhaseReading(
                    phase=letter,
                    power_w=as_float(em.get("power")),
                    voltage_v=as_float(em.get("voltage")),
                    current_a=as_float(em.get("current")),
                    power_factor=as_float(em.get("pf")),
                    energy_wh=as_float(em.get("total")),
                    returned_energy_wh=as_float(em.get("total_returned")),
                )
            )
        powers = [p.power_w for p in phases if p.power_w is not None]
        energies = [p.energy_wh for p in phases if p.energy_wh is not None]
        returned = [p.returned_energy_wh for p in phases if p.returned_energy_wh is not None]
        currents = [p.current_a for p in phases if p.current_a is not None]
        channels.append(
            ChannelState(
                key="em:0",
                kind="meter",
                power_w=as_float(status.get("total_power")) if "total_power" in status else (sum(powers) if powers else None),
                energy_wh=sum(energies) if energies else None,
                returned_energy_wh=sum(returned) if returned else None,
                current_a=sum(currents) if currents else None,
                phases=tuple(phases),
            )
        )
    else:
        for i, em in enumerate(emeters):
            channels.append(
                ChannelState(
                    key=f"emeter:{i}",
                    kind="meter",
                    power_w=as_float(em.get("power")),
                    voltage_v=as_float(em.get("voltage")),
                    current_a=as_float(em.get("current")),
                    power_factor=as_float(em.get("pf")),
                    energy_wh=as_float(em.get("total")),
                    returned_energy_wh=as_float(em.get("total_returned")),
                )
            )

    for i, inp in enumerate(inputs):
        channels.append(ChannelState(key=f"input:{i}", kind="input", on=as_bool(inp.get("input"))))

    for key, field_name in (("ext_temperature", "tC"), ("ext_humidity", "hum")):
        ext = status.get(key)
        if isinstance(ext, dict):
            for idx, reading in list(ext.items())[:MAX_CHANNELS]:
                r = as_dict(reading)
                value = as_float(r.get(field_name))
                if value is None:
                    continue
                ch = ChannelState(key=f"{key}:{str(idx)[:4]}", kind="sensor")
                if key == "ext_temperature":
                    ch.temperature_c = value
                else:
                    ch.humidity_pct = clamp_pct(value)
                channels.append(ch)

    if not relays and not rollers and not lights:
        sensor = _sensor_channel(status, device_temp)
        if sensor is not None:
            channels.append(sensor)
    return channels


def parse_gen1_system(status: Any) -> SystemState:
    if not isinstance(status, dict):
        raise ProtocolError("Gen1 status is not a JSON object")
    update = as_dict(status.get("update"))
    wifi = as_dict(status.get("wifi_sta"))
    has_update = as_bool(update.get("has_update"))
    if has_update is None:
        has_update = as_bool(status.get("has_update"))
    return SystemState(
        uptime_s=as_float(status.get("uptime")),
        unixtime=as_float(status.get("unixtime")),
        update_available=(as_str(update.get("new_version"), 64) or "yes") if has_update else None,
        rssi_dbm=as_float(wifi.get("rssi")),
        ip=as_str(wifi.get("ip"), 64),
        cfg_rev=as_int(status.get("cfg_changed_cnt")),
    )


def gen1_events(prev_status: Any, new_status: Any, *, device: str = "", ts: float | None = None) -> list[Event]:
    """Press and input events between two Gen1 polls.

    A press is an increased ``event_cnt`` (several presses between polls collapse into the
    last one, with the count as the value). A change of the ``input`` level becomes
    input_on/input_off. A counter that went down is a reboot, not a press.
    """
    if not isinstance(prev_status, dict) or not isinstance(new_status, dict):
        return []
    when = time.time() if ts is None else ts
    before = as_list(prev_status.get("inputs"))[:MAX_CHANNELS]
    after = as_list(new_status.get("inputs"))[:MAX_CHANNELS]
    events: list[Event] = []
    for i, (old, new) in enumerate(zip(before, after)):
        old_d, new_d = as_dict(old), as_dict(new)
        key = f"input:{i}"
        old_cnt, new_cnt = as_int(old_d.get("event_cnt")), as_int(new_d.get("event_cnt"))
        if old_cnt is not None and new_cnt is not None and new_cnt > old_cnt:
            letters = as_str(new_d.get("event"), 8) or ""
            kind = GEN1_INPUT_EVENTS.get(letters)
            if kind is not None:
                events.append(Event(device=device, channel=key, kind=kind, value=new_cnt - old_cnt, ts=when))
        old_in, new_in = as_bool(old_d.get("input")), as_bool(new_d.get("input"))
        if old_in is not None and new_in is not None and old_in != new_in:
            events.append(Event(device=device, channel=key, kind="input_on" if new_in else "input_off", ts=when))
    return events


# ----------------------------------------------------------------------------- client


@dataclass(slots=True)
class Gen1Poll:
    """One ``/status`` poll: channels, events since the previous poll, health, raw."""

    channels: list[ChannelState]
    events: list[Event]
    system: SystemState
    raw: dict[str, Any] = field(repr=False, default_factory=dict)


def _index(channel: int) -> int:
    if not isinstance(channel, int) or isinstance(channel, bool) or not 0 <= channel < MAX_CHANNELS:
        raise ValueError(f"channel must be 0..{MAX_CHANNELS - 1}")
    return channel


def _pct(name: str, value: float) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
        raise ValueError(f"{name} must be within 0..100")
    return round(value)


class ShellyGen1:
    """One Gen1 device. Requests are serialised; HTTP Basic auth when a password is set."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        host: str,
        port: int = 80,
        *,
        username: str = "admin",
        password: str | None = None,
        device: str = "",
        gate: DeviceGate | None = None,
    ) -> None:
        self.client = client
        self.host = host
        self.port = port
        self.base = http.base_url(host, port)
        self.device = device or host
        self._auth = httpx.BasicAuth(username, password) if password else None
        # The device's one turn, shared with every other driver of it in this process.
        self.gate = gate if gate is not None else gate_for(mac=device or None, host=host, port=port)
        self._last_status: dict[str, Any] | None = None

    def set_credentials(self, username: str = "admin", password: str | None = None) -> None:
        self._auth = httpx.BasicAuth(username, password) if password else None

    async def _get(self, path: str, params: dict[str, Any] | None = None, *, auth: bool = True) -> Any:
        reply = await http.request(
            self.client, "GET", self.base + path, host=self.host, params=params,
            auth=self._auth if auth else None,
        )
        if reply.status == 401:
            if self._auth is None:
                raise AuthRequired("device has a login; no password configured", host=self.host)
            raise WrongCredentials("username or password rejected", host=self.host)
        if reply.status == 404:
            raise Unsupported(f"{path} not available on this device", host=self.host)
        if reply.status != 200:
            text = reply.body[:80].decode("utf-8", "replace")
            raise ProtocolError(f"HTTP {reply.status} on {path}: {text}", status=reply.status, host=self.host)
        try:
            return reply.json()
        except ProtocolError as exc:
            raise ProtocolError(f"{path}: {exc.message}", status=reply.status, host=self.host) from exc

    async def shelly(self) -> DeviceInfo:
        """``/shelly`` - never needs auth."""
        async with self.gate:
            data = await self._get("/shelly", auth=False)
        try:
            return parse_shelly_info(data)
        except ProtocolError as exc:
            raise ProtocolError(exc.message, host=self.host) from exc

    async def status(self) -> dict[str, Any]:
        async with self.gate:
            data = await self._get("/status")
        if not isinstance(data, dict):
            raise ProtocolError("status is not a JSON object", host=self.host)
        return data

    async def settings(self) -> dict[str, Any]:
        async with self.gate:
            data = await self._get("/settings")
        if not isinstance(data, dict):
            raise ProtocolError("settings is not a JSON object", host=self.host)
        return data

    async def poll(self) -> Gen1Poll:
        """``/status`` -> channels plus the events since the previous ``poll``."""
        status = await self.status()
        events = gen1_events(self._last_status, status, device=self.device)
        self._last_status = status
        return Gen1Poll(
            channels=parse_gen1_status(status),
            events=events,
            system=parse_gen1_system(status),
            raw=status,
        )

    async def channels(self) -> list[ChannelState]:
        return parse_gen1_status(await self.status())

    async def _command(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        async with self.gate:
            data = await self._get(path, params)
        if not isinstance(data, dict):
            raise ProtocolError(f"{path} reply is not a JSON object", host=self.host)
        return data

    async def relay(self, channel: int, turn: str, *, timer: float | None = None) -> ChannelState:
        """``turn``: on, off or toggle; ``timer`` flips it back after that many seconds."""
        i = _index(channel)
        if turn not in ("on", "off", "toggle"):
            raise ValueError("turn must be on, off or toggle")
        params: dict[str, Any] = {"turn": turn}
        if timer is not None:
            if isinstance(timer, bool) or not isinstance(timer, (int, float)) or not 0 < timer <= 86400:
                raise ValueError("timer must be 0 < s <= 86400")
            params["timer"] = f"{timer:g}"
        data = await self._command(f"/relay/{i}", params)
        return ChannelState(
            key=f"relay:{i}",
            kind="switch",
            on=as_bool(data.get("ison")),
            source=as_str(data.get("source"), 32),
            errors=_errors(data),
        )

    async def roller(
        self, channel: int, go: str, *, position: float | None = None, duration: float | None = None
    ) -> ChannelState:
        """``go``: open, close, stop or to_pos (with ``position`` 0..100)."""
        i = _index(channel)
        if go not in ("open", "close", "stop", "to_pos"):
            raise ValueError("go must be open, close, stop or to_pos")
        params: dict[str, Any] = {"go": go}
        if go == "to_pos":
            if position is None:
                raise ValueError("to_pos needs a position")
            params["roller_pos"] = str(_pct("position", position))
        if duration is not None:
            if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not 0 < duration <= 300:
                raise ValueError("duration must be 0 < s <= 300")
            params["duration"] = f"{duration:g}"
        data = await self._command(f"/roller/{i}", params)
        state = as_str(data.get("state"), 16)
        positioning = as_bool(data.get("positioning")) is True
        return ChannelState(
            key=f"roller:{i}",
            kind="cover",
            power_w=as_float(data.get("power")),
            position_pct=clamp_pct(data.get("current_pos")) if positioning else None,
            moving={"open": "opening", "close": "closing", "stop": "stopped"}.get(state or "", state),
            source=as_str(data.get("source"), 32),
        )

    async def light(
        self,
        channel: int,
        *,
        turn: str | None = None,
        brightness: float | None = None,
        temp_k: int | None = None,
        transition_ms: int | None = None,
        path: str = "light",
    ) -> ChannelState:
        """Dimmer, bulb, Duo, Vintage (``path="light"``) or RGBW2 white mode
        (``path="white"``): on/off/toggle, brightness 0..100, colour temperature."""
        i = _index(channel)
        if path not in ("light", "white"):
            raise ValueError("path must be light or white")
        params = self._light_params(turn, transition_ms)
        if brightness is not None:
            params["brightness"] = str(_pct("brightness", brightness))
        if temp_k is not None:
            if not isinstance(temp_k, int) or not 2700 <= temp_k <= 6500:
                raise ValueError("temp_k must be 2700..6500")
            params["temp"] = str(temp_k)
        if not params:
            raise ValueError("nothing to set")
        return _gen1_light(i, await self._command(f"/{path}/{i}", params))

    async def white(self, channel: int, **kw: Any) -> ChannelState:
        return await self.light(channel, path="white", **kw)

    async def color(
        self,
        channel: int,
        *,
        turn: str | None = None,
        rgb: tuple[int, int, int] | None = None,
        white: int | None = None,
        gain: float | None = None,
        transition_ms: int | None = None,
    ) -> ChannelState:
        """RGBW2 colour mode / Bulb RGBW: channel bytes 0..255, gain 0..100."""
        i = _index(channel)
        params = self._light_params(turn, transition_ms)
        if rgb is not None:
            for name, value in zip(("red", "green", "blue"), rgb):
                if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 255:
                    raise ValueError(f"{name} must be 0..255")
                params[name] = str(value)
        if white is not None:
            if not isinstance(white, int) or isinstance(white, bool) or not 0 <= white <= 255:
                raise ValueError("white must be 0..255")
            params["white"] = str(white)
        if gain is not None:
            params["gain"] = str(_pct("gain", gain))
        if not params:
            raise ValueError("nothing to set")
        return _gen1_light(i, await self._command(f"/color/{i}", params))

    @staticmethod
    def _light_params(turn: str | None, transition_ms: int | None) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if turn is not None:
            if turn not in ("on", "off", "toggle"):
                raise ValueError("turn must be on, off or toggle")
            params["turn"] = turn
        if transition_ms is not None:
            if not isinstance(transition_ms, int) or not 0 <= transition_ms <= 5000:
                raise ValueError("transition_ms must be 0..5000")
            params["transition"] = str(transition_ms)
        return params

    async def reboot(self) -> None:
        await self._command("/reboot", {})

    async def update_firmware(self) -> None:
        await self._command("/ota", {"update": "true"})


__all__ = [
    "GEN1_INPUT_EVENTS",
    "GEN1_MODELS",
    "Gen1Poll",
    "RPC_MODELS",
    "ShellyGen1",
    "gen1_events",
    "parse_gen1_status",
    "parse_gen1_system",
    "parse_shelly_info",
]
