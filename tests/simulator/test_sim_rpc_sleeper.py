"""Outbound websocket of the simulated Shelly devices: the sleeping Plus H&T wakes, connects to
its ``ws.server`` (subprotocol json-rpc), sends NotifyFullStatus with dst "ws", answers RPC
calls over that socket, closes with "Bye" and is off the network again; always-on devices
keep an outbound socket once a reboot made the ws config effective."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp import WSMsgType, web

from devices.simulator.shelly_rpc import ShellyRpc
from sim_rpc_helpers import running


class DashboardEndpoint:
    """A tiny loopback stand-in for homedash's outbound-websocket endpoint."""

    def __init__(self, call: dict[str, Any] | None = None) -> None:
        self.call = call
        self.sessions: list[dict[str, Any]] = []
        self.session_done = asyncio.Event()
        self.port = 0

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("json-rpc",))
        await ws.prepare(request)
        session: dict[str, Any] = {"protocol": ws.ws_protocol, "frames": [], "close": None}
        self.sessions.append(session)
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            frame = json.loads(msg.data)
            session["frames"].append(frame)
            if frame.get("method") == "NotifyFullStatus" and self.call is not None:
                await ws.send_str(json.dumps(self.call))
        session["close"] = ws.close_code
        self.session_done.set()
        return ws


@contextlib.asynccontextmanager
async def endpoint(call: dict[str, Any] | None = None) -> AsyncIterator[DashboardEndpoint]:
    ep = DashboardEndpoint(call)
    app = web.Application()
    app.router.add_get("/api/shelly/ws", ep.handler)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    ep.port = site._server.sockets[0].getsockname()[1]   # type: ignore[union-attr]
    try:
        yield ep
    finally:
        await runner.cleanup()


async def reachable(dev: ShellyRpc) -> bool:
    try:
        async with httpx.AsyncClient() as client:
            return (await client.get(f"http://{dev.host}:{dev.port}/shelly", timeout=1)).status_code == 200
    except httpx.ConnectError:
        return False


async def test_wake_notify_full_status_answer_and_bye() -> None:
    call = {"id": 7, "src": "homedash", "method": "Shelly.GetConfig"}
    async with endpoint(call) as ep:
        dev = ShellyRpc("SNSN-0013A", ws_server=f"ws://127.0.0.1:{ep.port}/api/shelly/ws",
                        awake_time=0.6, debug_rate=0)
        async with running(dev):
            assert not await reachable(dev)                  # asleep: connection refused
            wake = dev.wake()
            await asyncio.sleep(0.2)
            assert await reachable(dev)                      # inbound HTTP works while awake
            await asyncio.wait_for(ep.session_done.wait(), 3)
            await wake
            assert not await reachable(dev)
    [session] = ep.sessions
    assert session["protocol"] == "json-rpc"
    full, reply = session["frames"][0], session["frames"][1]
    assert full["method"] == "NotifyFullStatus" and "id" not in full
    assert full["src"] == dev.device_id and full["dst"] == "ws"
    params = full["params"]
    assert isinstance(params["ts"], float)
    assert {"temperature:0", "humidity:0", "devicepower:0", "sys"} <= set(params)
    assert params["sys"]["wakeup_reason"] == {"boot": "deepsleep_wake", "cause": "button"}
    assert params["sys"]["uptime"] < 5 and params["ws"]["connected"] is True
    assert reply["id"] == 7 and reply["dst"] == "homedash" and reply["src"] == dev.device_id
    assert reply["result"]["sys"]["sleep"]["wakeup_period"] == 7200
    assert session["close"] == 1000


async def test_bye_is_the_close_reason() -> None:
    # aiohttp's server does not expose the peer's close reason, so read it as a client would
    # see it from the device: receive the CLOSE frame on a raw server websocket.
    reasons: list[str] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("json-rpc",), autoclose=False)
        await ws.prepare(request)
        while True:
            msg = await ws.receive()
            if msg.type == WSMsgType.CLOSE:
                reasons.append(msg.extra)
                await ws.close()
                break
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]   # type: ignore[union-attr]
    try:
        dev = ShellyRpc("SNSN-0013A", ws_server=f"ws://127.0.0.1:{port}/ws", awake_time=5, debug_rate=0)
        async with running(dev):
            wake = dev.wake()
            await asyncio.sleep(0.3)
            await dev.sleep()                                # cut the wake short
            await asyncio.wait_for(wake, 3)
            assert not dev.online
    finally:
        await runner.cleanup()
    assert reasons == ["Bye"]


async def test_periodic_wakes_and_button_wakes() -> None:
    async with endpoint() as ep:
        server = f"ws://127.0.0.1:{ep.port}/api/shelly/ws"
        dev = ShellyRpc("SNSN-0013A", ws_server=server, wake_period=0.4, awake_time=0.15, debug_rate=0)
        async with running(dev):
            await asyncio.sleep(1.1)
        periodic = list(ep.sessions)
        ep.sessions.clear()
        button = ShellyRpc("SNSN-0013A", ws_server=server, awake_time=0.1, debug_rate=0)
        async with running(button):
            await button.press()                              # the H&T's only button
            await button.flip()                               # a temperature jump
    causes = [s["frames"][0]["params"]["sys"]["wakeup_reason"]["cause"] for s in periodic]
    assert len(causes) >= 2 and set(causes) == {"periodic"}
    assert all(s["frames"][0]["params"]["sys"]["wakeup_period"] == 1 for s in periodic)
    assert [s["frames"][0]["params"]["sys"]["wakeup_reason"]["cause"] for s in ep.sessions] == ["button", "sensor"]


async def test_always_on_device_connects_out_after_reboot() -> None:
    async with endpoint({"id": 1, "src": "homedash", "method": "Switch.Set", "params": {"id": 0, "on": True}}) as ep:
        dev = ShellyRpc("SNSW-001P16EU", drift_period=None, debug_rate=0, reboot_time=0.05)
        async with running(dev), httpx.AsyncClient() as client:
            server = f"ws://127.0.0.1:{ep.port}/api/shelly/ws"
            r = await client.post(f"http://{dev.host}:{dev.port}/rpc/Ws.SetConfig",
                                  json={"config": {"enable": True, "server": server}})
            assert r.json() == {"restart_required": True}
            await asyncio.sleep(0.2)
            assert ep.sessions == []                          # not before the reboot
            await dev.reboot()
            for _ in range(100):
                if ep.sessions and len(ep.sessions[0]["frames"]) >= 3:
                    break
                await asyncio.sleep(0.02)
            frames = ep.sessions[0]["frames"]
            assert frames[0]["method"] == "NotifyFullStatus" and frames[0]["dst"] == "ws"
            assert any(f.get("id") == 1 and f.get("result") == {"was_on": False} for f in frames)
            # state changes are pushed over the outbound socket too, addressed to "ws"
            status = [f for f in frames if f.get("method") == "NotifyStatus"]
            assert status and status[0]["dst"] == "ws" and status[0]["params"]["switch:0"]["source"] == "WS_out"
            assert (await client.get(f"http://{dev.host}:{dev.port}/rpc/Ws.GetStatus")).json() == {"connected": True}


async def test_outbound_server_must_be_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOMEDASH_PRIVATE_NETNS", raising=False)
    dev = ShellyRpc("SNSN-0013A", ws_server="ws://203.0.113.9:8123/api/shelly/ws", awake_time=0.1, debug_rate=0)
    async with running(dev):
        with pytest.raises(ValueError):
            await dev.wake()
        assert not dev.online
