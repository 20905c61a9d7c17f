"""One session per adopted device: the only path between homedash and that device.

A session owns the device's driver (and with it the device's gate, shared with every other
part of homedash that talks to the device, so nothing overlaps on the wire), decides how
to follow the device — push where the device can push, polling where it cannot, nothing
for sleepers that report by themselves — and turns every answer or failure into a
StateStore update. Start-up is staggered and
failures back off exponentially with jitter, so a restart of homedash or a dead access
point never turns into a burst of requests at every device.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from devices.drivers.errors import DeviceError, Unsupported
from devices.drivers.gate import gate_for
from devices.drivers.types import ChannelState, Event, SystemState
from devices.runtime.state import StateStore

log = logging.getLogger(__name__)

MAX_BACKOFF = 60.0        # seconds between attempts at a device that stays unreachable
START_SPREAD = 5.0        # first requests spread over this many seconds at start-up
OFFLINE_AFTER = 2         # failures in a row before a device is shown offline
SAFETY_POLL = 60.0        # GetStatus behind every push path
SLEEPER_MARGIN = 2.2      # a sleeper is offline after missing this many wake periods

MYSTROM_SWITCH_TYPES = {101, 106, 107, 114, 120, 122}
MYSTROM_LIGHT_TYPES = {102, 105}
MYSTROM_SLEEPER_TYPES = {103, 104, 118}


@dataclass(frozen=True)
class DeviceConfig:
    """What a session needs to know about a device, copied out of the database row so the
    session never touches the ORM from the event loop."""

    pk: int
    mac: str
    vendor: str
    generation: int | None
    model_code: str
    host: str
    port: int
    username: str = ""
    password: str = ""
    token: str = ""
    poll_interval: float = 5.0
    raw_info: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @classmethod
    def from_device(cls, device) -> "DeviceConfig":
        creds = device.credentials
        return cls(
            pk=device.pk, mac=device.mac, vendor=device.vendor, generation=device.generation,
            model_code=device.model_code or "", host=device.host, port=device.port,
            username=getattr(creds, "username", "") or "", password=getattr(creds, "password", "") or "",
            token=getattr(creds, "token", "") or "", poll_interval=float(device.poll_interval or 5.0),
            raw_info=dict(device.raw_info or {}),
        )

    @property
    def mystrom_type(self) -> int | None:
        from devices.drivers.mystrom import parse_mystrom_type

        number, _ = parse_mystrom_type(self.raw_info.get("type", self.model_code) or self.model_code)
        return number

    @property
    def sleeping(self) -> bool:
        if self.vendor == "mystrom":
            return self.mystrom_type in MYSTROM_SLEEPER_TYPES
        info = self.raw_info
        return bool(info.get("sleep_mode")) or self.model_code in {"SHHT-1", "SHWT-1", "SHDW-2", "SHSM-01", "SHBTN-2",
                                                                  "SNSN-0013A", "S3SN-0U12A", "SNSN-0031Z", "S4SN-0071A"}


@dataclass
class Snapshot:
    channels: list[ChannelState]
    system: SystemState | None = None
    events: list[Event] = field(default_factory=list)
    raw: dict[str, Any] | None = None


class CommandError(ValueError):
    """A command the device cannot do (wrong channel, bad value): the user's mistake, not
    the device's."""


def _channel_index(key: str) -> int:
    try:
        return int(key.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        raise CommandError(f"unknown channel {key!r}") from None


def _ramp_ms(params: dict[str, Any]) -> int | None:
    """An optional fade in milliseconds (0..10 minutes); anything else means "no fade"."""
    ramp = params.get("ramp_ms")
    if isinstance(ramp, (int, float)) and not isinstance(ramp, bool) and 0 <= ramp <= 600_000:
        return int(ramp)
    return None


def _hsv_to_rgb(params: dict[str, Any]) -> tuple[tuple[int, int, int], float]:
    """{h 0-360, s 0-100, v 0-100} -> (full-brightness RGB bytes, brightness %): Shelly
    devices take the hue as RGB and the brightness separately."""
    import colorsys

    try:
        h, s, v = (float(params[k]) for k in ("h", "s", "v"))
    except (KeyError, TypeError, ValueError):
        raise CommandError("colour needs h (0-360), s and v (0-100)") from None
    if not (0 <= h <= 360 and 0 <= s <= 100 and 0 <= v <= 100):
        raise CommandError("colour needs h (0-360), s and v (0-100)")
    r, g, b = colorsys.hsv_to_rgb((h % 360) / 360.0, s / 100.0, 1.0)
    return (round(r * 255), round(g * 255), round(b * 255)), v


def _kelvin(params: dict[str, Any]) -> int:
    try:
        value = int(float(params["kelvin"]))
    except (KeyError, TypeError, ValueError):
        raise CommandError("colour temperature must be a number of kelvin") from None
    if not 2700 <= value <= 6500:
        raise CommandError("colour temperature must be 2700 to 6500 K")
    return value


def _pct(params: dict[str, Any], name: str) -> float:
    try:
        value = float(params[name])
    except (KeyError, TypeError, ValueError):
        raise CommandError(f"{name} must be a number from 0 to 100") from None
    if not 0 <= value <= 100:
        raise CommandError(f"{name} must be a number from 0 to 100")
    return value


# ----------------------------------------------------------------------------- adapters
class Adapter:
    """The vendor-specific part: how to read a device and how to command it."""

    push = False

    def __init__(self, config: DeviceConfig, client: httpx.AsyncClient) -> None:
        self.config = config
        self.client = client
        # The device's one turn in this process: polls, commands, debug-log switches,
        # credential checks and discovery's probes of this address all take it, one
        # request at a time. In scaled mode it lives in the worker that owns the device.
        self.gate = gate_for(mac=config.mac, host=config.host, port=config.port)

    async def poll(self) -> Snapshot:  # pragma: no cover - abstract
        raise NotImplementedError

    async def command(self, channel: str, action: str, params: dict[str, Any]) -> list[ChannelState]:
        raise CommandError(f"{action!r} is not something this device can do")

    async def close(self) -> None:
        pass


class MyStromAdapter(Adapter):
    def __init__(self, config: DeviceConfig, client: httpx.AsyncClient) -> None:
        super().__init__(config, client)
        from devices.drivers.mystrom import MyStrom

        self.driver = MyStrom(client, config.host, config.port, token=config.token or None, mac=config.mac,
                              gate=self.gate)
        self.kind = self._kind(config.mystrom_type)
        self._temperature_at = 0.0

    @staticmethod
    def _kind(number: int | None) -> str:
        if number in MYSTROM_LIGHT_TYPES:
            return "light"
        if number == 110:
            return "pir"
        if number in MYSTROM_SLEEPER_TYPES:
            return "button"
        return "switch"  # switches and unknown types that answer /report

    async def poll(self) -> Snapshot:
        if self.kind == "light":
            return Snapshot([await self.driver.light_state()])
        if self.kind == "pir":
            return Snapshot(await self.driver.sensors())
        state = await self.driver.report()
        return Snapshot([state])

    async def command(self, channel: str, action: str, params: dict[str, Any]) -> list[ChannelState]:
        d = self.driver
        if self.kind == "switch":
            if action == "on":
                return [await d.set_relay(True)]
            if action == "off":
                return [await d.set_relay(False)]
            if action == "toggle":
                return [await d.toggle()]
        elif self.kind == "light":
            ramp = _ramp_ms(params)
            if action in ("on", "off", "toggle"):
                return [await d.set_light(action=action, ramp_ms=ramp)]
            if action == "brightness":
                state = await d.light_state()
                level = _pct(params, "brightness")
                if state.colour_mode == "mono" and state.colour:  # stay white, same tone
                    return [await d.set_light(action="on", mono=(int(state.colour[0]), int(round(level))), ramp_ms=ramp)]
                h, s = (state.colour or (0.0, 0.0, 0.0))[:2] if state.colour_mode == "hsv" else (0.0, 0.0)
                return [await d.set_light(action="on", hsv=(h, s, level), ramp_ms=ramp)]
            if action == "white":
                try:
                    tone = int(params["white"])
                except (KeyError, TypeError, ValueError):
                    raise CommandError("white needs a tone from 1 (warmest) to 18") from None
                if not 1 <= tone <= 18:
                    raise CommandError("white needs a tone from 1 (warmest) to 18")
                state = await d.light_state()
                level = state.brightness_pct if state.on and state.brightness_pct else 100.0
                return [await d.set_light(action="on", mono=(tone, int(round(level))), ramp_ms=ramp)]
            if action == "colour":
                try:
                    h, s, v = (float(params[k]) for k in ("h", "s", "v"))
                except (KeyError, TypeError, ValueError):
                    raise CommandError("colour needs h (0-360), s and v (0-100)") from None
                return [await d.set_light(action="on", hsv=(h, s, v), ramp_ms=ramp)]
        return await super().command(channel, action, params)


class Gen1Adapter(Adapter):
    def __init__(self, config: DeviceConfig, client: httpx.AsyncClient) -> None:
        super().__init__(config, client)
        from devices.drivers.shelly_gen1 import ShellyGen1

        self.driver = ShellyGen1(client, config.host, config.port, username=config.username or "admin",
                                 password=config.password or None, device=config.mac, gate=self.gate)
        self._colour_mode = str(config.raw_info.get("mode") or "")

    async def poll(self) -> Snapshot:
        result = await self.driver.poll()
        return Snapshot(result.channels, result.system, result.events, result.raw)

    async def command(self, channel: str, action: str, params: dict[str, Any]) -> list[ChannelState]:
        d = self.driver
        kind, _, _ = channel.partition(":")
        index = _channel_index(channel)
        if kind == "relay" and action in ("on", "off", "toggle"):
            return [await d.relay(index, action)]
        if kind == "roller":
            if action in ("open", "close", "stop"):
                return [await d.roller(index, action)]
            if action == "position":
                return [await d.roller(index, "to_pos", position=_pct(params, "position"))]
        if kind == "light":
            path = "white" if self._colour_mode == "white" else "light"
            fade = _ramp_ms(params)
            if self._colour_mode == "color":
                if action in ("on", "off", "toggle"):
                    return [await d.color(index, turn=action, transition_ms=fade)]
                if action == "brightness":
                    return [await d.color(index, turn="on", gain=_pct(params, "brightness"), transition_ms=fade)]
                if action == "colour":
                    rgb, gain = _hsv_to_rgb(params)
                    return [await d.color(index, turn="on", rgb=rgb, gain=gain, transition_ms=fade)]
            else:
                if action in ("on", "off", "toggle"):
                    return [await d.light(index, turn=action, path=path, transition_ms=fade)]
                if action == "brightness":
                    return [await d.light(index, turn="on", brightness=_pct(params, "brightness"), path=path,
                                          transition_ms=fade)]
                if action == "colour_temp":
                    return [await d.light(index, turn="on", temp_k=_kelvin(params), path=path, transition_ms=fade)]
        return await super().command(channel, action, params)


def make_adapter(config: DeviceConfig, client: httpx.AsyncClient) -> Adapter:
    if config.vendor == "mystrom":
        return MyStromAdapter(config, client)
    if (config.generation or 1) >= 2:
        from devices.runtime.rpc import RpcAdapter

        return RpcAdapter(config, client)
    return Gen1Adapter(config, client)


def describe_error(exc: BaseException) -> str:
    """The words a household member sees on a card."""
    from devices.drivers import errors as e

    words = {
        e.Unreachable: "unreachable", e.DeviceTimeout: "not answering (timeout)",
        e.AuthRequired: "needs a password or token", e.BadToken: "wrong token",
        e.WrongCredentials: "wrong password", e.Throttled: "throttled by the device",
        e.CorsRefused: "refused by the device's CORS protection", e.Unsupported: "not supported by this firmware",
        e.ProtocolError: "answered garbage", e.RpcError: "refused by the device",
        e.Flooding: "floods homedash with messages",
    }
    for cls in type(exc).__mro__:
        if cls in words:
            return words[cls]
    return "failed"


# ----------------------------------------------------------------------------- sessions
class DeviceSession:
    def __init__(self, config: DeviceConfig, store: StateStore, client: httpx.AsyncClient,
                 *, start_delay: float = 0.0, rng: random.Random | None = None) -> None:
        self.config = config
        self.store = store
        self.client = client
        self.adapter = make_adapter(config, client)
        self.start_delay = start_delay
        self.rng = rng or random.Random()
        self.stopping = asyncio.Event()
        self.wakeup = asyncio.Event()  # poll now (after a command, or when asked)
        self._failures = 0
        self.coiot_until = 0.0  # while CoIoT pushes arrive, polling is only a safety net
        self.store.ensure(config.pk, config.mac)

    @property
    def live(self):
        return self.store.devices[self.config.pk]

    def backoff(self) -> float:
        """Exponential back-off with full jitter, capped."""
        base = min(MAX_BACKOFF, self.config.poll_interval * (2 ** min(self._failures, 8)))
        return self.rng.uniform(base / 2, base)

    async def _wait(self, seconds: float) -> None:
        """Sleep, but wake early for stop or a poll-now request."""
        self.wakeup.clear()
        stop = asyncio.ensure_future(self.stopping.wait())
        poke = asyncio.ensure_future(self.wakeup.wait())
        try:
            await asyncio.wait({stop, poke}, timeout=max(0.0, seconds), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (stop, poke):
                task.cancel()

    async def run(self) -> None:
        await self._wait(self.start_delay)
        try:
            if self.config.sleeping and not self.adapter.push:
                await self._follow_sleeper()
            elif self.adapter.push:
                await self.adapter.follow(self)  # type: ignore[attr-defined]
            else:
                await self._poll_loop()
        finally:
            with contextlib.suppress(Exception):
                await self.adapter.close()

    async def poll_once(self) -> None:
        try:
            snap = await self.adapter.poll()
        except DeviceError as exc:
            self._failures += 1
            self.store.failure(self.config.pk, f"{describe_error(exc)}: {exc}", offline_after=OFFLINE_AFTER)
            raise
        self._failures = 0
        self.store.apply(self.config.pk, snap.channels, system=snap.system, raw_status=snap.raw,
                         events=snap.events, source="poll")

    async def _poll_loop(self) -> None:
        self.live.health.mode = "poll"
        self.coiot_until = 0.0
        while not self.stopping.is_set():
            try:
                await self.poll_once()
                delay = self.config.poll_interval
                if time.monotonic() < self.coiot_until:
                    delay = max(delay, SAFETY_POLL)
            except DeviceError:
                delay = self.backoff()
            except Exception:  # a bug in a parser must not kill the session
                log.exception("polling %s failed unexpectedly", self.config.mac)
                delay = self.backoff()
            await self._wait(delay)

    async def _follow_sleeper(self) -> None:
        """Sleepers report by themselves (action URLs, CoIoT, outbound websocket); polling
        would only ever find them asleep. Judge presence by their wake period."""
        live = self.live
        live.health.mode = "sleeping"
        period = float(self.config.raw_info.get("wakeup_period") or 12 * 3600)
        while not self.stopping.is_set():
            if live.online and live.updated_at and time.time() - live.updated_at > period * SLEEPER_MARGIN:
                self.store.set_presence(self.config.pk, online=False)
            await self._wait(min(period, 300.0))

    async def command(self, channel: str, action: str, params: dict[str, Any] | None = None) -> list[ChannelState]:
        """Run one command through the device's own driver (and so its gate)."""
        try:
            states = await self.adapter.command(channel, action, params or {})
        except DeviceError as exc:
            self.store.failure(self.config.pk, f"{describe_error(exc)}: {exc}", offline_after=OFFLINE_AFTER)
            raise
        except ValueError as exc:  # the driver validated an argument
            raise CommandError(str(exc)) from exc
        self._failures = 0
        self.store.apply(self.config.pk, states, source="command")
        # The device's own answer may lack readings (power, position); poll soon.
        if not self.adapter.push:
            self.wakeup.set()
        return states

    def stop(self) -> None:
        self.stopping.set()
