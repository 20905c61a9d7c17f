"""What every simulated device shares: an HTTP + websocket server on its own address,
fault injection, and a record of how homedash treats it.

A simulated device is an aiohttp application bound to one (host, port), like a real device
on its own IP. Vendor modules subclass :class:`SimDevice` and add their routes in
``setup_routes``. Faults are applied by one middleware so every route honours them the same
way, and the same middleware counts requests in flight: real myStrom ESP8266 servers and
Shelly fw 2.x punish parallel requests, so tests assert homedash never sends two at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import json
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

# How long a "hung" device keeps a request open before the server gives up on it
# (clients time out long before; this only bounds the simulator's own memory).
HANG_SECONDS = 300.0
OVERSIZED_BYTES = 8 * 1024 * 1024


@dataclass
class Faults:
    """Per-device misbehaviour, switched on and off by tests and the control API."""

    latency: float = 0.0          # seconds added before every HTTP answer
    hang: bool = False            # accept the request, never answer
    http_500: bool = False        # answer every request with HTTP 500
    malformed: bool = False       # answer with something that is not JSON
    truncated: bool = False       # answer with JSON cut in half
    oversized: bool = False       # answer with a body far larger than any real one

    def clear(self) -> None:
        for name, value in Faults().__dict__.items():
            setattr(self, name, value)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8 and ::1 (and "localhost"): the only targets allowed outside a
    private network namespace."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def mac_from_rng(rng: random.Random, oui: str) -> str:
    """A MAC in the vendor's OUI (upper-case hex, no separators, as the devices print it)."""
    return oui.upper() + "".join(f"{rng.randrange(256):02X}" for _ in range(3))


class SimDevice:
    """Base class of all simulated devices."""

    vendor: str = ""
    model: str = ""          # model code as the device reports it (e.g. "SNSW-001P16EU", "106")
    label: str = ""          # short human label for the fleet table ("Plus 1PM")
    oui: str = "AABBCC"

    def __init__(
        self,
        *,
        mac: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.rng = rng or random.Random()
        self.mac = (mac or mac_from_rng(self.rng, self.oui)).upper()
        self.host = host
        self.port = port
        self.name = name or f"{self.label or self.model} {self.mac[-4:]}"
        self.faults = Faults()
        self.boot_time = time.monotonic()
        # Accounting for "never more than one request at a time".
        self.in_flight = 0
        self.max_in_flight = 0
        self.requests_total = 0
        self.request_log: collections.deque[tuple[float, str, str]] = collections.deque(maxlen=500)
        # What was in flight together whenever more than one request was: a test that
        # finds max_in_flight > 1 can say which parts of homedash overlapped.
        self.overlaps: collections.deque[tuple[str, ...]] = collections.deque(maxlen=50)
        self._handling: list[str] = []
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._websockets: set[web.WebSocketResponse] = set()
        self._tasks: set[asyncio.Task] = set()
        self._sleeper: asyncio.Task | None = None  # battery devices: the pending fall asleep

    # ---------------------------------------------------------------- identity
    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def secret(self) -> str:
        """Password or token a client needs, or "" when the device is open."""
        return ""

    def uptime(self) -> int:
        return int(time.monotonic() - self.boot_time)

    def describe(self) -> dict[str, Any]:
        """One row of the fleet table."""
        return {
            "vendor": self.vendor,
            "model": self.model,
            "label": self.label,
            "mac": self.mac,
            "address": self.address,
            "secret": self.secret,
        }

    # ---------------------------------------------------------------- server
    def setup_routes(self, app: web.Application) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024)
        self.setup_routes(app)
        return app

    async def start(self) -> None:
        if self._runner is None:
            # handler_cancellation: a client that gives up (timeout) cancels the handler,
            # so a "hung" request does not stay in flight for HANG_SECONDS; the short
            # shutdown_timeout keeps stop() from waiting a minute on such a handler.
            self._runner = web.AppRunner(
                self.build_app(), access_log=None, handle_signals=False,
                handler_cancellation=True, shutdown_timeout=0.5,
            )
            await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        # Only a listening site counts as "on": callers poll _site to see the device up.
        self._site = site
        if self.port == 0:
            sockets = site._server.sockets  # type: ignore[union-attr]
            self.port = sockets[0].getsockname()[1]
        await self.on_started()

    async def on_started(self) -> None:
        """Hook for subclasses (announcements, CoAP sockets, ...)."""

    async def on_stopping(self) -> None:
        """Hook for subclasses."""

    async def stop(self) -> None:
        await self.on_stopping()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        self._tasks.clear()
        await self.drop_websockets()
        if self._runner is not None:
            await self._runner.cleanup()
        self._runner = None
        self._site = None

    def spawn(self, coro) -> asyncio.Task:
        """Run a background task that dies with the device."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---------------------------------------------------------------- faults
    async def power_off(self) -> None:
        """The device is unplugged: connections are refused until power_on()."""
        if self._site is not None:
            await self.drop_websockets()
            await self._site.stop()
            self._site = None
            # Stopping the listener leaves keep-alive connections serving; a device
            # without power answers nothing, so cut them too.
            self.abort_connections()

    def abort_connections(self) -> None:
        """Reset every established HTTP connection (the device lost power or Wi-Fi)."""
        server = self._runner.server if self._runner is not None else None
        for transport in list(getattr(server, "_connections", {}).values()):
            transport.abort()

    async def reboot(self, downtime: float = 0.3) -> None:
        """Restart: connections refused for `downtime` seconds, then a fresh boot
        (power_on restarts uptime; on_boot lets vendor code reset its boot state)."""
        await self.power_off()
        await asyncio.sleep(downtime)
        self.on_boot()
        await self.power_on()

    def on_boot(self) -> None:
        """Hook for subclasses: state a real reboot resets (boot ids, energy since boot)."""

    async def power_on(self) -> None:
        if self._site is None:
            self.boot_time = time.monotonic()
            await self.start()

    # Battery devices are reachable only while awake; asleep is the same as unplugged.
    def _arm_sleep(self, seconds: float) -> None:
        if self._sleeper is not None:
            self._sleeper.cancel()

        async def doze() -> None:
            await asyncio.sleep(seconds)
            self._sleeper = None
            await self.power_off()

        self._sleeper = self.spawn(doze())

    async def sleep(self) -> None:
        if self._sleeper is not None:
            self._sleeper.cancel()
            self._sleeper = None
        await self.power_off()

    async def move_to(self, host: str, port: int | None = None) -> None:
        """DHCP gave the device a new address: same MAC, new (host, port)."""
        await self.power_off()
        self.host = host
        self.port = port if port is not None else 0
        await self.start()

    async def drop_websockets(self) -> None:
        """Websockets die mid-stream (no close frame), as when Wi-Fi drops."""
        for ws in list(self._websockets):
            transport = ws._req.transport if ws._req is not None else None  # type: ignore[attr-defined]
            if transport is not None:
                transport.abort()
            with contextlib.suppress(Exception):
                await ws.close()
        self._websockets.clear()

    def track_websocket(self, ws: web.WebSocketResponse) -> None:
        self._websockets.add(ws)

    def untrack_websocket(self, ws: web.WebSocketResponse) -> None:
        self._websockets.discard(ws)

    @contextlib.contextmanager
    def handling(self, what: str):
        """Count one request in flight (HTTP requests and websocket RPC frames alike)."""
        self.in_flight += 1
        self.requests_total += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.request_log.append((time.monotonic(), what, ""))
        self._handling.append(what)
        if self.in_flight > 1:
            self.overlaps.append(tuple(self._handling))
        try:
            yield
        finally:
            self.in_flight -= 1
            self._handling.remove(what)

    def reset_counters(self) -> None:
        self.max_in_flight = self.in_flight
        self.requests_total = 0
        self.request_log.clear()
        self.overlaps.clear()

    @web.middleware
    async def _middleware(self, request: web.Request, handler):
        is_upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if is_upgrade:
            # A websocket is a session, not a request; frames on it are counted by the
            # vendor code with handling().
            return await handler(request)
        with self.handling(f"{request.method} {request.path_qs}"):
            return await self._faulty(request, handler)

    async def _faulty(self, request: web.Request, handler):
        f = self.faults
        if f.latency:
            await asyncio.sleep(f.latency)
        if f.hang:
            await asyncio.sleep(HANG_SECONDS)
            raise web.HTTPRequestTimeout()
        if f.http_500:
            return web.Response(status=500, text="Internal Server Error")
        if f.malformed:
            return web.Response(text="<html><body>not json {", content_type="text/html")
        if f.oversized:
            return web.Response(body=b'{"pad":"' + b"x" * OVERSIZED_BYTES + b'"}',
                                content_type="application/json")
        response = await handler(request)
        if f.truncated and isinstance(response, web.Response) and response.body:
            body = bytes(response.body)
            return web.Response(body=body[: max(1, len(body) // 2)], status=response.status,
                                content_type=response.content_type)
        return response


class Appliance:
    """Whatever is plugged in behind a relay or dimmer: it draws a noisy power while on
    (0 W while off) and its energy is integrated like a metering chip does, piecewise
    constant between samples, so energy and average power stay consistent however
    often a client polls.

    ``clock`` is injectable so tests can step time exactly instead of sleeping.
    """

    def __init__(
        self,
        rng: random.Random,
        nominal_w: float,
        *,
        clock=time.monotonic,
        noise: float = 0.03,
        drift: float = 0.08,
    ) -> None:
        self.rng = rng
        self.nominal_w = nominal_w
        self.noise = noise
        self.drift = drift
        self.clock = clock
        self.level = 1.0                 # 0..1, e.g. dimmer brightness
        self.on = False
        self.energy_ws = 0.0             # since boot
        self._epoch = clock()
        self._t = self._epoch
        self._p = 0.0
        # (minute index since boot, energy at the start of that minute): enough to
        # answer Gen1 "counters" (energy of the last three whole minutes).
        self._minutes: collections.deque[tuple[int, float]] = collections.deque(maxlen=4)
        self._phase = rng.uniform(0, 6.28)

    def _draw(self, now: float) -> float:
        if not self.on or self.level <= 0:
            return 0.0
        slow = 1.0 + self.drift * math.sin(now / 97.0 + self._phase)
        jitter = 1.0 + self.rng.gauss(0.0, self.noise)
        return max(0.0, self.nominal_w * self.level * slow * jitter)

    def advance(self) -> float:
        """Integrate up to now, draw a new sample; returns the current power in W."""
        now = self.clock()
        if now > self._t:
            first = int((self._t - self._epoch) // 60) + 1
            last = int((now - self._epoch) // 60)
            for minute in range(max(first, last - 3), last + 1):
                boundary = self._epoch + minute * 60
                self._minutes.append((minute, self.energy_ws + self._p * (boundary - self._t)))
            self.energy_ws += self._p * (now - self._t)
            self._t = now
        self._p = self._draw(now)
        return self._p

    @property
    def power(self) -> float:
        """The current power without integrating (the last sample)."""
        return self._p

    def switch(self, on: bool, level: float | None = None) -> None:
        self.advance()
        self.on = on
        if level is not None:
            self.level = level
        self._p = self._draw(self._t)

    def minute_counters(self) -> list[float]:
        """Energy in watt-minutes of each of the last three whole minutes, newest first."""
        self.advance()
        current = int((self._t - self._epoch) // 60)
        starts = dict(self._minutes)
        out = []
        for minute in (current - 1, current - 2, current - 3):
            if minute in starts and minute + 1 in starts:
                out.append(round((starts[minute + 1] - starts[minute]) / 60.0, 3))
            else:
                out.append(0.0)
        return out

    def reboot(self) -> None:
        """Energy since boot starts again from zero."""
        self.energy_ws = 0.0
        self._epoch = self._t = self.clock()
        self._minutes.clear()
        self._p = self._draw(self._t)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """Compact JSON like the devices send (no spaces after separators)."""
    return web.Response(
        text=json.dumps(data, separators=(",", ":")),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def in_private_namespace() -> bool:
    """Set by our own `unshare -rn` harness: inside it, the only interface is a sealed
    loopback, so multicast and 127.x.y.z:80 are safe."""
    import os

    return os.environ.get("HOMEDASH_PRIVATE_NETNS") == "1"


def check_send_target(host: str) -> None:
    """Refuse to send UDP (announcements, debug logs, CoIoT) anywhere but loopback, unless
    we are inside a private network namespace. No packet of ours may reach a real LAN."""
    if not (is_loopback(host) or in_private_namespace()):
        raise ValueError(f"refusing to send to {host!r}: the simulator only talks to loopback")
