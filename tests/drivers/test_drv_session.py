"""ShellyRpcSession and DebugLogStream against a small in-test websocket device.

The full simulator covers the protocol end to end; this fake keeps the session's own
logic (bootstrap, re-arming, merging, reconnects, auth retries, device requests, bad
frames) testable on its own and fast.
"""

from __future__ import annotations

import asyncio
import base64
import http
import json
import secrets

import pytest
from websockets.asyncio.server import serve
from websockets.datastructures import Headers
from websockets.http11 import Response

from devices.drivers import (
    AuthRequired,
    DebugLogStream,
    DeviceTimeout,
    RpcError,
    SessionUpdate,
    ShellyRpcSession,
    Unreachable,
    WrongCredentials,
)
from devices.drivers.shelly_rpc import WS_HA2, parse_www_authenticate, sha256_hex

REALM = "shellyplus1pm-aabbccddeeff"


class FakeRpcDevice:
    def __init__(self, password: str | None = None, numeric_nonces: bool = False) -> None:
        self.ha1 = sha256_hex(f"admin:{REALM}:{password}") if password else None
        self.numeric = numeric_nonces
        self.nonces: dict[object, int] = {}
        self.status = {
            "switch:0": {"id": 0, "output": False, "apower": 0.0, "aenergy": {"total": 5.0}},
            "input:0": {"id": 0, "state": False},
            "sys": {"uptime": 10},
        }
        self.clients: set = set()
        self.srcs: list[str] = []
        self.replies_from_client: list[dict] = []
        self.expire_next = False
        self.throttle = 0
        self.failures = 0

    async def __aenter__(self):
        self.server = await serve(self.handler, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        await self.server.wait_closed()

    def challenge(self, fid, src, stale=False):
        nonce = secrets.randbelow(10**9) if self.numeric else base64.b64encode(secrets.token_bytes(7)).decode()
        self.nonces[nonce] = 0
        message = {"auth_type": "digest", "nonce": nonce, "nc": 1, "realm": REALM, "algorithm": "SHA-256"}
        if stale:
            message["stale"] = True
        return {"id": fid, "src": REALM, "dst": src, "error": {"code": 401, "message": json.dumps(message)}}

    def check(self, frame):
        auth = frame.get("auth")
        if auth is None:
            return self.challenge(frame["id"], frame.get("src"))
        nonce = auth["nonce"]
        if nonce not in self.nonces:
            return self.challenge(frame["id"], frame.get("src"))
        expected = sha256_hex(f"{self.ha1}:{nonce}:{auth['nc']}:{auth['cnonce']}:auth:{WS_HA2}")
        if auth["response"] != expected or auth["nc"] != self.nonces[nonce] + 1:
            self.failures += 1
            return self.challenge(frame["id"], frame.get("src"))
        if self.expire_next:
            self.expire_next = False
            del self.nonces[nonce]
            return self.challenge(frame["id"], frame.get("src"), stale=True)
        self.nonces[nonce] = auth["nc"]
        return None

    async def handler(self, ws):
        self.clients.add(ws)
        try:
            async for text in ws:
                frame = json.loads(text)
                if "method" not in frame:
                    self.replies_from_client.append(frame)
                    continue
                if frame.get("src"):
                    self.srcs.append(frame["src"])
                method, fid, src = frame["method"], frame["id"], frame.get("src")
                if self.throttle:
                    self.throttle -= 1
                    await ws.send(json.dumps({"id": fid, "error": {"code": 429, "message": "Too many requests"}}))
                    continue
                if self.ha1 and method != "Shelly.GetDeviceInfo":
                    refusal = self.check(frame)
                    if refusal is not None:
                        await ws.send(json.dumps(refusal))
                        continue
                if method == "Hang":
                    continue
                if method == "Shelly.GetDeviceInfo":
                    result = {"id": REALM, "mac": "AABBCCDDEEFF", "gen": 2, "model": "SNSW-001P16EU",
                              "ver": "1.4.4", "app": "Plus1PM", "auth_en": bool(self.ha1), "auth_domain": REALM if self.ha1 else None}
                elif method == "Shelly.GetStatus":
                    result = self.status
                elif method == "Switch.Set":
                    was = self.status["switch:0"]["output"]
                    self.status["switch:0"]["output"] = frame["params"]["on"]
                    result = {"was_on": was}
                    await ws.send(json.dumps({"id": fid, "src": REALM, "dst": src, "result": result}))
                    await ws.send(json.dumps({"src": REALM, "dst": src, "method": "NotifyStatus",
                                              "params": {"ts": 1.0, "switch:0": {"output": frame["params"]["on"]}}}))
                    continue
                else:
                    await ws.send(json.dumps({"id": fid, "src": REALM, "error": {"code": -105, "message": "nope"}}))
                    continue
                await ws.send(json.dumps({"id": fid, "src": REALM, "dst": src, "result": result}))
        finally:
            self.clients.discard(ws)

    async def broadcast(self, frame):
        for ws in list(self.clients):
            await ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def drop(self):
        for ws in list(self.clients):
            ws.transport.abort()


def session_for(device: FakeRpcDevice, **kw) -> ShellyRpcSession:
    kw.setdefault("reconnect_min", 0.05)
    kw.setdefault("reconnect_max", 0.2)
    kw.setdefault("call_timeout", 2.0)
    kw.setdefault("throttle_backoff", 0.01)
    return ShellyRpcSession("127.0.0.1", device.port, **kw)


async def next_update(updates, kind, timeout=3.0) -> SessionUpdate:
    async def find():
        async for update in updates:
            if update.kind == kind:
                return update

    return await asyncio.wait_for(find(), timeout)


async def test_session_bootstrap_notifications_and_events():
    async with FakeRpcDevice() as device, session_for(device) as session:
        updates = session.updates()
        connected = await next_update(updates, "connected")
        assert connected.full and {c.key for c in connected.channels} == {"switch:0", "input:0"}
        assert session.info.generation == 2 and session.src in device.srcs  # armed with our src

        assert await session.switch_set(0, True) is False
        update = await next_update(updates, "status")
        assert update.changed == ("switch:0",) and update.channels[0].on is True
        assert session.status["switch:0"]["aenergy"]["total"] == 5.0  # merged, not replaced

        await device.broadcast({"method": "NotifyStatus", "params": {"switch:0": {"timer_duration": None}}})
        await next_update(updates, "status")
        assert "timer_duration" in session.status["switch:0"] and session.status["switch:0"]["timer_duration"] is None

        await device.broadcast({"method": "NotifyEvent", "params": {"ts": 3.0, "events": [
            {"component": "input:0", "id": 0, "event": "single_push", "ts": 3.0}]}})
        event = await next_update(updates, "event")
        assert event.events[0].kind == "single" and event.events[0].channel == "input:0"

        await device.broadcast({"method": "NotifyFullStatus", "params": {"ts": 4.0, "sys": {"uptime": 1}}})
        full = await next_update(updates, "status")
        assert full.full and session.status == {"sys": {"uptime": 1}}

        with pytest.raises(RpcError):
            await session.call("Unknown.Method")


async def test_session_answers_device_requests_and_ignores_garbage():
    async with FakeRpcDevice() as device, session_for(device) as session:
        await session.wait_connected(3)
        await device.broadcast({"id": 77, "src": REALM, "method": "Client.Ping", "params": {}})
        await device.broadcast("this is not json")
        await device.broadcast("[1,2,3]")
        await device.broadcast({"id": 999, "result": {}})  # reply to nothing we asked
        for _ in range(100):
            if device.replies_from_client:
                break
            await asyncio.sleep(0.01)
        reply = device.replies_from_client[0]
        assert reply["id"] == 77 and "error" in reply and reply["dst"] == REALM
        assert session.bad_frames >= 2
        assert (await session.get_status())["sys"]["uptime"] == 10  # still healthy


async def test_session_reconnects_and_rearms():
    async with FakeRpcDevice() as device, session_for(device) as session:
        updates = session.updates()
        await next_update(updates, "connected")
        armed_before = device.srcs.count(session.src)
        await device.drop()
        down = await next_update(updates, "disconnected")
        assert isinstance(down.error, Unreachable)
        await next_update(updates, "connected")
        assert session.connects == 2
        assert device.srcs.count(session.src) > armed_before  # requests with src again
        assert await session.switch_set(0, True) is False


async def test_session_unreachable_device_backs_off():
    async with FakeRpcDevice() as device:
        port = device.port
    session = ShellyRpcSession("127.0.0.1", port, reconnect_min=0.05, reconnect_max=0.1, call_timeout=0.3)
    async with session:
        with pytest.raises(Unreachable):
            await session.call("Shelly.GetStatus")
        assert isinstance(session.last_error, Unreachable)


async def test_session_call_timeout():
    async with FakeRpcDevice() as device, session_for(device) as session:
        await session.wait_connected(3)
        with pytest.raises(DeviceTimeout):
            await session.call("Hang", timeout=0.2)
        assert (await session.get_status())["sys"]["uptime"] == 10


@pytest.mark.parametrize("numeric", [False, True], ids=["fw2-base64-nonces", "fw1-numeric-nonces"])
async def test_session_digest_auth(numeric):
    async with FakeRpcDevice(password="pw", numeric_nonces=numeric) as device:
        async with session_for(device, password="pw") as session:
            await session.wait_connected(3)
            assert await session.switch_set(0, True) is False
            device.expire_next = True  # stale: re-challenge, not a wrong password
            assert (await session.get_status())["switch:0"]["output"] is True
            device.throttle = 1  # one 429: drop the nonce, wait, retry
            assert (await session.get_status())["sys"]["uptime"] == 10
            assert device.failures == 0

        async with session_for(device, password="wrong", auth_failure_backoff=5) as bad:
            with pytest.raises(WrongCredentials):
                await bad.wait_connected(3)
        assert device.failures <= (2 if numeric else 1)  # fw 2.x: no futile second attempt

        async with session_for(device, auth_failure_backoff=5) as none:
            with pytest.raises(AuthRequired):
                await none.wait_connected(3)


async def test_session_oversized_frame_reconnects():
    async with FakeRpcDevice() as device, session_for(device, max_size=4096) as session:
        updates = session.updates()
        await next_update(updates, "connected")
        await device.broadcast({"method": "NotifyStatus", "params": {"x": "y" * 10_000}})
        await next_update(updates, "disconnected")
        await next_update(updates, "connected")
        assert "x" not in session.status


# ----------------------------------------------------------------------------- debug log


class FakeDebugLog:
    def __init__(self, password: str | None) -> None:
        self.password = password
        self.nonce = base64.b64encode(b"debug-nonce!").decode()
        self.lines = [
            {"ts": 1.5, "level": 2, "data": "shelly_debug.cpp:236 Streaming logs", "fd": 1},
            {"ts": 1.6, "level": 2, "data": "x" * 5000, "fd": 102},
            "not json at all",
        ]

    def process_request(self, connection, request):
        if self.password is None:
            return None
        header = request.headers.get("Authorization")
        challenge = f'Digest qop="auth", realm="{REALM}", nonce="{self.nonce}", algorithm=SHA-256'
        if header:
            fields = dict(p.split("=", 1) for p in header[len("Digest "):].split(", "))
            fields = {k: v.strip('"') for k, v in fields.items()}
            ha1 = sha256_hex(f"admin:{REALM}:{self.password}")
            ha2 = sha256_hex(f"GET:{fields['uri']}")
            expected = sha256_hex(f"{ha1}:{fields['nonce']}:{fields['nc']}:{fields['cnonce']}:auth:{ha2}")
            if fields["response"] == expected and fields["uri"] == "/debug/log":
                return None
        return Response(http.HTTPStatus.UNAUTHORIZED, "Unauthorized", Headers({"WWW-Authenticate": challenge}), b"")

    async def handler(self, ws):
        for line in self.lines:
            await ws.send(line if isinstance(line, str) else json.dumps(line))
        await ws.close()

    async def __aenter__(self):
        self.server = await serve(self.handler, "127.0.0.1", 0, process_request=self.process_request)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        await self.server.wait_closed()


@pytest.mark.parametrize("password", [None, "pw"])
async def test_debug_log_stream(password):
    async with FakeDebugLog(password) as device:
        async with DebugLogStream("127.0.0.1", device.port, password=password, line_cap=300) as stream:
            lines = [line async for line in stream]
        assert [line.fd for line in lines] == [1, 102, None]
        assert lines[1].truncated and len(lines[1].text) == 300
        assert lines[2].text == "not json at all"
        assert isinstance(stream.closed_by, Unreachable)


async def test_debug_log_stream_auth_errors():
    async with FakeDebugLog("pw") as device:
        with pytest.raises(AuthRequired):
            await DebugLogStream("127.0.0.1", device.port).open()
        with pytest.raises(WrongCredentials):
            await DebugLogStream("127.0.0.1", device.port, password="nope").open()
    with pytest.raises(Unreachable):
        await DebugLogStream("127.0.0.1", device.port).open()


def test_challenge_header_shape_used_by_fake():
    assert parse_www_authenticate(f'Digest qop="auth", realm="{REALM}", nonce="a=", algorithm=SHA-256').nonce == "a="
