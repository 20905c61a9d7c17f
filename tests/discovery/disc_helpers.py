"""Helpers shared by the discovery tests: loopback addresses nobody else is using, free
ports on them, and small httpx transports that stand in for devices."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
from collections.abc import Callable
from typing import Any

import httpx


def loopback_block(rng: random.Random | None = None) -> str:
    """A random 127.x.y.0 prefix: other suites running at the same time stay on
    127.0.0.x, so collisions on a port are practically impossible."""
    rng = rng or random.Random()
    return f"127.{rng.randint(100, 250)}.{rng.randint(1, 250)}"


def free_port(host: str = "127.0.0.1") -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_free_on(host: str, port: int) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class FakeDevices:
    """An httpx transport answering like myStrom/Shelly devices at given hosts, counting
    requests and how many were in flight at once."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.routes: dict[tuple[str, str], Callable[[httpx.Request], httpx.Response] | dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.in_flight = 0
        self.peak = 0

    def mystrom(self, host: str, mac: str, type_code: int = 106, version: str = "4.0.14") -> None:
        self.routes[(host, "/api/v1/info")] = {"mac": mac, "type": type_code, "version": version, "ip": host}

    def shelly(self, host: str, data: dict[str, Any]) -> None:
        self.routes[(host, "/shelly")] = data

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handle))

    async def handle(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        self.requests.append((host, request.url.path))
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            route = self.routes.get((host, request.url.path))
            if route is None:
                if not any(h == host for h, _ in self.routes):
                    raise httpx.ConnectError("connection refused", request=request)
                return httpx.Response(404, request=request)
            if callable(route):
                return route(request)
            return httpx.Response(200, content=json.dumps(route).encode(), request=request,
                                  headers={"content-type": "application/json"})
        finally:
            self.in_flight -= 1

    def count(self, host: str | None = None) -> int:
        return sum(1 for h, _ in self.requests if host is None or h == host)
