"""Helpers shared by the myStrom / Shelly Gen1 / fleet simulator tests (not collected)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import socket
import time
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from devices.simulator.base import in_private_namespace
from tests.waiting import until

NO_ENCODING = ("Accept-Encoding",)


def own_addresses_or_skip() -> None:
    """Clients hard-wired to port 80 (python-mystrom, aioshelly Gen1) need 127.0.0.x:80."""
    if not (in_private_namespace() or os.geteuid() == 0):
        pytest.skip("needs 127.0.0.x:80: run as root or inside `unshare -rn` with HOMEDASH_PRIVATE_NETNS=1")


# Test runs of other sessions may share this machine: give each process its own corner
# of 127/8 for the fixed-port (80, 5683) devices so parallel runs do not collide.
_NET = random.SystemRandom().randrange(20, 250)
_HOSTS = itertools.count(1)


def fresh_host() -> str:
    """A loopback address no other test (in this process) has used."""
    n = next(_HOSTS)
    return f"127.{_NET}.{n // 250}.{1 + n % 250}"




class FakeClock:
    """Monotonic time that only moves when a test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@asynccontextmanager
async def running(*devices):
    for device in devices:
        await device.start()
    try:
        yield devices[0] if len(devices) == 1 else devices
    finally:
        for device in devices:
            await device.stop()


def plain_session(**kwargs: Any) -> aiohttp.ClientSession:
    """What a well-behaved myStrom client looks like: no Accept-Encoding at all."""
    return aiohttp.ClientSession(skip_auto_headers=NO_ENCODING, **kwargs)


class UdpInbox(asyncio.DatagramProtocol):
    """A loopback UDP listener collecting (data, source address)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue(maxsize=1000)
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        if not self.queue.full():
            self.queue.put_nowait((data, addr))

    @property
    def port(self) -> int:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[1]

    async def next(self, timeout: float = 3.0) -> tuple[bytes, tuple[str, int]]:
        return await asyncio.wait_for(self.queue.get(), timeout)

    def drain(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@asynccontextmanager
async def udp_inbox(host: str = "127.0.0.1", port: int = 0):
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    inbox = UdpInbox()
    await loop.create_datagram_endpoint(lambda: inbox, sock=sock)
    try:
        yield inbox
    finally:
        inbox.close()


class HookReceiver:
    """A loopback HTTP server recording every request a device makes to it (action URLs,
    notify URLs)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _any(self, request: web.Request) -> web.Response:
        self.calls.append({"method": request.method, "path": request.path,
                           "query": dict(request.query), "body": await request.text(),
                           "content_type": request.content_type,
                           "headers": dict(request.headers)})
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._any)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base(self) -> str:
        return f"127.0.0.1:{self.port}"


@asynccontextmanager
async def hook_receiver():
    receiver = HookReceiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


# ------------------------------------------------------------------ JSON shape comparison
# Fields real firmware reports as null in some states (wifi_sta before DHCP, a relay
# without a name, an unset timezone): ours may be null where the capture is not, and the
# other way round.
NULLABLE = {"name", "ip", "gw", "mask", "dns", "ssid", "timezone", "lat", "lng"}


def json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"      # JSON has one number type; firmware prints 0 and 0.0 alike
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def shape_problems(capture: Any, ours: Any, path: str = "$") -> list[str]:
    """Every key of the capture must exist in ours with the same JSON type, recursively.
    Lists: the capture's i-th element is compared with ours' i-th (or our last)."""
    key = path.rsplit(".", 1)[-1].split("[")[0]
    kc, ko = json_kind(capture), json_kind(ours)
    if kc == "null" or (ko == "null" and key in NULLABLE):
        return []
    if kc != ko:
        return [f"{path}: capture has {kc} {capture!r:.40}, ours {ko} {ours!r:.40}"]
    problems: list[str] = []
    if kc == "object":
        for name, value in capture.items():
            if name not in ours:
                problems.append(f"{path}.{name}: missing in ours")
            else:
                problems += shape_problems(value, ours[name], f"{path}.{name}")
    elif kc == "array" and capture and ours:
        for i, value in enumerate(capture):
            problems += shape_problems(value, ours[min(i, len(ours) - 1)], f"{path}[{i}]")
    elif kc == "array" and capture and not ours:
        problems.append(f"{path}: ours is empty, capture is not")
    return problems


def only_value(keyed: dict[str, Any]) -> Any:
    """myStrom /api/v1/device answers {"<MAC>": {...}}: the one value."""
    assert isinstance(keyed, dict) and len(keyed) == 1, keyed
    return next(iter(keyed.values()))


def dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))
