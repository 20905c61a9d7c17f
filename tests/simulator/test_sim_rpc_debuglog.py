"""Shelly Gen2+ debug logs from the simulator: ws://host/debug/log (open on old firmware,
digest-protected on newer), the 3-listener limit, and UDP datagrams in the real
NUL-separated line format — sent to loopback only."""

from __future__ import annotations

import asyncio
import json
import re

import aiohttp
import httpx
import pytest

from tests.payloads import payload_files
from devices.simulator.shelly_rpc import ShellyRpc
from sim_rpc_helpers import digest_header, parse_challenge, running

PASSWORD = "debug-pw"
UDP_LINE = re.compile(r"(?P<id>\S+) (?P<seq>\d+) (?P<ts>\d+\.\d{3}) (?P<fd>\d+) (?P<level>\d)\|(?P<msg>.*)", re.S)


def device(**kw) -> ShellyRpc:
    kw.setdefault("drift_period", None)
    kw.setdefault("debug_rate", 40.0)
    return ShellyRpc("SNSW-001P16EU", **kw)


async def enable(dev: ShellyRpc, config: dict) -> dict:
    auth = httpx.DigestAuth("admin", PASSWORD) if dev.guard.enabled else None
    async with httpx.AsyncClient(auth=auth) as client:
        r = await client.post(f"http://{dev.host}:{dev.port}/rpc/Sys.SetConfig", json={"config": {"debug": config}})
        return r.json()


async def receive_lines(ws: aiohttp.ClientWebSocketResponse, count: int, timeout: float = 3.0) -> list[dict]:
    lines = []
    async with asyncio.timeout(timeout):
        while len(lines) < count:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            lines.append(json.loads(msg.data))
    return lines


async def test_open_debug_log_streams_json_lines() -> None:
    # Same keys as a real stream (../shared capture when present, else the documented keys).
    captures = payload_files("shelly", "debuglog_ws__*.json")
    real_keys = set(json.loads(captures[0].read_text())[0]) if captures else {"ts", "level", "data", "fd"}
    dev = device(password=PASSWORD, debug_log_open=True)
    async with running(dev), aiohttp.ClientSession() as session:
        endpoint = f"http://{dev.host}:{dev.port}/debug/log"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(endpoint)           # stream not enabled yet
        assert refused.value.status == 404
        assert await enable(dev, {"websocket": {"enable": True}}) == {"restart_required": False}
        ws = await session.ws_connect(endpoint)          # open: no Authorization needed
        lines = await receive_lines(ws, 8)
        assert "Streaming logs to 127.0.0.1:" in lines[0]["data"]
        for line in lines:
            assert set(line) == real_keys and {k: type(v) for k, v in line.items()} == \
                {"ts": float, "level": int, "data": str, "fd": int}
            assert line["level"] <= 2                    # debug.level 2 filters level-3 chatter
        # a real status change shows up in the log too
        dev.flip(0)
        lines = await receive_lines(ws, 30)
        assert any("Status change of switch:0" in l["data"] for l in lines)
        # turning the stream off closes the listener
        await enable(dev, {"websocket": {"enable": False}})
        async with asyncio.timeout(2):
            while (await ws.receive()).type == aiohttp.WSMsgType.TEXT:
                pass
        assert ws.closed


async def test_debug_log_needs_digest_on_newer_firmware() -> None:
    dev = device(password=PASSWORD)
    async with running(dev), aiohttp.ClientSession() as session:
        await enable(dev, {"websocket": {"enable": True}})
        endpoint = f"http://{dev.host}:{dev.port}/debug/log"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(endpoint)
        assert refused.value.status == 401
        chal = parse_challenge(refused.value.headers["WWW-Authenticate"])
        assert chal["realm"] == dev.device_id
        header = digest_header("GET", "/debug/log", dev.device_id, "wrong", chal["nonce"], 1)
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await session.ws_connect(endpoint, headers={"Authorization": header})
        with pytest.raises(aiohttp.WSServerHandshakeError) as again:
            await session.ws_connect(endpoint)
        chal = parse_challenge(again.value.headers["WWW-Authenticate"])
        header = digest_header("GET", "/debug/log", dev.device_id, PASSWORD, chal["nonce"], 1)
        ws = await session.ws_connect(endpoint, headers={"Authorization": header})
        assert (await receive_lines(ws, 2))[0]["fd"] == 1
        # a new password throws authenticated listeners out
        dev.set_secret("rotated")
        async with asyncio.timeout(2):
            while (await ws.receive()).type == aiohttp.WSMsgType.TEXT:
                pass


async def test_at_most_three_debug_listeners() -> None:
    dev = device(debug_log_open=True)
    async with running(dev), aiohttp.ClientSession() as session:
        await enable(dev, {"websocket": {"enable": True}})
        endpoint = f"http://{dev.host}:{dev.port}/debug/log"
        listeners = [await session.ws_connect(endpoint) for _ in range(3)]
        with pytest.raises(aiohttp.WSServerHandshakeError) as fourth:
            await session.ws_connect(endpoint)
        assert fourth.value.status == 503
        for ws in listeners:
            assert len(await receive_lines(ws, 3)) == 3
        await listeners[0].close()
        await asyncio.sleep(0.05)
        listeners[0] = await session.ws_connect(endpoint)
        for ws in listeners:
            await ws.close()


class _Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.datagrams: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr) -> None:
        self.datagrams.put_nowait(data)


async def test_udp_debug_datagrams_reach_a_loopback_listener(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOMEDASH_PRIVATE_NETNS", raising=False)
    loop = asyncio.get_running_loop()
    transport, collector = await loop.create_datagram_endpoint(_Collector, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    dev = device(debug_rate=100.0)
    try:
        async with running(dev):
            assert await enable(dev, {"udp": {"addr": f"127.0.0.1:{port}"}}) == {"restart_required": False}
            dev.flip(0)
            lines: list[str] = []
            async with asyncio.timeout(3):
                while len(lines) < 15:
                    datagram = await collector.datagrams.get()
                    assert not datagram.startswith(b"\x00") and not datagram.endswith(b"\x00")
                    lines += datagram.decode().split("\x00")
    finally:
        transport.close()
    parsed = [UDP_LINE.fullmatch(line) for line in lines]
    assert all(parsed), [l for l, p in zip(lines, parsed) if not p]
    assert {p["id"] for p in parsed} == {dev.device_id}
    seqs = [int(p["seq"]) for p in parsed]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert all(len(line) <= 128 for line in lines)
    assert float(parsed[0]["ts"]) < 60                 # uptime seconds, not wall-clock time
    assert any("Status change of switch:0" in p["msg"] for p in parsed)


async def test_udp_target_outside_loopback_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOMEDASH_PRIVATE_NETNS", raising=False)
    dev = device()
    # Never sends anything: both paths refuse before a socket is opened.
    with pytest.raises(ValueError):
        dev.set_debug_udp("192.0.2.10:5555")
    async with running(dev):
        reply = await enable(dev, {"udp": {"addr": "198.51.100.7:5555"}})
        assert reply["code"] == -103
        assert dev.config["sys"]["debug"]["udp"]["addr"] is None
        await asyncio.sleep(0.1)
    assert dev.udp_datagrams_sent == 0
