"""Simulated Shelly Gen1 devices: 1PM, 2.5 (roller or relay mode), Plug S, Dimmer 2,
RGBW2 (colour or white mode) and the sleeping H&T.

HTTP follows ``../shared/reference/shelly.md`` §2 and the real captures (same keys, same
JSON types -- down to the RGBW2 reporting ``"is_valid":"true"`` as a string), with HTTP
Basic auth when a password is set and ``/shelly`` always open. CoIoT is real CoAP over
UDP: ``cit/d`` and ``cit/s`` requests are answered (code 69, options 3332 device id, 3412
validity, 3420 serial) on the device's own address, and status messages (code 30) go to
a configured CoIoT peer on every change and every ``update_period`` -- loopback only,
never multicast.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import web

from .base import Appliance, SimDevice, check_send_target, json_response

log = logging.getLogger(__name__)

COAP_PORT = 5683
UPDATE_PERIOD = 15.0          # CoIoT status period of mains devices (settings.coiot.update_period)
COIOT_VERSION = 2
OPT_URI_PATH = 11
OPT_DEVICE_ID = 3332
OPT_VALIDITY = 3412
OPT_SERIAL = 3420
CODE_GET = 1
CODE_CONTENT = 69             # 2.05, replies to cit/d and cit/s
CODE_STATUS = 30              # Shelly's non-standard "0.30" periodic status
TYPE_CON, TYPE_NON, TYPE_ACK = 0, 1, 2

FW_DATE = "20230913"
EVENT_CODES = {"single": "S", "double": "SS", "triple": "SSS", "long": "L",
               "single_long": "SL", "long_single": "LS"}
HOME_NETWORKS = ("Stube", "Chalet-Sonnenberg", "Wohnung 3B", "Casa-Lago", "Heimnetz")


# --------------------------------------------------------------------------- CoAP framing
def _option_nibble(value: int) -> tuple[int, bytes]:
    if value < 13:
        return value, b""
    if value < 269:
        return 13, bytes((value - 13,))
    return 14, struct.pack("!H", value - 269)


def coap_encode(code: int, mid: int, options: list[tuple[int, bytes]], payload: bytes,
                *, mtype: int = TYPE_NON, token: bytes = b"") -> bytes:
    """One CoAP message (RFC 7252 framing), options sorted by number, delta-encoded."""
    out = bytearray(((1 << 6) | (mtype << 4) | len(token), code))
    out += struct.pack("!H", mid & 0xFFFF) + token
    previous = 0
    for number, value in sorted(options, key=lambda o: o[0]):
        delta, delta_ext = _option_nibble(number - previous)
        length, length_ext = _option_nibble(len(value))
        out.append((delta << 4) | length)
        out += delta_ext + length_ext + value
        previous = number
    if payload:
        out += b"\xff" + payload
    return bytes(out)


@dataclass
class CoapRequest:
    mtype: int
    code: int
    mid: int
    token: bytes
    path: str
    options: dict[int, list[bytes]] = field(default_factory=dict)


def coap_decode(data: bytes) -> CoapRequest | None:
    """Parse a request; None for anything malformed (a device just ignores it)."""
    if len(data) < 4 or data[0] >> 6 != 1:
        return None
    mtype, tkl, code = (data[0] >> 4) & 0x3, data[0] & 0x0F, data[1]
    mid = struct.unpack("!H", data[2:4])[0]
    if tkl > 8 or len(data) < 4 + tkl:
        return None
    token, rest = data[4 : 4 + tkl], data[4 + tkl :]
    options: dict[int, list[bytes]] = {}
    number = 0
    while rest and rest[0] != 0xFF:
        delta, length, rest = rest[0] >> 4, rest[0] & 0x0F, rest[1:]
        values = []
        for nibble in (delta, length):
            if nibble == 13:
                if not rest:
                    return None
                values.append(rest[0] + 13)
                rest = rest[1:]
            elif nibble == 14:
                if len(rest) < 2:
                    return None
                values.append(struct.unpack("!H", rest[:2])[0] + 269)
                rest = rest[2:]
            elif nibble == 15:
                return None
            else:
                values.append(nibble)
        number += values[0]
        if len(rest) < values[1]:
            return None
        options.setdefault(number, []).append(rest[: values[1]])
        rest = rest[values[1] :]
    path = "/".join(p.decode(errors="replace") for p in options.get(OPT_URI_PATH, []))
    return CoapRequest(mtype, code, mid, token, path, options)


class _CoapEndpoint(asyncio.DatagramProtocol):
    def __init__(self, device: ShellyGen1) -> None:
        self.device = device
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.device.coap_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("CoAP socket error: %s", exc)


# --------------------------------------------------------------------------- channels
@dataclass
class Input:
    level: int = 0
    event: str = ""
    event_cnt: int = 0

    def status(self) -> dict[str, Any]:
        return {"input": self.level, "event": self.event, "event_cnt": self.event_cnt}


@dataclass
class Timer:
    """An auto flip-back (``?timer=N``); all fields as the status reports them."""

    started: int = 0
    duration: int = 0
    ends: float = 0.0
    task: asyncio.Task | None = None

    def fields(self) -> dict[str, Any]:
        remaining = max(0, round(self.ends - time.time())) if self.task else 0
        return {"has_timer": self.task is not None, "timer_started": self.started if self.task else 0,
                "timer_duration": self.duration if self.task else 0, "timer_remaining": remaining}


class Output:
    """A relay or a light channel: on/off, what it feeds (Appliance), an optional timer."""

    def __init__(self, appliance: Appliance, name: str | None = None) -> None:
        self.appliance = appliance
        self.source = "http"
        self.timer = Timer()
        self.name = name
        self.brightness = 100
        self.transition = 0
        # colour mode of the RGBW2
        self.red, self.green, self.blue, self.white, self.gain, self.effect = 255, 160, 60, 0, 80, 0

    @property
    def ison(self) -> bool:
        return self.appliance.on

    def level(self, kind: str) -> float:
        if kind == "color":
            return self.gain / 100 * max(self.red, self.green, self.blue, self.white) / 255
        if kind == "light":
            return self.brightness / 100
        return 1.0


class Roller:
    """A roller shutter: moves at 100 % per ``maxtime`` seconds, reports current_pos."""

    def __init__(self, clock: Callable[[], float], motor_open: Appliance, motor_close: Appliance,
                 maxtime: float) -> None:
        self.clock = clock
        self.motor_open, self.motor_close = motor_open, motor_close
        self.maxtime = maxtime
        self.pos = 0.0
        self.state = "stop"                 # "open" | "close" | "stop"
        self.last_direction = "close"
        self.stop_reason = "normal"
        self.source = "http"
        self.positioning = True
        self._moved_at = clock()
        self._target = 0.0
        self.task: asyncio.Task | None = None

    def current(self) -> float:
        if self.state == "stop":
            return self.pos
        travelled = (self.clock() - self._moved_at) / self.maxtime * 100
        if self.state == "open":
            return min(self._target, self.pos + travelled)
        return max(self._target, self.pos - travelled)

    def begin(self, direction: str, target: float) -> float:
        """Start moving; returns seconds until the target is reached."""
        self.pos = self.current()
        self.state, self.last_direction = direction, direction
        self._target, self._moved_at = target, self.clock()
        self.motor_open.switch(direction == "open")
        self.motor_close.switch(direction == "close")
        return abs(target - self.pos) / 100 * self.maxtime

    def halt(self, reason: str = "normal") -> None:
        self.pos = self.current()
        self.state, self.stop_reason = "stop", reason
        self.motor_open.switch(False)
        self.motor_close.switch(False)

    @property
    def power(self) -> float:
        return self.motor_open.power + self.motor_close.power


# --------------------------------------------------------------------------- models
MODELS: dict[str, dict[str, Any]] = {
    "SHSW-PM": dict(label="Shelly 1PM", host="shelly1pm-{mac}", build="112316", hw="prod-190329"),
    "SHSW-25": dict(label="Shelly 2.5", host="shellyswitch25-{mac}", build="112234", hw="prod-191217"),
    "SHPLG-S": dict(label="Shelly Plug S", host="shellyplug-s-{mac6}", build="113421", hw="prod-190516"),
    "SHDM-2": dict(label="Shelly Dimmer 2", host="shellydimmer2-{mac}", build="114008", hw="prod-2020-03"),
    "SHRGBW2": dict(label="Shelly RGBW2", host="shellyrgbw2-{mac}", build="131259", hw="prod-2019-01"),
    "SHHT-1": dict(label="Shelly H&T", host="shellyht-{mac6}", build="112531", hw="prod-2019-03"),
}
LOADS = (("fridge", 85.0), ("boiler", 1950.0), ("aquarium", 28.0), ("pond pump", 320.0),
         ("heat pump dryer", 700.0), ("garden lights", 45.0), ("server", 38.0))


class ShellyGen1(SimDevice):
    """One Shelly Gen1 device. ``model`` is the device type code (``SHSW-PM`` ...)."""

    vendor = "shelly"
    oui = "E868E7"

    def __init__(
        self,
        model: str = "SHSW-PM",
        *,
        mode: str | None = None,
        password: str | None = None,
        coap_port: int | None = None,
        coiot_peer: str = "",
        update_period: float = UPDATE_PERIOD,
        roller_maxtime: float = 20.0,
        awake: bool = False,
        wake_every: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        **kwargs: Any,
    ) -> None:
        if model not in MODELS:
            raise ValueError(f"unknown Shelly Gen1 model {model!r}")
        spec = MODELS[model]
        self.model = model
        self.label = spec["label"]
        super().__init__(**kwargs)
        self.clock = clock
        self.fw = f"{FW_DATE}-{spec['build']}/v1.14.0-gcb84623"
        self.hostname = spec["host"].format(mac=self.mac, mac6=self.mac[-6:])
        self.hw_revision = spec["hw"]
        self.sleeping = model == "SHHT-1"
        self.mode = mode or {"SHSW-25": "roller", "SHRGBW2": "color"}.get(model, "")
        if model == "SHSW-25" and self.mode not in ("roller", "relay"):
            raise ValueError("a Shelly 2.5 runs in 'roller' or 'relay' mode")
        if model == "SHRGBW2" and self.mode not in ("color", "white"):
            raise ValueError("an RGBW2 runs in 'color' or 'white' mode")
        self.username = "admin"
        self.password = password or ""
        self._coap_port_wanted = coap_port
        self.coap_port = 0
        self.coiot = {"enabled": True, "update_period": max(1, round(update_period)), "peer": coiot_peer}
        self.update_period = update_period
        self.active_peer = coiot_peer     # a new peer takes effect at the next reboot
        self.roller_maxtime = roller_maxtime
        self.awake_at_start = awake or not self.sleeping
        self.wake_every = wake_every
        self.serial = self.rng.randint(1, 4000)
        self.cfg_changed_cnt = 0
        self.ssid = self.rng.choice(HOME_NETWORKS)
        self.rssi = -self.rng.randint(45, 78)
        self.cloud = self.rng.random() < 0.5
        self.ram_total = self.rng.choice((49672, 50720, 51688, 52056))
        self.coap_sent: list[tuple[int, dict[str, Any]]] = []  # (code, payload), bounded below
        self._coap: _CoapEndpoint | None = None
        self._coiot_task: asyncio.Task | None = None
        self._first_start = True
        self._mid = self.rng.randrange(0x10000)
        # Sleeping sensor state
        self.temperature_c = round(self.rng.uniform(19.0, 23.5), 2)
        self.humidity = round(self.rng.uniform(38.0, 62.0), 1)
        self.battery = self.rng.randint(40, 100)
        self.act_reasons = ["poweron"]
        self.device_temp = round(self.rng.uniform(38.0, 52.0), 2)
        self.outputs: list[Output] = []
        self.rollers: list[Roller] = []
        self.inputs: list[Input] = []
        self.relay_settings: list[dict[str, Any]] = []
        self._build_channels()

    # ------------------------------------------------------------ construction
    def _appliance(self, nominal: float) -> Appliance:
        return Appliance(self.rng, nominal, clock=self.clock)

    def _build_channels(self) -> None:
        m = self.model
        self.outputs, self.rollers, self.inputs = [], [], []
        if m in ("SHSW-PM", "SHPLG-S"):
            name, watts = self.rng.choice(LOADS)
            self.outputs = [Output(self._appliance(watts), name=None)]
            self.outputs[0].appliance.switch(self.rng.random() < 0.6)
            self.load_names = [name]
            self.inputs = [Input()] if m == "SHSW-PM" else []
        elif m == "SHSW-25":
            self.inputs = [Input(), Input()]
            if self.mode == "roller":
                self.rollers = [Roller(self.clock, self._appliance(118.0), self._appliance(112.0),
                                       self.roller_maxtime)]
                self.load_names = ["roller shutter"]
            else:
                self.outputs = [Output(self._appliance(w)) for w in (60.0, 230.0)]
                self.load_names = ["ceiling light", "towel rail"]
        elif m == "SHDM-2":
            self.outputs = [Output(self._appliance(48.0))]
            self.outputs[0].brightness = self.rng.randint(20, 100)
            self.inputs = [Input(), Input()]
            self.load_names = ["dining lamp"]
        elif m == "SHRGBW2":
            if self.mode == "color":
                self.outputs = [Output(self._appliance(22.0))]
            else:
                self.outputs = [Output(self._appliance(9.0)) for _ in range(4)]
            self.inputs = [Input()]
            self.load_names = ["LED strip"] * len(self.outputs)
        self.relay_settings = [
            {"default_state": "last", "btn_type": "momentary", "auto_on": 0.0, "auto_off": 0.0,
             "appliance_type": "General"} for _ in self.outputs
        ]
        for out in self.outputs:
            out.appliance.level = out.level(self.light_kind)

    @property
    def light_kind(self) -> str:
        if self.model == "SHRGBW2":
            return "color" if self.mode == "color" else "light"
        return "light" if self.model == "SHDM-2" else "relay"

    # ------------------------------------------------------------ identity
    @property
    def secret(self) -> str:
        return self.password

    def set_secret(self, value: str | None) -> None:
        """Password set (or login disabled with None/"") from the device's own UI."""
        self.password = value or ""
        self._changed(config=True)

    def describe(self) -> dict[str, Any]:
        row = super().describe()
        row.update(kind="ShellyGen1", hostname=self.hostname, coap_port=self.coap_port,
                   mode=self.mode, asleep=self._site is None and self._runner is not None,
                   state=self.summary())
        return row

    def summary(self) -> str:
        if self.sleeping:
            return f"{self.temperature_c:.1f} °C {self.humidity:.0f} %"
        parts = [f"roller {r.state} {round(r.current())}%" for r in self.rollers]
        parts += [f"{'on' if o.ison else 'off'}" for o in self.outputs]
        return ", ".join(parts)

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        await super().start()
        if self._first_start:
            self._first_start = False
            if self.wake_every:
                self.spawn(self._wake_periodically())
            if not self.awake_at_start:
                await self.power_off()

    async def on_started(self) -> None:
        await super().on_started()
        await self._open_coap()
        if self._coiot_task is None:
            self._coiot_task = self.spawn(self._coiot_loop())

    async def on_stopping(self) -> None:
        await self._quiet()
        await super().on_stopping()

    async def power_off(self) -> None:
        await self._quiet()
        await super().power_off()

    async def _quiet(self) -> None:
        task, self._coiot_task = self._coiot_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        if self._coap is not None and self._coap.transport is not None:
            self._coap.transport.close()
        self._coap = None

    def _drop_channel_tasks(self) -> None:
        """Timers and roller movements do not survive a reboot or a mode change."""
        for out in self.outputs:
            if out.timer.task:
                out.timer.task.cancel()
                out.timer = Timer()
        for roller in self.rollers:
            if roller.task:
                roller.task.cancel()
                roller.task = None
            roller.halt()

    def on_boot(self) -> None:
        self.active_peer = self.coiot["peer"]
        self.act_reasons = ["poweron"]
        self._drop_channel_tasks()
        for out in self.outputs:
            out.appliance.reboot()
        for roller in self.rollers:
            roller.motor_open.reboot()
            roller.motor_close.reboot()

    # ------------------------------------------------------------ sleeping (H&T)
    @property
    def awake(self) -> bool:
        return self._site is not None

    async def wake(self, seconds: float = 30.0, reason: str = "button") -> None:
        """The H&T wakes (button, sensor change, period): answers HTTP and CoAP for
        `seconds` and reports its status to the CoIoT peer right away."""
        self.act_reasons = [reason]
        # A new reading: new serial. Coming up sends it to the CoIoT peer (once).
        self.serial = (self.serial + 1) & 0xFFFF
        if self.awake:
            self._send_status()
        else:
            await self.power_on()
        self._arm_sleep(seconds)


    async def _wake_periodically(self) -> None:
        assert self.wake_every
        while True:
            await asyncio.sleep(self.wake_every)
            self.temperature_c = round(self.temperature_c + self.rng.uniform(-0.4, 0.4), 2)
            self.humidity = round(min(99.0, max(5.0, self.humidity + self.rng.uniform(-2, 2))), 1)
            if not self.awake:
                await self.wake(min(10.0, self.wake_every / 2), reason="sensor")

    # ------------------------------------------------------------ things happening
    def _changed(self, config: bool = False) -> None:
        """State changed: new serial, and a CoIoT status to the peer right away."""
        self.serial = (self.serial + 1) & 0xFFFF
        if config:
            self.cfg_changed_cnt += 1
        if self._coap is not None:
            self._send_status()

    def _switch(self, index: int, on: bool, source: str) -> None:
        out = self.outputs[index]
        out.appliance.switch(on, out.level(self.light_kind))
        out.source = source
        self._changed()

    def flip(self, channel: int = 0) -> None:
        """A wall switch wired to input `channel` was flipped."""
        if self.sleeping:
            raise ValueError("the H&T has no switch input")
        if self.inputs:
            inp = self.inputs[min(channel, len(self.inputs) - 1)]
            inp.level ^= 1
        if self.rollers:
            roller = self.rollers[0]
            if roller.state != "stop":
                self._roller_stop(roller, "input")
            else:
                self._roller_go(roller, "open" if channel == 0 else "close", None, "input")
            return
        if self.inputs and channel >= len(self.inputs) or not self.inputs and channel >= len(self.outputs):
            raise ValueError(f"no channel {channel}")
        # Both inputs of a Dimmer 2 drive its one light.
        target = channel if channel < len(self.outputs) else 0
        self._switch(target, not self.outputs[target].ison, "input")

    def press(self, channel: int = 0, kind: str = "single"):
        """A push button on input `channel`: event + event_cnt, as Gen1 reports them. A
        single press on a momentary input also toggles its output."""
        if self.sleeping:
            # The H&T's only button wakes it up.
            return self.spawn(self.wake(reason="button"))
        code = EVENT_CODES.get(kind, kind)
        if code not in EVENT_CODES.values():
            raise ValueError(f"unknown press {kind!r}")
        if not self.inputs:
            # Plug S: the button on the plug toggles the relay.
            if code != "S":
                raise ValueError("the Plug S button only knows a single press")
            self._switch(0, not self.outputs[0].ison, "button")
            return None
        if channel >= len(self.inputs):
            raise ValueError(f"no input {channel}")
        inp = self.inputs[channel]
        inp.event, inp.event_cnt = code, inp.event_cnt + 1
        if code == "S" and self.rollers:
            roller = self.rollers[0]
            if roller.state != "stop":
                self._roller_stop(roller, "input")
            else:
                self._roller_go(roller, "open" if channel == 0 else "close", None, "input")
            return None
        target = channel if channel < len(self.outputs) else 0
        if code == "S" and self.outputs and self.relay_settings[target]["btn_type"] == "momentary":
            self._switch(target, not self.outputs[target].ison, "input")
        else:
            self._changed()
        return None

    def set_sensor(self, temperature: float | None = None, humidity: float | None = None) -> None:
        if temperature is not None:
            self.temperature_c = temperature
        if humidity is not None:
            self.humidity = humidity
        self._changed()

    # ------------------------------------------------------------ roller movement
    def _roller_go(self, roller: Roller, direction: str, target: float | None, source: str,
                   duration: float | None = None) -> None:
        if target is None:
            target = 100.0 if direction == "open" else 0.0
        if roller.task is not None:
            roller.task.cancel()
        seconds = roller.begin(direction, target)
        if duration is not None:
            seconds = min(seconds, duration)
        roller.source = source
        self._changed()

        async def arrive() -> None:
            await asyncio.sleep(seconds)
            roller.task = None
            roller.halt("normal")
            self._changed()

        roller.task = self.spawn(arrive())

    def _roller_stop(self, roller: Roller, source: str) -> None:
        if roller.task is not None:
            roller.task.cancel()
            roller.task = None
        roller.halt("normal")
        roller.source = source
        self._changed()

    # ------------------------------------------------------------ JSON payloads
    def _clock_fields(self) -> dict[str, Any]:
        now = time.time()
        return {"time": time.strftime("%H:%M", time.localtime(now)), "unixtime": int(now)}

    def shelly(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.model, "mac": self.mac, "auth": bool(self.password),
                                "fw": self.fw, "discoverable": False}
        if self.sleeping:
            data["sleep_mode"] = True
            return data
        data["longid"] = 1
        if self.model == "SHDM-2":
            data["num_inputs"] = 2
        data["num_outputs"] = 2 if self.model == "SHSW-25" else len(self.outputs)
        if self.model != "SHRGBW2":
            data["num_meters"] = 2 if self.model == "SHSW-25" else len(self.outputs)
        if self.model == "SHSW-25":
            data["num_rollers"] = 1
        if self.mode:
            data["mode"] = self.mode
        data["name"] = self.name
        return data

    def _temperature_now(self) -> float:
        load = sum(o.appliance.power for o in self.outputs) + sum(r.power for r in self.rollers)
        return round(self.device_temp + min(load, 2000.0) * 0.006 + self.rng.uniform(-0.2, 0.2), 2)

    def meter(self, index: int) -> dict[str, Any]:
        if self.rollers:
            motor = (self.rollers[0].motor_open, self.rollers[0].motor_close)[index]
        else:
            motor = self.outputs[index].appliance
        power = motor.advance()
        now = int(time.time())
        data: dict[str, Any] = {"power": round(power, 2), "overpower": 0.0, "is_valid": True,
                                "timestamp": now + 3600, "counters": motor.minute_counters(),
                                "total": int(motor.energy_ws / 60)}
        if self.model == "SHRGBW2":
            # Real RGBW2 firmware: overpower is a bool and is_valid a *string*.
            data["overpower"] = False
            data["is_valid"] = "true"
        return data

    def relay_status(self, index: int) -> dict[str, Any]:
        out = self.outputs[index]
        data: dict[str, Any] = {"ison": out.ison, **out.timer.fields(), "overpower": False}
        if self.model == "SHSW-25":
            data["is_valid"] = True
        data["source"] = out.source
        return data

    def light_status(self, index: int) -> dict[str, Any]:
        out = self.outputs[index]
        data: dict[str, Any] = {"ison": out.ison, "source": out.source, **out.timer.fields()}
        if self.light_kind == "color":
            data.update(mode="color", red=out.red, green=out.green, blue=out.blue,
                        white=out.white, gain=out.gain, effect=out.effect,
                        transition=out.transition)
        else:
            data.update(mode="white", brightness=out.brightness, transition=out.transition)
        if self.model == "SHRGBW2":
            data.update(power=round(out.appliance.advance(), 2), overpower=False)
        return data

    def roller_status(self, index: int = 0) -> dict[str, Any]:
        r = self.rollers[index]
        return {"state": r.state, "source": r.source, "power": round(r.power, 2), "is_valid": True,
                "safety_switch": False, "overtemperature": False, "stop_reason": r.stop_reason,
                "last_direction": r.last_direction,
                "current_pos": round(r.current()) if r.positioning else -1,
                "calibrating": False, "positioning": r.positioning}

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "wifi_sta": {"connected": True, "ssid": self.ssid, "ip": self.host, "rssi": self.rssi},
            "cloud": {"enabled": self.cloud, "connected": self.cloud},
            "mqtt": {"connected": False},
            **self._clock_fields(),
            "serial": self.serial, "has_update": False, "mac": self.mac,
            "cfg_changed_cnt": self.cfg_changed_cnt, "actions_stats": {"skipped": 0},
        }
        if self.sleeping:
            tc = self.temperature_c
            data.update(
                is_valid=True,
                tmp={"value": tc, "units": "C", "tC": tc, "tF": round(tc * 9 / 5 + 32, 2), "is_valid": True},
                hum={"value": self.humidity, "is_valid": True},
                bat={"value": self.battery, "voltage": round(2.5 + self.battery * 0.005, 2)},
                act_reasons=list(self.act_reasons), connect_retries=0, sensor_error=0,
            )
        else:
            if self.model == "SHRGBW2":
                data["mode"] = self.mode
                data["input"] = self.inputs[0].level
                data["total_power"] = round(sum(o.appliance.advance() for o in self.outputs), 2)
            if self.light_kind == "relay" and self.outputs:
                data["relays"] = [self.relay_status(i) for i in range(len(self.outputs))]
            if self.rollers:
                data["rollers"] = [self.roller_status(0)]
            if self.light_kind != "relay":
                data["lights"] = [self.light_status(i) for i in range(len(self.outputs))]
            meters = 2 if self.rollers else len(self.outputs)
            data["meters"] = [self.meter(i) for i in range(meters)]
            if self.inputs:
                data["inputs"] = [i.status() for i in self.inputs]
            tc = self._temperature_now()
            tmp = {"tC": tc, "tF": round(tc * 9 / 5 + 32, 2), "is_valid": True}
            if self.model in ("SHSW-PM", "SHSW-25", "SHPLG-S"):
                data["temperature"] = tc
                data["overtemperature"] = False
            if self.model != "SHRGBW2":
                data["tmp"] = tmp
            if self.model == "SHSW-PM":
                data.update(ext_sensors={}, ext_temperature={}, ext_humidity={})
            if self.model == "SHSW-25":
                data["temperature_status"] = "Normal"
                data["voltage"] = round(230.0 + self.rng.uniform(-4, 8), 2)
            if self.model == "SHDM-2":
                data.update(calibrated=True, calib_progress=0, calib_status=0, calib_running=0,
                            wire_mode=1, forced_neutral=False, overtemperature=False, loaderror=0,
                            overpower=False, debug=0)
        data.update(
            update={"status": "idle", "has_update": False, "new_version": self.fw,
                    "old_version": self.fw, "beta_version": f"20231107-16{self.mac[-4:-2]}00/v1.14.1-rc1-g0617c15"},
            ram_total=self.ram_total, ram_free=self.ram_total - 12000 - self.rng.randint(0, 900),
            fs_size=233681, fs_free=150000 + self.rng.randint(0, 9000), uptime=self.uptime(),
        )
        return data

    def _output_settings(self, index: int) -> dict[str, Any]:
        out, cfg = self.outputs[index], self.relay_settings[index]
        data: dict[str, Any] = {"name": out.name, "appliance_type": cfg["appliance_type"],
                                "ison": out.ison, "has_timer": out.timer.task is not None,
                                "default_state": cfg["default_state"]}
        if self.inputs:
            data.update(btn_type=cfg["btn_type"], btn_reverse=0)
        data.update(auto_on=cfg["auto_on"], auto_off=cfg["auto_off"])
        if self.light_kind == "relay":
            data["max_power"] = 1800 if self.model == "SHPLG-S" else 0
        else:
            data.update(brightness=out.brightness, transition=out.transition)
        data.update(schedule=False, schedule_rules=[])
        return data

    def _roller_settings(self) -> dict[str, Any]:
        r = self.rollers[0]
        mt = r.maxtime
        return {"maxtime": mt, "maxtime_open": mt, "maxtime_close": mt, "default_state": "stop",
                "swap": False, "swap_inputs": False, "input_mode": "openclose",
                "button_type": "momentary", "btn_reverse": 0, "state": r.state,
                "power": round(r.power, 2), "is_valid": True, "safety_switch": False,
                "schedule": False, "schedule_rules": [], "obstacle_mode": "disabled",
                "obstacle_action": "stop", "obstacle_power": 200, "obstacle_delay": 1,
                "ends_delay": 2500, "safety_mode": "while_opening", "safety_action": "stop",
                "safety_allowed_on_trigger": "none", "off_power": 2, "positioning": r.positioning}

    def settings(self) -> dict[str, Any]:
        device: dict[str, Any] = {"type": self.model, "mac": self.mac, "hostname": self.hostname}
        if self.sleeping:
            device["sleep_mode"] = True
        else:
            shelly = self.shelly()
            for key in ("num_inputs", "num_outputs", "num_meters", "num_rollers", "mode"):
                if key in shelly:
                    device[key] = shelly[key]
        data: dict[str, Any] = {
            "device": device,
            "wifi_ap": {"enabled": False, "ssid": self.hostname, "key": ""},
            "wifi_sta": {"enabled": True, "ssid": self.ssid, "ipv4_method": "dhcp", "ip": None,
                         "gw": None, "mask": None, "dns": None},
            "wifi_sta1": {"enabled": False, "ssid": "", "ipv4_method": "dhcp", "ip": None,
                          "gw": None, "mask": None, "dns": None},
            "ap_roaming": {"enabled": False, "threshold": -70},
            "mqtt": {"enable": False, "server": "127.0.0.1:1883", "user": "", "id": self.hostname,
                     "reconnect_timeout_max": 60.0, "reconnect_timeout_min": 2.0,
                     "clean_session": True, "keep_alive": 60, "max_qos": 0, "retain": False,
                     "update_period": 30},
            "coiot": dict(self.coiot),
            "sntp": {"server": "time.google.com", "enabled": True},
            "login": {"enabled": bool(self.password), "unprotected": False, "username": self.username},
            "pin_code": "", "name": self.name, "fw": self.fw,
            "factory_reset_from_switch": True, "pon_wifi_reset": False, "discoverable": False,
            "build_info": {"build_id": self.fw,
                           "build_timestamp": f"2023-09-13T{self.fw[9:11]}:{self.fw[11:13]}:{self.fw[13:15]}Z",
                           "build_version": "1.0"},
            "cloud": {"enabled": self.cloud, "connected": self.cloud},
            "timezone": "Europe/Zurich", "lat": 47.3769, "lng": 8.5417, "tzautodetect": True,
            "tz_utc_offset": 3600, "tz_dst": False, "tz_dst_auto": True,
            **self._clock_fields(),
            "led_status_disable": False, "debug_enable": False, "allow_cross_origin": False,
            "actions": {"active": False, "names": self._action_names()},
            "hwinfo": {"hw_revision": self.hw_revision, "batch_id": 1},
        }
        if self.sleeping:
            data.update(sensors={"temperature_threshold": 1, "temperature_unit": "C",
                                 "humidity_threshold": 5},
                        sleep_mode={"period": 12, "unit": "h"}, external_power=0,
                        temperature_offset=0, humidity_offset=0)
            return data
        if self.mode:
            data["mode"] = self.mode
        if self.model == "SHPLG-S":
            data.update(led_power_disable=False, max_power=1800)
        if self.model == "SHSW-25":
            data["max_power"] = 1840
        if self.inputs:
            data["longpush_time"] = 800
        if self.light_kind == "relay":
            data["relays"] = [self._output_settings(i) for i in range(len(self.outputs))]
            if self.model == "SHSW-25" and self.rollers:
                data["relays"] = [
                    {"name": None, "appliance_type": "General", "ison": False, "has_timer": False,
                     "default_state": "last", "btn_type": "momentary", "btn_reverse": 0,
                     "auto_on": 0, "auto_off": 0, "max_power": 0, "schedule": False,
                     "schedule_rules": []} for _ in range(2)]
        else:
            data["lights"] = [self._output_settings(i) for i in range(len(self.outputs))]
        if self.rollers:
            data["rollers"] = [self._roller_settings()]
            data["favorites_enabled"] = True
            data["favorites"] = [{"name": "Lüften", "pos": 30}, {"name": "Sonne", "pos": 60},
                                 {"name": "Position 3", "pos": 0}, {"name": "Position 4", "pos": 0}]
        if self.model == "SHSW-PM":
            data.update(ext_switch_enable=False, ext_switch_reverse=False,
                        ext_switch={"0": {"relay_num": -1}}, ext_sensors={},
                        ext_temperature={}, ext_humidity={})
        data["eco_mode_enabled"] = True
        return data

    def _action_names(self) -> list[str]:
        if self.sleeping:
            return ["report_url", "temp_over_url", "temp_under_url", "hum_over_url", "hum_under_url"]
        if self.model == "SHPLG-S":
            return ["btn_on_url", "out_on_url", "out_off_url"]
        names = []
        for _ in self.outputs or range(2):
            names += ["btn_on_url", "btn_off_url", "longpush_url", "shortpush_url", "out_on_url",
                      "out_off_url"]
        if self.rollers:
            names += ["roller_open_url", "roller_close_url", "roller_stop_url"]
        return names

    # ------------------------------------------------------------ CoIoT description/status
    def coiot_blocks(self) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], Callable[[], Any]]]]:
        """(blocks, [(sensor description, value getter)]) -- ids follow CoIoT v2 numbering:
        first digit the kind, second the channel (1 = first), last the quantity."""
        blocks: list[dict[str, Any]] = []
        sensors: list[tuple[dict[str, Any], Callable[[], Any]]] = []

        def block(desc: str) -> int:
            blocks.append({"I": len(blocks) + 1, "D": desc})
            return len(blocks)

        def sensor(sid: int, kind: str, desc: str, rng: Any, link: int, getter: Callable[[], Any],
                   unit: str | None = None) -> None:
            entry: dict[str, Any] = {"I": sid, "T": kind, "D": desc}
            if unit:
                entry["U"] = unit
            entry["R"] = rng
            entry["L"] = link
            sensors.append((entry, getter))

        if self.sleeping:
            b = block("sensor_0")
            d = block("device")
            sensor(9103, "EVC", "cfgChanged", "U16", d, lambda: self.cfg_changed_cnt)
            sensor(3101, "T", "extTemp", ["-55/125", "999"], b, lambda: self.temperature_c, "C")
            sensor(3102, "T", "extTemp", ["-67/257", "999"], b,
                   lambda: round(self.temperature_c * 9 / 5 + 32, 2), "F")
            sensor(3103, "H", "humidity", ["0/100", "999"], b, lambda: self.humidity)
            sensor(3115, "S", "sensorError", "0/1", b, lambda: 0)
            sensor(3111, "B", "battery", ["0/100", "-1"], d, lambda: self.battery)
            sensor(9102, "EV", "wakeupEvent",
                   ["battery/button/periodic/poweron/sensor/alarm", "unknown"], d,
                   lambda: list(self.act_reasons))
            return blocks, sensors

        kind = self.light_kind
        channel_blocks: list[int] = []
        if self.rollers:
            r = self.rollers[0]
            b = block("roller_0")
            channel_blocks.append(b)
            sensor(1102, "S", "roller", "open/close/stop", b, lambda: r.state)
            sensor(1103, "S", "rollerPos", ["0/100", "-1"], b,
                   lambda: round(r.current()) if r.positioning else -1)
            sensor(4102, "P", "rollerPower", ["0/3500", "-1"], b, lambda: round(r.power, 2), "W")
            sensor(4104, "E", "rollerEnergy", ["U32", "-1"], b,
                   lambda: int((r.motor_open.energy_ws + r.motor_close.energy_ws) / 60), "Wmin")
            sensor(6103, "S", "rollerStopReason", "normal/safety_switch/obstacle/overpower", b,
                   lambda: r.stop_reason)
        for i, out in enumerate(self.outputs):
            n = i + 1
            b = block(f"{'relay' if kind == 'relay' else 'light'}_{i}")
            channel_blocks.append(b)
            sensor(1001 + 100 * n, "S", "output", "0/1", b, lambda o=out: int(o.ison))
            if kind == "light":
                sensor(5001 + 100 * n, "S", "brightness", "0/100", b, lambda o=out: o.brightness)
            if kind == "color":
                for sid, desc, attr in ((5105, "red", "red"), (5106, "green", "green"),
                                        (5107, "blue", "blue"), (5108, "white", "white")):
                    sensor(sid, "S", desc, "0/255", b, lambda o=out, a=attr: getattr(o, a))
                sensor(5102, "S", "gain", "0/100", b, lambda o=out: o.gain)
                sensor(5109, "S", "effect", "0/3", b, lambda o=out: o.effect)
            sensor(4001 + 100 * n, "P", "power", ["0/3500", "-1"], b,
                   lambda o=out: round(o.appliance.power, 2), "W")
            sensor(4003 + 100 * n, "E", "energy", ["U32", "-1"], b,
                   lambda o=out: int(o.appliance.energy_ws / 60), "Wmin")
            sensor(6002 + 100 * n, "A", "overpower", "0/1", b, lambda: 0)
        for i, inp in enumerate(self.inputs):
            n = i + 1
            if len(self.inputs) == len(channel_blocks):
                b = channel_blocks[i]
            elif len(self.inputs) == 1 and channel_blocks:
                b = channel_blocks[0]
            else:
                b = block(f"input_{i}")
            sensor(2000 + 100 * n + 1, "S", "input", "0/1", b, lambda p=inp: p.level)
            sensor(2000 + 100 * n + 2, "EV", "inputEvent", ["S/L", ""], b, lambda p=inp: p.event)
            sensor(2000 + 100 * n + 3, "EVC", "inputEventCnt", "U16", b, lambda p=inp: p.event_cnt)
        d = block("device")
        sensor(9103, "EVC", "cfgChanged", "U16", d, lambda: self.cfg_changed_cnt)
        sensor(3104, "T", "deviceTemp", ["-40/300", "999"], d, self._temperature_now, "C")
        sensor(3105, "T", "deviceTemp", ["-40/572", "999"], d,
               lambda: round(self._temperature_now() * 9 / 5 + 32, 2), "F")
        sensor(6101, "A", "overtemp", "0/1", d, lambda: 0)
        if self.mode:
            sensor(9101, "S", "mode", "color/white" if self.model == "SHRGBW2" else "relay/roller",
                   d, lambda: self.mode)
        if self.model == "SHSW-25":
            sensor(4108, "V", "voltage", ["0/999", "-1"], d,
                   lambda: round(230.0 + self.rng.uniform(-4, 8), 2), "V")
        return blocks, sensors

    def cit_d(self) -> dict[str, Any]:
        blocks, sensors = self.coiot_blocks()
        return {"blk": blocks, "sen": [entry for entry, _ in sensors]}

    def cit_s(self) -> dict[str, Any]:
        for out in self.outputs:
            out.appliance.advance()
        _, sensors = self.coiot_blocks()
        return {"G": [[0, entry["I"], getter()] for entry, getter in sensors]}

    def device_id(self) -> bytes:
        return f"{self.model}#{self.mac}#{COIOT_VERSION}".encode()

    def _coap_options(self) -> list[tuple[int, bytes]]:
        validity = 65000 if self.sleeping else int(self.update_period * 40) & 0xFFFF
        return [(OPT_DEVICE_ID, self.device_id()), (OPT_VALIDITY, struct.pack("!H", validity)),
                (OPT_SERIAL, struct.pack("!H", self.serial & 0xFFFF))]

    def _next_mid(self) -> int:
        self._mid = (self._mid + 1) & 0xFFFF
        return self._mid

    # ------------------------------------------------------------ CoAP transport
    async def _open_coap(self) -> None:
        if self._coap is not None:
            return
        wanted = self._coap_port_wanted
        if wanted is None:
            # Own the address (a per-device 127.0.x.y): the real port 5683, which is
            # where aioshelly sends its requests. On shared 127.0.0.1: ephemeral.
            wanted = COAP_PORT if self.host != "127.0.0.1" else 0
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # A CoIoT listener (aioshelly binds 0.0.0.0:5683 with SO_REUSEADDR) may already
        # hold the port on the wildcard address; our specific address coexists with it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, wanted))
        except OSError as exc:
            if wanted == 0:
                sock.close()
                raise
            log.warning("%s: CoAP port %s unavailable on %s (%s); using an ephemeral port",
                        self.mac, wanted, self.host, exc)
            sock.bind((self.host, 0))
        sock.setblocking(False)
        self.coap_port = sock.getsockname()[1]
        endpoint = _CoapEndpoint(self)
        await loop.create_datagram_endpoint(lambda: endpoint, sock=sock)
        self._coap = endpoint

    def coap_received(self, data: bytes, addr: tuple[str, int]) -> None:
        request = coap_decode(data)
        if request is None or request.code != CODE_GET:
            return
        if request.path == "cit/d":
            body = self.cit_d()
        elif request.path == "cit/s":
            body = self.cit_s()
        else:
            return
        with self.handling(f"COAP GET {request.path}"):
            reply_type = TYPE_ACK if request.mtype == TYPE_CON else TYPE_NON
            mid = request.mid if request.mtype == TYPE_CON else self._next_mid()
            message = coap_encode(CODE_CONTENT, mid, self._coap_options(),
                                  json.dumps(body, separators=(",", ":")).encode(),
                                  mtype=reply_type, token=request.token)
            self._sendto(message, addr, CODE_CONTENT, body)

    def _sendto(self, message: bytes, addr: tuple[str, int], code: int, body: dict[str, Any]) -> None:
        try:
            check_send_target(addr[0])
        except ValueError as exc:
            log.debug("%s: %s", self.mac, exc)
            return
        if self._coap is None or self._coap.transport is None:
            return
        self._coap.transport.sendto(message, addr)
        self.coap_sent.append((code, body))
        del self.coap_sent[:-50]

    def _peer_address(self) -> tuple[str, int] | None:
        peer = self.active_peer
        if not peer or not self.coiot["enabled"]:
            return None     # real devices would multicast to 224.0.1.187; we never do
        host, _, port = peer.rpartition(":")
        try:
            return (host or peer, int(port) if host else COAP_PORT)
        except ValueError:
            return None

    def _send_status(self) -> None:
        target = self._peer_address()
        if target is None:
            return
        body = self.cit_s()
        message = coap_encode(CODE_STATUS, self._next_mid(), self._coap_options(),
                              json.dumps(body, separators=(",", ":")).encode())
        self._sendto(message, target, CODE_STATUS, body)

    async def _coiot_loop(self) -> None:
        while True:
            self._send_status()
            await asyncio.sleep(self.update_period)

    # ------------------------------------------------------------ HTTP
    def build_app(self) -> web.Application:
        app = super().build_app()
        app.middlewares.append(self._auth)
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        if self.password and request.path != "/shelly" and not self._authorised(request):
            return web.Response(status=401, text="401 Unauthorized",
                                headers={"WWW-Authenticate": f'Basic realm="{self.hostname}"'})
        return await handler(request)

    def _authorised(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return user == self.username and password == self.password

    def setup_routes(self, app: web.Application) -> None:
        r = app.router
        get_post = lambda path, handler: (r.add_get(path, handler), r.add_post(path, handler))  # noqa: E731
        r.add_get("/shelly", self.h_shelly)
        r.add_get("/status", self.h_status)
        get_post("/settings", self.h_settings)
        get_post("/settings/advanced", self.h_settings_coiot)
        get_post("/settings/coiot", self.h_settings_coiot)
        get_post("/settings/login", self.h_settings_login)
        get_post("/settings/relay/{n:\\d+}", self.h_settings_output)
        get_post("/settings/light/{n:\\d+}", self.h_settings_output)
        get_post("/settings/roller/{n:\\d+}", self.h_settings_roller)
        get_post("/relay/{n:\\d+}", self.h_relay)
        get_post("/light/{n:\\d+}", self.h_light)
        get_post("/color/{n:\\d+}", self.h_color)
        get_post("/white/{n:\\d+}", self.h_white)
        get_post("/roller/{n:\\d+}", self.h_roller)
        r.add_get("/meter/{n:\\d+}", self.h_meter)
        r.add_get("/cit/d", self.h_cit_d)
        r.add_get("/cit/s", self.h_cit_s)
        get_post("/reboot", self.h_reboot)

    async def _params(self, request: web.Request) -> dict[str, str]:
        params = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            params.update(await request.post())  # type: ignore[arg-type]
        return params

    @staticmethod
    def _error(text: str, status: int = 400) -> web.Response:
        return web.Response(status=status, text=text)

    async def h_shelly(self, request: web.Request) -> web.Response:
        return json_response(self.shelly())

    async def h_status(self, request: web.Request) -> web.Response:
        return json_response(self.status())

    async def h_cit_d(self, request: web.Request) -> web.Response:
        return json_response(self.cit_d())

    async def h_cit_s(self, request: web.Request) -> web.Response:
        return json_response(self.cit_s())

    async def h_settings(self, request: web.Request) -> web.Response:
        params = await self._params(request)
        if "name" in params:
            if len(params["name"]) > 64:
                return self._error("Bad name!")
            self.name = params["name"]
            self._changed(config=True)
        if "mode" in params:
            allowed = {"SHSW-25": ("roller", "relay"), "SHRGBW2": ("color", "white")}.get(self.model)
            if not allowed or params["mode"] not in allowed:
                return self._error("Bad mode!")
            if params["mode"] != self.mode:
                self.mode = params["mode"]
                self._drop_channel_tasks()
                self._build_channels()
                self._changed(config=True)
        return json_response(self.settings())

    async def h_settings_coiot(self, request: web.Request) -> web.Response:
        params = await self._params(request)
        enable = params.get("coiot_enable", params.get("enabled"))
        peer = params.get("coiot_peer", params.get("peer"))
        period = params.get("coiot_update_period", params.get("update_period"))
        if enable is not None:
            if enable not in ("true", "false", "1", "0"):
                return self._error("Bad coiot_enable!")
            self.coiot["enabled"] = enable in ("true", "1")
        if peer is not None:
            host, _, port = peer.rpartition(":")
            if peer and (not host or not port.isdigit()):
                return self._error("Bad coiot_peer!")
            # Stored now, used after the next reboot -- like the real firmware.
            self.coiot["peer"] = peer
        if period is not None:
            if not period.isdigit() or not 1 <= int(period) <= 3600:
                return self._error("Bad coiot_update_period!")
            self.coiot["update_period"] = int(period)
            self.update_period = float(period)
        self._changed(config=True)
        return json_response(self.settings())

    async def h_settings_login(self, request: web.Request) -> web.Response:
        params = await self._params(request)
        enabled = params.get("enabled")
        if enabled in ("0", "false"):
            self.password = ""
        elif enabled in ("1", "true"):
            user, password = params.get("username", self.username), params.get("password", "")
            if not user or not password:
                return self._error("Bad username or password!")
            self.username, self.password = user, password
        self._changed(config=True)
        return json_response({"enabled": bool(self.password), "unprotected": False,
                              "username": self.username})

    def _channel(self, request: web.Request, count: int) -> int | None:
        n = int(request.match_info["n"])
        return n if n < count else None

    async def h_settings_output(self, request: web.Request) -> web.Response:
        want = "relay" if self.light_kind == "relay" else "light"
        n = self._channel(request, len(self.outputs))
        if n is None or not request.path.startswith(f"/settings/{want}/"):
            return self._error("Not found", 404)
        params = await self._params(request)
        cfg = self.relay_settings[n]
        if "name" in params:
            self.outputs[n].name = params["name"][:64] or None
        if "default_state" in params:
            if params["default_state"] not in ("off", "on", "last", "switch"):
                return self._error("Bad default_state!")
            cfg["default_state"] = params["default_state"]
        if "btn_type" in params:
            if params["btn_type"] not in ("momentary", "toggle", "edge", "detached", "action"):
                return self._error("Bad btn_type!")
            cfg["btn_type"] = params["btn_type"]
        for key in ("auto_on", "auto_off"):
            if key in params:
                try:
                    cfg[key] = float(params[key])
                except ValueError:
                    return self._error(f"Bad {key}!")
        if "appliance_type" in params:
            cfg["appliance_type"] = params["appliance_type"][:32]
        if len(params):
            self._changed(config=True)
        return json_response(self._output_settings(n))

    async def h_settings_roller(self, request: web.Request) -> web.Response:
        n = self._channel(request, len(self.rollers))
        if n is None:
            return self._error("Not found", 404)
        params = await self._params(request)
        roller = self.rollers[n]
        if "maxtime" in params:
            try:
                roller.maxtime = max(0.5, min(300.0, float(params["maxtime"])))
            except ValueError:
                return self._error("Bad maxtime!")
        if "positioning" in params:
            roller.positioning = params["positioning"] in ("true", "1")
        if params:
            self._changed(config=True)
        return json_response(self._roller_settings())

    def _apply_timer(self, index: int, seconds: float) -> None:
        out = self.outputs[index]
        if out.timer.task is not None:
            out.timer.task.cancel()
        target = not out.ison

        async def flip_back() -> None:
            await asyncio.sleep(seconds)
            out.timer = Timer()
            self._switch(index, target, "timer")

        out.timer = Timer(started=int(time.time()), duration=int(seconds),
                          ends=time.time() + seconds, task=self.spawn(flip_back()))

    def _turn(self, index: int, params: dict[str, str]) -> web.Response | None:
        """Apply turn=on|off|toggle (+timer); returns an error response or None."""
        turn = params.get("turn")
        if turn is not None and turn not in ("on", "off", "toggle"):
            return self._error("Bad turn!")
        out = self.outputs[index]
        if "timer" in params:
            try:
                seconds = float(params["timer"])
            except ValueError:
                return self._error("Bad timer!")
        else:
            seconds = 0
        if turn is not None:
            on = {"on": True, "off": False, "toggle": not out.ison}[turn]
            if out.timer.task is not None:
                out.timer.task.cancel()
                out.timer = Timer()
            self._switch(index, on, "http")
            if seconds > 0:
                self._apply_timer(index, seconds)
        return None

    async def h_relay(self, request: web.Request) -> web.Response:
        if self.light_kind != "relay":
            return self._error("Not found", 404)
        n = self._channel(request, len(self.outputs))
        if n is None:
            return self._error("Not found", 404)
        error = self._turn(n, await self._params(request))
        return error or json_response(self.relay_status(n))

    @staticmethod
    def _bounded(params: dict[str, str], key: str, low: int, high: int) -> int | None | str:
        if key not in params:
            return None
        try:
            value = int(float(params[key]))
        except ValueError:
            return "bad"
        return value if low <= value <= high else "bad"

    async def _light_request(self, request: web.Request, fields: dict[str, tuple[int, int]],
                             path_kind: str) -> web.Response:
        n = self._channel(request, len(self.outputs))
        if n is None or self.light_kind == "relay":
            return self._error("Not found", 404)
        if self.model == "SHRGBW2" and path_kind != self.mode:
            # /color/N only exists in colour mode, /white/N only in white mode.
            return self._error("Not found", 404)
        params = await self._params(request)
        out = self.outputs[n]
        values = {}
        for key, (low, high) in fields.items():
            value = self._bounded(params, key, low, high)
            if value == "bad":
                return self._error(f"Bad {key}!")
            if value is not None:
                values[key] = value
        for key, value in values.items():
            setattr(out, key, value)
        error = self._turn(n, params)
        if error:
            return error
        if values:
            out.appliance.switch(out.ison, out.level(self.light_kind))
            out.source = "http"
            if "turn" not in params:
                self._changed()
        return json_response(self.light_status(n))

    async def h_light(self, request: web.Request) -> web.Response:
        if self.model != "SHDM-2":
            return self._error("Not found", 404)
        return await self._light_request(
            request, {"brightness": (0, 100), "transition": (0, 5000)}, "light")

    async def h_white(self, request: web.Request) -> web.Response:
        if self.model != "SHRGBW2":
            return self._error("Not found", 404)
        return await self._light_request(
            request, {"brightness": (0, 100), "transition": (0, 5000)}, "white")

    async def h_color(self, request: web.Request) -> web.Response:
        if self.model != "SHRGBW2":
            return self._error("Not found", 404)
        return await self._light_request(
            request, {"red": (0, 255), "green": (0, 255), "blue": (0, 255), "white": (0, 255),
                      "gain": (0, 100), "effect": (0, 6), "transition": (0, 5000)}, "color")

    async def h_roller(self, request: web.Request) -> web.Response:
        n = self._channel(request, len(self.rollers))
        if n is None:
            return self._error("Not found", 404)
        params = await self._params(request)
        roller = self.rollers[n]
        go = params.get("go")
        duration = None
        if "duration" in params:
            try:
                duration = float(params["duration"])
            except ValueError:
                return self._error("Bad duration!")
        if go in ("open", "close"):
            self._roller_go(roller, go, None, "http", duration)
        elif go == "stop":
            self._roller_stop(roller, "http")
        elif go == "to_pos" or (go is None and "roller_pos" in params):
            pos = self._bounded(params, "roller_pos", 0, 100)
            if pos in (None, "bad") or not roller.positioning:
                return self._error("Bad roller_pos!")
            here = roller.current()
            if round(here) != pos:
                self._roller_go(roller, "open" if pos > here else "close", float(pos), "http")  # type: ignore[arg-type]
        elif go is not None:
            return self._error("Bad go!")
        return json_response(self.roller_status(n))

    async def h_meter(self, request: web.Request) -> web.Response:
        count = 2 if self.rollers else len(self.outputs)
        n = self._channel(request, count)
        if n is None or self.sleeping:
            return self._error("Not found", 404)
        return json_response(self.meter(n))

    async def h_reboot(self, request: web.Request) -> web.Response:
        # Answer first, then go away for a moment (like the real device).
        async def later() -> None:
            await asyncio.sleep(0.05)
            await self.reboot()

        self.spawn(later())
        return json_response({"ok": True})
