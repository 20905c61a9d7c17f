"""A household of simulated devices in one process, and a small control API to hurt them.

``async with Fleet(household_mix()) as fleet:`` starts every device on loopback -- either
all on 127.0.0.1 with distinct ports, or (as root / inside a private network namespace)
each on its own 127.0.x.y address on port 80, which is what clients hard-wired to port 80
(python-mystrom, aioshelly's Gen1 CoAP) need. Everything is derived from ``seed``: the
same seed gives the same MACs, names, secrets and loads.

The control API (``control_port=``) is plain JSON over HTTP on loopback, for tests and for
a shell (``curl -X POST 127.0.0.1:P/devices/<MAC>/power_off``).
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import logging
import os
import random
import warnings
from dataclasses import dataclass, field, fields
from typing import Any

from aiohttp import web

from .base import Faults, SimDevice, check_send_target, in_private_namespace, is_loopback, json_response
from .mystrom import MyStromBulb, MyStromButton, MyStromLedStrip, MyStromPir, MyStromSwitch
from .shelly_gen1 import MODELS as GEN1_MODELS, ShellyGen1

log = logging.getLogger(__name__)

# myStrom literal codes (reference §1.1) -> (class, constructor options)
MYSTROM_MODELS: dict[str, tuple[type[SimDevice], dict[str, Any]]] = {
    "WS2": (MyStromSwitch, {"variant": "ch_v2"}),
    "WSE": (MyStromSwitch, {"variant": "eu"}),
    "WSW": (MyStromSwitch, {"variant": "ch_v1"}),
    "LCS": (MyStromSwitch, {"variant": "zero"}),
    "WRB": (MyStromBulb, {}),
    "WRS": (MyStromLedStrip, {}),
    "WMS": (MyStromPir, {}),
    "WBS": (MyStromButton, {}),
    "WBP": (MyStromButton, {"plus": True}),
}
RPC_MODELS = ("SNSW-001P16EU", "SNSW-102P16EU", "SPSW-104PE16EU", "SNSN-0013A", "SNSN-0024X",
              "SPEM-003CEBEU", "S3SW-001P16EU", "S4SW-001P16EU")
ALIASES = {"ch_v2": "WS2", "eu": "WSE", "ch_v1": "WSW", "zero": "LCS", "bulb": "WRB",
           "strip": "WRS", "pir": "WMS", "button": "WBS", "button_plus": "WBP"}

# What the household calls its devices (seeded choice per device).
ROOMS = ("Kitchen", "Living room", "Bedroom", "Hall", "Office", "Bathroom", "Cellar", "Garden",
         "Kids room", "Attic", "Balcony", "Laundry")
THINGS = {
    "switch": ("fridge", "floor lamp", "TV", "coffee machine", "dehumidifier", "heater"),
    "light": ("ceiling light", "reading lamp", "LED strip", "spots", "pendant"),
    "climate": ("climate", "thermometer"),
    "motion": ("motion", "presence"),
    "button": ("button", "doorbell", "scene button"),
    "cover": ("blinds", "shutter", "awning"),
    "meter": ("main meter", "heat pump meter"),
}
# Nominal watts of what is plugged into a switch (so a "kettle" draws like one).
SWITCH_WATTS = {"fridge": 85.0, "floor lamp": 42.0, "TV": 96.0, "coffee machine": 1250.0,
                "dehumidifier": 180.0, "heater": 900.0}


def _thing(model: str) -> str:
    if model in ("WRB", "WRS", "SHDM-2", "SHRGBW2"):
        return "light"
    if model in ("SHHT-1", "SNSN-0013A"):
        return "climate"
    if model == "WMS":
        return "motion"
    if model in ("WBS", "WBP", "SNSN-0024X"):
        return "button"
    if model in ("SHSW-25", "SNSW-102P16EU"):
        return "cover"
    if model == "SPEM-003CEBEU":
        return "meter"
    return "switch"


@dataclass
class DeviceSpec:
    """One device to simulate: a model code (myStrom literal code, Shelly type/SKU) and
    an option (Gen1 mode, RPC profile)."""

    model: str
    option: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> DeviceSpec:
        """``"WS2"``, ``"ch_v2"``, ``"SHSW-25:relay"``, ``"SNSW-102P16EU:cover"``."""
        model, _, option = text.strip().partition(":")
        model = ALIASES.get(model, model)
        spec = cls(model, option)
        spec.validate()
        return spec

    def validate(self) -> None:
        if self.model not in MYSTROM_MODELS and self.model not in GEN1_MODELS \
                and self.model not in RPC_MODELS:
            raise ValueError(f"unknown model {self.model!r}; known: {', '.join(known_models())}")

    def __str__(self) -> str:
        return f"{self.model}:{self.option}" if self.option else self.model


def known_models() -> list[str]:
    return [*MYSTROM_MODELS, *GEN1_MODELS, *RPC_MODELS]


def household_mix() -> list[DeviceSpec]:
    """The default household: every kind of device homedash has to handle."""
    return [DeviceSpec.parse(m) for m in (
        "WS2", "WSE", "WSW", "LCS", "WRB", "WRS", "WMS", "WBS",
        "SHSW-PM", "SHSW-25:roller", "SHPLG-S", "SHDM-2", "SHRGBW2:color", "SHHT-1",
        "SNSW-001P16EU", "SNSW-102P16EU:cover", "SPSW-104PE16EU", "SNSN-0013A", "SNSN-0024X",
        "SPEM-003CEBEU", "S3SW-001P16EU", "S4SW-001P16EU",
    )]


def may_own_addresses() -> bool:
    """127.0.x.y:80 needs root (port 80) -- or our own network namespace."""
    return in_private_namespace() or (hasattr(os, "geteuid") and os.geteuid() == 0)


def _load_rpc_class() -> type[SimDevice] | None:
    try:
        from .shelly_rpc import ShellyRpc
    except ImportError as exc:  # built by another part of the project
        warnings.warn(f"Shelly Gen2+ devices skipped: {exc}", RuntimeWarning, stacklevel=3)
        return None
    return ShellyRpc


class Fleet:
    """Builds, starts and stops many simulated devices in-process."""

    def __init__(
        self,
        specs: list[DeviceSpec | str] | None = None,
        *,
        host: str = "127.0.0.1",
        base_port: int = 0,
        seed: int = 1,
        announce_to: tuple[str, int] | None = None,
        count: int | None = None,
        per_device_addresses: bool = False,
        protect: bool = False,
        control_port: int | None = None,
        announce_interval: float = 5.0,
        coiot_peer: str = "",
        update_period: float = 15.0,
        sleepers_wake_every: float | None = None,
        first_address: str = "127.0.1.1",
    ) -> None:
        if not is_loopback(host) and not in_private_namespace():
            raise ValueError(f"the simulator binds loopback only, not {host!r}")
        if announce_to is not None:
            check_send_target(announce_to[0])
        if per_device_addresses and not is_loopback(first_address) and not in_private_namespace():
            raise ValueError(f"per-device addresses must be loopback, not {first_address!r}")
        if per_device_addresses and not may_own_addresses():
            raise PermissionError("per-device addresses need root (port 80) or HOMEDASH_PRIVATE_NETNS=1")
        parsed = [s if isinstance(s, DeviceSpec) else DeviceSpec.parse(s)
                  for s in (specs if specs is not None else household_mix())]
        for spec in parsed:
            spec.validate()
        if count is not None and parsed:
            parsed = [parsed[i % len(parsed)] for i in range(count)]
        self.specs = parsed
        self.host = host
        self.base_port = base_port
        self.seed = seed
        self.announce_to = announce_to
        self.per_device_addresses = per_device_addresses
        self.protect = protect
        self.control_port = control_port
        self.announce_interval = announce_interval
        self.coiot_peer = coiot_peer
        self.update_period = update_period
        self.sleepers_wake_every = sleepers_wake_every
        self.first_address = ipaddress.IPv4Address(first_address)
        self.devices: list[SimDevice] = []
        self.skipped: list[DeviceSpec] = []
        self.control: ControlApi | None = None
        self._built = False

    # ------------------------------------------------------------ building
    def address_for(self, index: int) -> tuple[str, int]:
        if self.per_device_addresses:
            # From 127.0.1.1 by default: 127.0.0.x is left to homedash itself.
            return str(self.first_address + index), 80
        return self.host, (self.base_port + index if self.base_port else 0)

    def build(self) -> list[SimDevice]:
        if self._built:
            return self.devices
        self._built = True
        rpc_class = None
        if any(s.model in RPC_MODELS for s in self.specs):
            rpc_class = _load_rpc_class()
        macs: set[str] = set()
        for index, spec in enumerate(self.specs):
            if spec.model in RPC_MODELS and rpc_class is None:
                self.skipped.append(spec)
                continue
            attempt = 0
            while True:
                salt = f":{attempt}" if attempt else ""
                rng = random.Random(f"homedash-sim:{self.seed}:{index}:{spec}{salt}")
                device = self._make(spec, index, rng, rpc_class)
                if device.mac not in macs:      # the MAC is the identity: never twice
                    break
                attempt += 1
            macs.add(device.mac)
            self.devices.append(device)
        return self.devices

    def _secret(self, index: int, rng: random.Random) -> str | None:
        if not self.protect or index % 3 != 1:
            return None
        words = ("apfel", "birne", "kirsche", "zwetschge", "quitte", "holunder")
        return f"{rng.choice(words)}-{rng.randint(100, 999)}"

    def _make(self, spec: DeviceSpec, index: int, rng: random.Random,
              rpc_class: type[SimDevice] | None) -> SimDevice:
        host, port = self.address_for(index)
        thing = rng.choice(THINGS[_thing(spec.model)])
        name = f"{rng.choice(ROOMS)} {thing}"
        secret = self._secret(index, rng)
        common: dict[str, Any] = dict(host=host, port=port, rng=rng, name=name)
        if spec.model in MYSTROM_MODELS:
            cls, options = MYSTROM_MODELS[spec.model]
            if cls is MyStromSwitch and thing in SWITCH_WATTS:
                options = {**options, "load": (thing, SWITCH_WATTS[thing])}
            return cls(**options, **common, token=secret, announce_to=self.announce_to,
                       announce_interval=self.announce_interval, **spec.extra)
        if spec.model in GEN1_MODELS:
            wake = self.sleepers_wake_every if spec.model == "SHHT-1" else None
            return ShellyGen1(spec.model, mode=spec.option or None, password=secret,
                              coiot_peer=self.coiot_peer, update_period=self.update_period,
                              wake_every=wake, **common, **spec.extra)
        assert rpc_class is not None
        kwargs: dict[str, Any] = dict(model=spec.model, password=secret, **common, **spec.extra)
        accepted = inspect.signature(rpc_class).parameters
        if spec.option and "profile" in accepted:
            kwargs["profile"] = spec.option
        if self.sleepers_wake_every and "wake_period" in accepted and spec.model == "SNSN-0013A":
            kwargs["wake_period"] = self.sleepers_wake_every
        return rpc_class(**{k: v for k, v in kwargs.items() if k in accepted})

    # ------------------------------------------------------------ running
    async def start(self) -> None:
        self.build()
        started: list[SimDevice] = []
        try:
            for chunk in range(0, len(self.devices), 32):
                batch = self.devices[chunk : chunk + 32]
                results = await asyncio.gather(*(d.start() for d in batch), return_exceptions=True)
                started += [d for d, r in zip(batch, results) if not isinstance(r, BaseException)]
                for result in results:
                    if isinstance(result, BaseException):
                        raise result
            if self.control_port is not None:
                self.control = ControlApi(self, port=self.control_port)
                await self.control.start()
        except BaseException:
            await asyncio.gather(*(d.stop() for d in started), return_exceptions=True)
            raise

    async def stop(self) -> None:
        if self.control is not None:
            await self.control.stop()
            self.control = None
        await asyncio.gather(*(d.stop() for d in self.devices), return_exceptions=True)

    async def __aenter__(self) -> Fleet:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.stop()

    # ------------------------------------------------------------ looking up
    def by_mac(self, mac: str) -> SimDevice:
        wanted = "".join(c for c in mac if c.isalnum()).upper()
        for device in self.devices:
            if device.mac == wanted:
                return device
        raise KeyError(mac)

    def of_model(self, model: str) -> list[SimDevice]:
        model = ALIASES.get(model, model)
        out = []
        for device in self.devices:
            code = getattr(device, "literal", "") or device.model
            if model in (code, device.model):
                out.append(device)
        return out

    def table(self) -> list[dict[str, Any]]:
        rows = []
        for device in self.devices:
            row = device.describe()
            row.setdefault("name", device.name)
            rows.append(row)
        return rows


# --------------------------------------------------------------------------- control API
async def _settle(result: Any, timeout: float = 10.0) -> Any:
    """Device hooks are sync, async, or return the task doing the work in the background.
    Wait for that task a while, but never cancel it: it may be a whole wake period."""
    if isinstance(result, asyncio.Future):
        done, _ = await asyncio.wait({result}, timeout=timeout)
        if result in done and not result.cancelled() and result.exception() is not None:
            raise result.exception()  # type: ignore[misc]
        return None
    if inspect.isawaitable(result):
        return await asyncio.wait_for(result, timeout)
    return result


async def _wake(device: SimDevice, seconds: Any) -> None:
    result = device.wake(float(seconds)) if seconds is not None else device.wake()  # type: ignore[attr-defined]
    # A wake task may only end when the device sleeps again: wait until it is awake.
    deadline = asyncio.get_running_loop().time() + 10
    if isinstance(result, asyncio.Future):
        while not getattr(device, "awake", True) and not result.done():
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.02)
        if result.done() and not result.cancelled() and result.exception() is not None:
            raise result.exception()  # type: ignore[misc]
    else:
        await _settle(result)


class ControlApi:
    """JSON over HTTP on loopback:

    GET  /devices                      every device (describe + faults + request counters)
    GET  /devices/{mac}
    POST /devices/{mac}/faults         {"latency": 0.5, "hang": true, ...} (partial update)
    DELETE /devices/{mac}/faults       clear all faults
    POST /devices/{mac}/power_off | power_on | reboot | sleep
    POST /devices/{mac}/move           {"host": "127.0.1.9", "port": 80}
    POST /devices/{mac}/secret         {"secret": "s3cret"} or {"secret": null}
    POST /devices/{mac}/flip           {"channel": 0}
    POST /devices/{mac}/press          {"channel": 0, "kind": "single"}
    POST /devices/{mac}/wake           {"seconds": 30}
    POST /devices/{mac}/motion         {"detected": true}   (myStrom PIR)
    POST /devices/{mac}/reset_counters
    """

    def __init__(self, fleet: Fleet, *, host: str = "127.0.0.1", port: int = 0) -> None:
        if not is_loopback(host):
            raise ValueError("the control API listens on loopback only")
        self.fleet = fleet
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        app = web.Application(client_max_size=16 * 1024)
        r = app.router
        r.add_get("/devices", self.h_list)
        r.add_get("/devices/{mac}", self.h_one)
        r.add_post("/devices/{mac}/faults", self.h_faults)
        r.add_delete("/devices/{mac}/faults", self.h_clear_faults)
        r.add_post("/devices/{mac}/{action}", self.h_action)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        if self.port == 0:
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @staticmethod
    def row(device: SimDevice) -> dict[str, Any]:
        row = device.describe()
        row.setdefault("name", device.name)
        row.update(faults=device.faults.as_dict(), in_flight=device.in_flight,
                   max_in_flight=device.max_in_flight, requests_total=device.requests_total)
        return row

    def _device(self, request: web.Request) -> SimDevice:
        try:
            return self.fleet.by_mac(request.match_info["mac"])
        except KeyError:
            raise web.HTTPNotFound(text="no such device") from None

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="body must be JSON") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="body must be a JSON object")
        return body

    async def h_list(self, request: web.Request) -> web.Response:
        return json_response([self.row(d) for d in self.fleet.devices])

    async def h_one(self, request: web.Request) -> web.Response:
        return json_response(self.row(self._device(request)))

    async def h_faults(self, request: web.Request) -> web.Response:
        device = self._device(request)
        body = await self._body(request)
        known = {f.name: f.type for f in fields(Faults)}
        for key, value in body.items():
            if key not in known:
                return web.Response(status=400, text=f"unknown fault {key!r}")
            if key == "latency":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 600:
                    return web.Response(status=400, text="latency: seconds 0..600")
            elif not isinstance(value, bool):
                return web.Response(status=400, text=f"{key}: true or false")
        for key, value in body.items():
            setattr(device.faults, key, float(value) if key == "latency" else value)
        return json_response(self.row(device))

    async def h_clear_faults(self, request: web.Request) -> web.Response:
        device = self._device(request)
        device.faults.clear()
        return json_response(self.row(device))

    async def h_action(self, request: web.Request) -> web.Response:
        device = self._device(request)
        action = request.match_info["action"]
        body = await self._body(request)
        try:
            if action == "power_off":
                await device.power_off()
            elif action == "power_on":
                await device.power_on()
            elif action == "reboot":
                await device.reboot()
            elif action == "sleep" and hasattr(device, "sleep"):
                await _settle(device.sleep())
            elif action == "wake" and hasattr(device, "wake"):
                await _wake(device, body.get("seconds"))
            elif action == "move":
                host = str(body.get("host", device.host))
                if not is_loopback(host) and not in_private_namespace():
                    return web.Response(status=400, text="move: loopback addresses only")
                port = body.get("port")
                await device.move_to(host, int(port) if port is not None else None)
            elif action == "secret":
                secret = body.get("secret")
                if secret is not None and not isinstance(secret, str):
                    return web.Response(status=400, text="secret: string or null")
                device.set_secret(secret)
            elif action == "flip":
                await _settle(device.flip(int(body.get("channel", 0))))  # type: ignore[attr-defined]
            elif action == "press":
                await _settle(device.press(int(body.get("channel", 0)),  # type: ignore[attr-defined]
                                           str(body.get("kind", "single"))))
            elif action == "motion" and hasattr(device, "motion"):
                await device.motion(bool(body.get("detected", True)))
            elif action == "reset_counters":
                device.reset_counters()
            else:
                return web.Response(status=404, text=f"{device.label} does not know {action!r}")
        except (ValueError, TypeError) as exc:
            return web.Response(status=400, text=str(exc))
        return json_response(self.row(device))


def format_table(rows: list[dict[str, Any]]) -> str:
    """The fleet as a plain text table (for the management command)."""
    columns = (("label", "model"), ("model", "code"), ("mac", "MAC"), ("address", "address"),
               ("secret", "password/token"), ("name", "name"))
    lines = [[title for _, title in columns]]
    for row in rows:
        lines.append([str(row.get(key, "") or ("" if key != "secret" else "-")) for key, _ in columns])
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def parse_announce_target(text: str) -> tuple[str, int]:
    """Parse ``host:port`` for --announce-to; loopback only (outside a namespace)."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected host:port, got {text!r}")
    ipaddress.ip_address(host)
    check_send_target(host)
    return host, int(port)
