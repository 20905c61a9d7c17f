"""Transport behaviour without the simulator: what goes on the wire, caps, timeouts, error
mapping, the myStrom 404 diagnosis and the Shelly HTTP auth rules (httpx MockTransport
and a raw loopback socket)."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import pytest

from devices.drivers import (
    AuthRequired,
    BadToken,
    CorsRefused,
    DeviceTimeout,
    MyStrom,
    ProtocolError,
    RpcError,
    ShellyGen1,
    ShellyRpcHttp,
    Throttled,
    Unreachable,
    Unsupported,
    WrongCredentials,
    make_client,
    probe,
)
from devices.drivers import http as dhttp
from devices.drivers.shelly_rpc import parse_www_authenticate, sha256_hex


def mock_client(handler, **kw) -> httpx.AsyncClient:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler), trust_env=False, **kw)
    return client


def json_response(data, status=200, headers=None):
    return httpx.Response(status, content=json.dumps(data).encode(), headers={"Content-Type": "application/json", **(headers or {})})


# ----------------------------------------------------------------------------- the wire


class RawServer:
    """Loopback TCP server that records raw requests and answers with canned bytes."""

    def __init__(self, body: bytes = b'{"relay":true,"power":1.5}') -> None:
        self.body = body
        self.requests: list[bytes] = []

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await reader.readexactly(length) if length else b""
        self.requests.append(head + body)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            + f"Content-Length: {len(self.body)}\r\n\r\n".encode()
            + self.body
        )
        await writer.drain()
        writer.close()


async def test_no_accept_encoding_on_the_wire_and_token_sent():
    async with RawServer() as server, make_client() as client:
        switch = MyStrom(client, "127.0.0.1", server.port, token="s3cret")
        state = await switch.report()
        assert state.on is True and state.power_w == 1.5
        raw = server.requests[0].lower()
        assert b"accept-encoding" not in raw
        assert b"token: s3cret" in raw
        assert b"referer" not in raw and b"origin" not in raw
        # a plain GET through the shared client does not carry it either
        await dhttp.request(client, "GET", f"http://127.0.0.1:{server.port}/x", host="127.0.0.1")
        assert b"accept-encoding" not in server.requests[1].lower()


async def test_bulb_body_is_built_by_hand():
    reply = json.dumps({"6001942C4FDD": {"on": True, "color": "120;100;50", "mode": "hsv", "ramp": 300}}).encode()
    async with RawServer(reply) as server, make_client() as client:
        bulb = MyStrom(client, "127.0.0.1", server.port, mac="6001942C4FDD")
        state = await bulb.set_light(action="on", hsv=(120, 100, 50), ramp_ms=300)
        assert state.colour == (120.0, 100.0, 50.0) and state.on is True
        raw = server.requests[0]
        assert raw.startswith(b"POST /api/v1/device/6001942C4FDD ")
        assert b"content-type: application/x-www-form-urlencoded" in raw.lower()
        assert raw.endswith(b"action=on&mode=hsv&color=120;100;50&ramp=300")  # ';' literal
        assert b"accept-encoding" not in raw.lower()


def test_make_client_settings():
    client = make_client()
    assert "accept-encoding" not in client.headers
    assert client.follow_redirects is False and client.trust_env is False
    assert client.timeout.connect == dhttp.CONNECT_TIMEOUT and client.timeout.read == dhttp.READ_TIMEOUT


async def test_accept_encoding_added_by_someone_else_is_removed():
    seen = []

    def handler(request):
        seen.append(request.headers.get("accept-encoding"))
        return json_response({"relay": False})

    async with mock_client(handler) as client:  # a client with httpx defaults (gzip, ...)
        await MyStrom(client, "h").report()
    assert seen == [None]


# ----------------------------------------------------------------------------- caps / errors


async def test_body_cap_streaming_and_declared():
    async def big_stream():
        for _ in range(100):
            yield b"x" * 10_000

    def handler(request):
        if request.url.path == "/declared":
            return httpx.Response(200, content=b"{}", headers={"Content-Length": str(10**9)})
        return httpx.Response(200, content=big_stream())

    async with mock_client(handler) as client:
        with pytest.raises(ProtocolError, match="too large"):
            await dhttp.request(client, "GET", "http://h/stream", host="h", cap=50_000)
        with pytest.raises(ProtocolError, match="too large"):
            await dhttp.request(client, "GET", "http://h/declared", host="h")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (httpx.ConnectError("refused"), Unreachable),
        (httpx.ConnectTimeout("syn"), Unreachable),
        (httpx.ReadTimeout("slow"), DeviceTimeout),
        (httpx.PoolTimeout("pool"), DeviceTimeout),
        (httpx.ReadError("reset"), Unreachable),
        (httpx.RemoteProtocolError("Server disconnected without sending a response."), Unreachable),
        (httpx.RemoteProtocolError("illegal header"), ProtocolError),
        (httpx.DecodingError("bad gzip"), ProtocolError),
        (OSError("no route"), Unreachable),
    ],
)
async def test_transport_errors_are_typed(exc, expected):
    def handler(request):
        raise exc

    async with mock_client(handler) as client:
        with pytest.raises(expected):
            await dhttp.request(client, "GET", "http://h/x", host="h")


async def test_overall_deadline_against_a_trickling_device():
    async def trickle():
        for _ in range(50):
            await asyncio.sleep(0.05)
            yield b" "

    async with mock_client(lambda r: httpx.Response(200, content=trickle())) as client:
        with pytest.raises(DeviceTimeout):
            await dhttp.request(client, "GET", "http://h/x", host="h", deadline=0.3)


async def test_connection_refused_is_unreachable():
    # A port nobody listens on (bound then closed).
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    async with make_client() as client:
        with pytest.raises(Unreachable):
            await MyStrom(client, "127.0.0.1", port).report()


# ----------------------------------------------------------------------------- myStrom 404s


def mystrom_device(token: str | None = None, paths=("/report", "/api/v1/info"), ae_refused=True):
    """A myStrom-like handler: token check, CORS check, 404 for unknown paths."""

    def handler(request: httpx.Request):
        if ae_refused and "accept-encoding" in request.headers and "referer" not in request.headers:
            return httpx.Response(404)
        if token and request.headers.get("token") != token:
            return httpx.Response(404)
        if request.url.path not in paths:
            return httpx.Response(404)
        if request.url.path == "/api/v1/info":
            return json_response({"type": 107, "mac": "083AF271E800", "version": "3.83.1"})
        return json_response({"relay": True, "power": 2.0})

    return handler


async def test_404_means_bad_token():
    async with mock_client(mystrom_device(token="right")) as client:
        with pytest.raises(BadToken):
            await MyStrom(client, "h", token="wrong").report()
        with pytest.raises(AuthRequired):
            await MyStrom(client, "h").report()
        assert (await MyStrom(client, "h", token="right").report()).on is True


async def test_404_on_missing_path_is_unsupported():
    async with mock_client(mystrom_device(token="t")) as client:
        with pytest.raises(Unsupported):
            await MyStrom(client, "h", token="t").sensors()


async def test_404_with_accept_encoding_is_cors():
    async def add_encoding(request: httpx.Request) -> None:
        request.headers["Accept-Encoding"] = "gzip"  # e.g. a proxy/middleware re-adding it

    async with mock_client(mystrom_device(), event_hooks={"request": [add_encoding]}) as client:
        with pytest.raises(CorsRefused):
            await MyStrom(client, "h").report()


async def test_info_falls_back_to_legacy_and_temperature_to_old_path():
    def handler(request):
        path = request.url.path
        if path == "/api/v1/info":
            return httpx.Response(302, headers={"Location": "/index.html"})
        if path == "/info.json":
            return json_response({"version": "2.68.10", "mac": "AABBCCDDEEFF"})
        if path == "/temp":
            return json_response({"measured": 30, "compensation": 5, "compensated": 25})
        return httpx.Response(404)

    async with mock_client(handler) as client:
        device = MyStrom(client, "h")
        info = await device.info()
        assert (info.type_code, info.mac, info.firmware) == (101, "AABBCCDDEEFF", "2.68.10")
        assert (await device.temperature()).compensated == 25


async def test_info_html_instead_of_json():
    def handler(request):
        if request.url.path == "/api/v1/info":
            return httpx.Response(200, content=b"<html>index</html>")
        if request.url.path == "/info.json":
            return json_response({"version": "2.68.10", "mac": "AABBCCDDEEFF"})
        return httpx.Response(404)

    async with mock_client(handler) as client:
        assert (await MyStrom(client, "h").info()).model == "WSW"


async def test_info_from_something_else_is_a_protocol_error():
    def handler(request):
        if request.url.path == "/api/v1/info":
            return httpx.Response(200, content=b"<html>router login</html>")
        return httpx.Response(404)

    async with mock_client(handler) as client:
        with pytest.raises(ProtocolError):
            await MyStrom(client, "h").info()


async def test_mystrom_rejects_bad_arguments_before_sending():
    async with mock_client(lambda r: httpx.Response(500)) as client:
        device = MyStrom(client, "h", mac="AABBCCDDEEFF")
        for call in (
            lambda: device.set_light(hsv=(400, 0, 0)),
            lambda: device.set_light(rgbw=(256, 0, 0, 0)),
            lambda: device.set_light(hsv=(1, 1, 1), mono=(1, 1)),
            lambda: device.set_light(),
            lambda: device.timer("later", 5),
            lambda: device.power_cycle(0),
            lambda: device.set_action("../x", "get://x"),
            lambda: device.set_action("single", "get://x\r\nHost: evil"),
        ):
            with pytest.raises(ValueError):
                await call()
        with pytest.raises(ProtocolError):
            await device.report()  # HTTP 500


# ----------------------------------------------------------------------------- Shelly Gen1


async def test_gen1_basic_auth():
    good = "Basic " + base64.b64encode(b"admin:pw").decode()

    def handler(request):
        if request.url.path == "/shelly":
            return json_response({"type": "SHSW-1", "mac": "AABBCCDDEEFF", "auth": True, "fw": "x"})
        if request.headers.get("authorization") != good:
            return httpx.Response(401)
        return json_response({"ison": True, "source": "http"})

    async with mock_client(handler) as client:
        assert (await ShellyGen1(client, "h").shelly()).auth_enabled
        with pytest.raises(AuthRequired):
            await ShellyGen1(client, "h").relay(0, "on")
        with pytest.raises(WrongCredentials):
            await ShellyGen1(client, "h", password="nope").relay(0, "on")
        state = await ShellyGen1(client, "h", password="pw").relay(0, "on")
        assert state.on is True and state.key == "relay:0"


# ----------------------------------------------------------------------------- Shelly RPC HTTP


class DigestDevice:
    """Just enough of fw 2.x HTTP digest: nonces, stale, nc per nonce, 429 on demand."""

    realm = "shellyplus1pm-aabbccddeeff"

    def __init__(self, password="pw"):
        self.ha1 = sha256_hex(f"admin:{self.realm}:{password}")
        self.nonces: dict[str, int] = {}
        self.counter = 0
        self.expire_next = False
        self.throttle = 0
        self.seen_auth = 0
        self.challenges = 0

    def challenge(self, stale=False):
        self.counter += 1
        nonce = base64.b64encode(f"n{self.counter}".encode()).decode()  # ends in '='
        self.nonces[nonce] = 0
        self.challenges += 1
        value = f'Digest qop="auth", realm="{self.realm}", nonce="{nonce}", algorithm=SHA-256'
        if stale:
            value += ", stale=true"
        return httpx.Response(401, headers={"WWW-Authenticate": value})

    def __call__(self, request: httpx.Request):
        if self.throttle:
            self.throttle -= 1
            return json_response({"id": 1, "error": {"code": 429, "message": "Too many requests"}}, 429, {"Retry-After": "0.01"})
        header = request.headers.get("authorization")
        if not header:
            return self.challenge()
        self.seen_auth += 1
        fields = {}
        for part in header[len("Digest "):].split(", "):
            k, _, v = part.partition("=")
            fields[k] = v.strip('"')
        nonce = fields["nonce"]
        if nonce not in self.nonces:
            return self.challenge()
        if self.expire_next:
            self.expire_next = False
            del self.nonces[nonce]
            return self.challenge(stale=True)
        nc = int(fields["nc"], 16)
        if nc != self.nonces[nonce] + 1:
            return httpx.Response(401)
        ha2 = sha256_hex(f"POST:{fields['uri']}")
        expected = sha256_hex(f"{self.ha1}:{nonce}:{fields['nc']}:{fields['cnonce']}:auth:{ha2}")
        if fields["response"] != expected:
            return self.challenge()
        self.nonces[nonce] = nc
        frame = json.loads(request.content)
        if frame["method"] == "Bad.Method":
            return json_response({"id": frame["id"], "error": {"code": -114, "message": "Method not found!"}})
        if frame["method"] == "Switch.Set" and frame["params"]["id"] == 9:
            return json_response({"id": frame["id"], "error": {"code": -105, "message": "Argument 'id', value 9 not found!"}})
        return json_response({"id": frame["id"], "src": self.realm, "result": {"was_on": False, "method": frame["method"]}})


async def test_rpc_http_digest_flow():
    device = DigestDevice()
    async with mock_client(device) as client:
        rpc = ShellyRpcHttp(client, "h", password="pw", throttle_backoff=0.01)
        assert await rpc.switch_set(0, True) is False
        assert await rpc.switch_toggle(0) is False
        assert device.challenges == 1  # the challenge is reused, nc counts up
        device.expire_next = True  # the nonce expires: re-challenged, not "wrong password"
        assert (await rpc.call("Shelly.GetStatus"))["method"] == "Shelly.GetStatus"
        assert device.challenges == 2
        with pytest.raises(Unsupported):
            await rpc.call("Bad.Method")
        with pytest.raises(RpcError) as info:
            await rpc.switch_set(9, True)
        assert info.value.code == -105


async def test_rpc_http_wrong_and_missing_password():
    device = DigestDevice()
    async with mock_client(device) as client:
        with pytest.raises(WrongCredentials):
            await ShellyRpcHttp(client, "h", password="bad").call("Shelly.GetStatus")
        with pytest.raises(AuthRequired):
            await ShellyRpcHttp(client, "h").call("Shelly.GetStatus")


async def test_rpc_http_429_backs_off_then_retries():
    device = DigestDevice()
    async with mock_client(device) as client:
        rpc = ShellyRpcHttp(client, "h", password="pw", throttle_backoff=0.01)
        await rpc.call("Shelly.GetStatus")
        device.throttle = 1
        assert (await rpc.call("Shelly.GetStatus"))["was_on"] is False
        device.throttle = 5
        with pytest.raises(Throttled) as info:
            await rpc.call("Shelly.GetStatus")
        assert 0 < info.value.retry_after <= 60


async def test_rpc_http_serialises_requests():
    active = 0
    peak = 0

    async def handler(request):
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1
        frame = json.loads(request.content)
        return json_response({"id": frame["id"], "result": {}})

    async with mock_client(handler) as client:
        rpc = ShellyRpcHttp(client, "h")
        await asyncio.gather(*(rpc.call("Shelly.GetStatus") for _ in range(5)))
    assert peak == 1


async def test_rpc_http_garbage_replies():
    replies = iter([
        httpx.Response(200, content=b"<html>"),
        json_response([1, 2]),
        json_response({"id": 1}),
        httpx.Response(503, content=b"busy"),
        httpx.Response(404, content=b"not here"),
        json_response({"id": 1, "error": "weird"}),
    ])
    async with mock_client(lambda r: next(replies)) as client:
        rpc = ShellyRpcHttp(client, "h")
        for expected in (ProtocolError, ProtocolError, ProtocolError, ProtocolError, Unsupported, ProtocolError):
            with pytest.raises(expected):
                await rpc.call("Shelly.GetStatus")


async def test_rpc_components_paginate_with_a_cap():
    calls = []

    def handler(request):
        frame = json.loads(request.content)
        offset = frame["params"]["offset"]
        calls.append(offset)
        items = [{"key": f"boolean:{offset + i}"} for i in range(2)] if offset < 6 else []
        return json_response({"id": frame["id"], "result": {"components": items, "offset": offset, "total": 6}})

    def endless(request):
        frame = json.loads(request.content)
        return json_response({"id": frame["id"], "result": {"components": [{"key": "x"}], "total": 10**9}})

    async with mock_client(handler) as client:
        found = await ShellyRpcHttp(client, "h").components(dynamic_only=True)
        assert [c["key"] for c in found] == [f"boolean:{i}" for i in range(6)] and calls == [0, 2, 4]
    async with mock_client(endless) as client:
        assert len(await ShellyRpcHttp(client, "h").components()) == 32  # page cap


async def test_set_auth_sends_ha1_and_switches_password():
    device = DigestDevice(password="old")
    sent = {}

    def handler(request):
        reply = device(request)
        if reply.status_code == 200 and json.loads(request.content)["method"] == "Shelly.SetAuth":
            sent.update(json.loads(request.content)["params"])
            device.ha1 = sent["ha1"]
        return reply

    async with mock_client(handler) as client:
        rpc = ShellyRpcHttp(client, "h", password="old")
        rpc.device_id = DigestDevice.realm
        await rpc.set_auth("new")
        assert sent == {"user": "admin", "realm": DigestDevice.realm, "ha1": sha256_hex(f"admin:{DigestDevice.realm}:new")}
        await rpc.call("Shelly.GetStatus")  # works with the new password


def test_www_authenticate_roundtrip_with_padding():
    ch = parse_www_authenticate('Digest qop="auth", realm="r", nonce="bjE=", algorithm=SHA-256')
    assert ch.nonce == "bjE="


# ----------------------------------------------------------------------------- probe


async def test_probe_identifies_each_vendor():
    def handler(request):
        host, path = request.url.host, request.url.path
        if host == "gen1" and path == "/shelly":
            return json_response({"type": "SHPLG-S", "mac": "AABBCCDDEEFF", "auth": False, "fw": "20230913-113421/v1.14.0"})
        if host == "gen3" and path == "/shelly":
            return json_response({"gen": 3, "id": "shelly1pmg3-aabbccddeeff", "mac": "AABBCCDDEEFF", "model": "S3SW-001P16EU", "ver": "1.7.5"})
        if host == "mystrom" and path == "/api/v1/info":
            return json_response({"type": 106, "mac": "AABBCCDDEEFF", "version": "4.0.14"})
        if host == "oddball" and path == "/shelly":
            return json_response({"hello": "world"})
        return httpx.Response(404)

    async with mock_client(handler) as client:
        assert (await probe(client, "gen1")).generation == 1
        assert (await probe(client, "gen3")).is_rpc
        assert (await probe(client, "mystrom")).model == "WS2"
        with pytest.raises(AuthRequired):  # 404 everywhere: a token-protected myStrom, or nothing
            await probe(client, "oddball")


# ----------------------------------------------------------------------------- lean transport


class ScriptedServer:
    """Loopback server whose every connection runs ``script(reader, writer, state)``."""

    def __init__(self, script) -> None:
        self.script = script
        self.connections = 0
        self.state: dict = {}

    async def __aenter__(self):
        async def handle(reader, writer):
            self.connections += 1
            try:
                await self.script(reader, writer, self.state)
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
                pass  # client went away, or the test ended while the script was waiting
            finally:
                writer.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        await self.server.wait_closed()


async def read_request(reader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: " + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body


async def keepalive(reader, writer, state):
    while True:
        await read_request(reader)
        state["n"] = state.get("n", 0) + 1
        writer.write(ok(b'{"n":%d}' % state["n"]))
        await writer.drain()


async def test_lean_keepalive_reuse_and_stale_connection():
    async with ScriptedServer(keepalive) as server, make_client() as client:
        for i in range(1, 4):
            assert (await dhttp.request(client, "GET", server.url + "/x", host="h")).json() == {"n": i}
        assert server.connections == 1

    async def one_then_close(reader, writer, state):  # the device drops idle connections
        await read_request(reader)
        writer.write(ok(b"{}"))
        await writer.drain()
        await asyncio.sleep(0.05)

    async with ScriptedServer(one_then_close) as server, make_client() as client:
        for _ in range(3):
            await dhttp.request(client, "GET", server.url + "/x", host="h")
            await asyncio.sleep(0.1)  # the device has closed it by now
        assert server.connections == 3


async def test_lean_connection_close_and_http10_bodies():
    async def http10(reader, writer, state):  # ESP-style: no length, body ends at close
        await read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"relay\":true}")
        await writer.drain()

    async def chunked(reader, writer, state):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                     b"5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n")
        await writer.drain()

    for script, expected in ((http10, {"relay": True}), (chunked, {"a": 1})):
        async with ScriptedServer(script) as server, make_client() as client:
            for _ in range(2):
                assert (await dhttp.request(client, "GET", server.url + "/x", host="h")).json() == expected
            assert server.connections == 2  # never reused after close


async def test_lean_broken_servers_are_typed():
    async def silent_close(reader, writer, state):
        await read_request(reader)

    async def garbage(reader, writer, state):
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        await writer.drain()

    async def huge_header(reader, writer, state):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 100_000 + b"\r\n\r\n")
        await writer.drain()

    async def hang(reader, writer, state):
        await read_request(reader)
        await asyncio.sleep(5)

    cases = [(silent_close, Unreachable), (garbage, ProtocolError), (huge_header, ProtocolError), (hang, DeviceTimeout)]
    for script, expected in cases:
        async with ScriptedServer(script) as server, make_client(timeout=httpx.Timeout(0.3)) as client:
            with pytest.raises(expected):
                await dhttp.request(client, "GET", server.url + "/x", host="h")
            assert client._mounts  # the lean transport was in use


async def test_lean_capped_or_cancelled_requests_do_not_leak_connections():
    async def big(reader, writer, state):
        while True:
            await read_request(reader)
            writer.write(ok(b"x" * 100_000))
            await writer.drain()

    async with ScriptedServer(big) as server, make_client(max_connections=1) as client:
        for _ in range(3):  # each capped read closes its connection; the pool slot comes back
            with pytest.raises(ProtocolError):
                await dhttp.request(client, "GET", server.url + "/x", host="h", cap=1000)

    async def slow(reader, writer, state):
        await read_request(reader)
        await asyncio.sleep(1)

    async with ScriptedServer(slow) as server, make_client(max_connections=1) as client:
        for _ in range(3):
            task = asyncio.ensure_future(dhttp.request(client, "GET", server.url + "/x", host="h"))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        (transport,) = [t for t in client._mounts.values() if isinstance(t, dhttp.LeanTransport)]
        assert transport._open == 0


async def test_lean_pool_limit():
    async def slow_ok(reader, writer, state):
        await read_request(reader)
        await asyncio.sleep(0.3)
        writer.write(ok(b"{}", b"Connection: close\r\n"))
        await writer.drain()

    async with ScriptedServer(slow_ok) as a, ScriptedServer(slow_ok) as b:
        async with make_client(max_connections=1, timeout=httpx.Timeout(5.0, pool=0.1)) as client:
            first = asyncio.ensure_future(dhttp.request(client, "GET", a.url + "/x", host="a"))
            await asyncio.sleep(0.05)
            with pytest.raises(DeviceTimeout):  # PoolTimeout: the only connection is busy
                await dhttp.request(client, "GET", b.url + "/x", host="b")
            assert (await first).status == 200
        async with make_client(max_connections=1) as client:
            results = await asyncio.gather(*(dhttp.request(client, "GET", u + "/x", host="h") for u in (a.url, b.url)))
            assert [r.status for r in results] == [200, 200]


async def test_lean_posts_bodies_and_auth_roundtrips():
    async def echo(reader, writer, state):
        while True:
            head = await read_request(reader)
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = await reader.readexactly(length) if length else b""
            if b"authorization" not in head.lower():
                writer.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n"
                             b'WWW-Authenticate: Digest qop="auth", realm="r", nonce="bj0=", algorithm=SHA-256\r\n\r\n')
            else:
                writer.write(ok(body))
            await writer.drain()

    async with ScriptedServer(echo) as server, make_client() as client:
        reply = await dhttp.request(client, "POST", server.url + "/rpc", host="h", content=b'{"id":1}',
                                    auth=httpx.DigestAuth("admin", "pw"))
        assert reply.status == 200 and reply.body == b'{"id":1}'
        assert server.connections == 1  # the 401 and the retry shared the connection
