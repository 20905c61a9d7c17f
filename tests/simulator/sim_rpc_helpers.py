"""Small raw-protocol helpers for the Shelly RPC simulator tests: a websocket JSON-RPC client
that does exactly what the wire allows (no library smoothing anything over), and the digest
formulas of shelly.md §4.2 written out independently of the simulator's own code."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp

from devices.simulator.shelly_rpc import ShellyRpc


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def json_auth(realm: str, password: str, nonce: Any, nc: int, user: str = "admin") -> dict[str, Any]:
    """The websocket ``auth`` object, as aioshelly builds it (nc as an int, hashed as str)."""
    ha1 = sha(f"{user}:{realm}:{password}")
    ha2 = sha("dummy_method:dummy_uri")
    cnonce = secrets.token_hex(8)
    return {"realm": realm, "username": user, "nonce": nonce, "cnonce": cnonce, "nc": nc,
            "response": sha(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"), "algorithm": "SHA-256"}


def digest_header(method: str, uri: str, realm: str, password: str, nonce: str, nc: int) -> str:
    """An RFC 7616 ``Authorization: Digest`` header (SHA-256, qop=auth)."""
    ha1 = sha(f"admin:{realm}:{password}")
    ha2 = sha(f"{method}:{uri}")
    cnonce = secrets.token_hex(8)
    nc_text = f"{nc:08x}"
    response = sha(f"{ha1}:{nonce}:{nc_text}:{cnonce}:auth:{ha2}")
    return (f'Digest username="admin", realm="{realm}", nonce="{nonce}", uri="{uri}", '
            f'algorithm=SHA-256, qop=auth, nc={nc_text}, cnonce="{cnonce}", response="{response}"')


def parse_challenge(header: str) -> dict[str, str]:
    assert header.startswith("Digest ")
    out = {}
    for part in header[len("Digest "):].split(", "):
        key, _, value = part.partition("=")
        out[key] = value.strip('"')
    return out


@contextlib.asynccontextmanager
async def running(device: ShellyRpc) -> AsyncIterator[ShellyRpc]:
    await device.start()
    try:
        yield device
    finally:
        await device.stop()


class RpcSocket:
    """A raw websocket JSON-RPC client: frames in, frames out, notifications collected."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, src: str | None) -> None:
        self.ws = ws
        self.src = src
        self.next_id = 0
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.backlog: list[dict[str, Any]] = []
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await self.inbox.put(json.loads(msg.data))

    async def send(self, method: str, params: dict[str, Any] | None = None, *,
                   auth: dict[str, Any] | None = None, with_src: bool = True, **extra: Any) -> int:
        self.next_id += 1
        frame: dict[str, Any] = {"id": self.next_id, "method": method, **extra}
        if with_src and self.src is not None:
            frame["src"] = self.src
        if params is not None:
            frame["params"] = params
        if auth is not None:
            frame["auth"] = auth
        await self.ws.send_str(json.dumps(frame))
        return self.next_id

    async def call(self, method: str, params: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        call_id = await self.send(method, params, **kw)
        return await self.expect(lambda f: f.get("id") == call_id)

    async def expect(self, match: Callable[[dict[str, Any]], bool], timeout: float = 3.0) -> dict[str, Any]:
        """First frame matching ``match`` (oldest first). Frames that do not match stay
        queued for later calls: a reply and the notification it caused may come in either
        order."""
        for i, frame in enumerate(self.backlog):
            if match(frame):
                return self.backlog.pop(i)
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.inbox.get()
                if match(frame):
                    return frame
                self.backlog.append(frame)

    async def notifications(self, method: str, within: float) -> list[dict[str, Any]]:
        """All ``method`` notifications already received or arriving within ``within`` s."""
        out = [f for f in self.backlog if f.get("method") == method]
        self.backlog = [f for f in self.backlog if f.get("method") != method]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while (left := deadline - loop.time()) > 0:
            try:
                frame = await asyncio.wait_for(self.inbox.get(), left)
            except asyncio.TimeoutError:
                break
            if frame.get("method") == method:
                out.append(frame)
            else:
                self.backlog.append(frame)
        return out

    def forget(self) -> None:
        """Drop everything received so far."""
        self.backlog.clear()
        while not self.inbox.empty():
            self.inbox.get_nowait()

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader


@contextlib.asynccontextmanager
async def rpc_socket(device: ShellyRpc, src: str | None = "dash-test") -> AsyncIterator[RpcSocket]:
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"http://{device.host}:{device.port}/rpc")
        sock = RpcSocket(ws, src)
        try:
            yield sock
        finally:
            await sock.close()


def is_notify(method: str) -> Callable[[dict[str, Any]], bool]:
    return lambda frame: frame.get("method") == method
