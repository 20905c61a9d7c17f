"""A real third-party client against the simulated Gen2+ devices: aioshelly 13.x
``RpcDevice`` over the inbound websocket (with and without digest auth), and its
``WsServer`` as the outbound-websocket endpoint of a sleeping Plus H&T. If aioshelly can use
our devices, homedash's tests are not passing against a protocol we invented."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from aioshelly.common import ConnectionOptions
from aioshelly.exceptions import InvalidAuthError
from aioshelly.rpc_device import RpcDevice, RpcUpdateType
from aioshelly.rpc_device.wsrpc import WsServer
from devices.simulator.shelly_rpc import ShellyRpc
from sim_rpc_helpers import running


def quiet(model: str, **kw: Any) -> ShellyRpc:
    kw.setdefault("drift_period", None)
    kw.setdefault("debug_rate", 0)
    return ShellyRpc(model, **kw)


class Updates:
    """Collects what aioshelly tells its listener."""

    def __init__(self) -> None:
        self.seen: list[RpcUpdateType] = []
        self.changed = asyncio.Event()

    def __call__(self, device: RpcDevice, kind: RpcUpdateType) -> None:
        self.seen.append(kind)
        self.changed.set()

    async def wait_for(self, kind: RpcUpdateType, timeout: float = 3.0) -> None:
        async with asyncio.timeout(timeout):
            while kind not in self.seen:
                self.changed.clear()
                await self.changed.wait()


async def connect(session: aiohttp.ClientSession, dev: ShellyRpc, password: str | None = None,
                  ws_context: WsServer | None = None) -> RpcDevice:
    options = ConnectionOptions(dev.host, "admin" if password else None, password, port=dev.port,
                                device_mac=dev.mac)
    return await RpcDevice.create(session, ws_context, options)


@pytest.mark.parametrize("password", [None, "hunter2"])
async def test_aioshelly_controls_a_plus_1pm(password: str | None) -> None:
    dev = quiet("SNSW-001P16EU", password=password)
    async with running(dev), aiohttp.ClientSession() as session:
        shelly = await connect(session, dev, password)
        await shelly.initialize()
        try:
            assert shelly.initialized and shelly.requires_auth is bool(password)
            assert shelly.gen == 2 and shelly.model == "SNSW-001P16EU" and shelly.firmware_supported
            assert shelly.config["switch:0"]["id"] == 0
            assert shelly.status["switch:0"]["output"] is False
            updates = Updates()
            shelly.subscribe_updates(updates)
            await dev.flip(0)                                   # the wall switch
            await updates.wait_for(RpcUpdateType.STATUS)
            assert shelly.status["switch:0"]["output"] is True
            assert shelly.status["switch:0"]["source"] == "switch"
            await shelly.switch_set(0, False)                   # homedash-style command
            assert dev.switches[0].output is False and dev.switches[0].source == "WS_in"
            assert dev.max_in_flight == 1
        finally:
            await shelly.shutdown()


async def test_aioshelly_rejects_a_wrong_password() -> None:
    dev = quiet("SNSW-001P16EU", password="right")
    async with running(dev), aiohttp.ClientSession() as session:
        shelly = await connect(session, dev, "wrong")
        with pytest.raises(InvalidAuthError):
            await shelly.initialize()
        await shelly.shutdown()


async def test_aioshelly_survives_firmware_2_nonce_expiry() -> None:
    dev = quiet("S3SW-001P16EU", password="pw", fw="2.0.0", nonce_lifetime=0.3)
    async with running(dev), aiohttp.ClientSession() as session:
        shelly = await connect(session, dev, "pw")
        await shelly.initialize()
        try:
            assert shelly.gen == 3
            await asyncio.sleep(0.4)
            await shelly.switch_set(0, True)                   # 401 stale=true, then retried
            assert dev.switches[0].output is True
            assert dev.guard.stats.stale == 1 and dev.guard.stats.failures == 0
        finally:
            await shelly.shutdown()


async def test_aioshelly_opens_a_cover_and_hears_buttons() -> None:
    cover = quiet("SNSW-102P16EU", cover_travel_time=0.3)
    buttons = quiet("SNSN-0024X", press_gap=0.01)
    async with running(cover), running(buttons), aiohttp.ClientSession() as session:
        shelly = await connect(session, cover)
        await shelly.initialize()
        updates = Updates()
        shelly.subscribe_updates(updates)
        await shelly.cover_open(0)
        await updates.wait_for(RpcUpdateType.STATUS)
        for _ in range(50):
            if shelly.status["cover:0"]["state"] == "open":
                break
            await asyncio.sleep(0.02)
        assert shelly.status["cover:0"]["current_pos"] == 100
        await shelly.shutdown()

        i4 = await connect(session, buttons)
        await i4.initialize()
        events = Updates()
        i4.subscribe_updates(events)
        await buttons.press(1, "single")
        await events.wait_for(RpcUpdateType.EVENT)
        await asyncio.sleep(0.05)
        assert i4.event is not None and i4.event["events"][0]["component"] == "input:1"
        await i4.shutdown()


@pytest.mark.parametrize("model", ["S4SW-001P16EU", "SPSW-104PE16EU", "SPEM-003CEBEU"])
async def test_aioshelly_initializes_other_models(model: str) -> None:
    dev = quiet(model, password="pw")
    async with running(dev), aiohttp.ClientSession() as session:
        shelly = await connect(session, dev, "pw")
        await shelly.initialize()
        assert shelly.firmware_supported and shelly.gen == dev.gen
        assert shelly.hostname == dev.device_id
        await shelly.shutdown()


async def test_sleeping_plus_ht_reaches_aioshelly_ws_server() -> None:
    # aioshelly's own WsServer.initialize() would listen on every interface, so its handler
    # is mounted on a loopback-only site here.
    ws_server = WsServer()
    app = web.Application()
    app.router.add_get("/api/shelly/ws", ws_server.websocket_handler)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]   # type: ignore[union-attr]
    dev = quiet("SNSN-0013A", ws_server=f"ws://127.0.0.1:{port}/api/shelly/ws", awake_time=1.5)
    try:
        async with running(dev), aiohttp.ClientSession() as session:
            shelly = await connect(session, dev, ws_context=ws_server)
            updates = Updates()
            shelly.subscribe_updates(updates)
            dev.wake()
            await updates.wait_for(RpcUpdateType.ONLINE)          # NotifyFullStatus arrived
            await shelly.initialize()                             # while it is awake
            assert shelly.status["temperature:0"]["tC"] == dev.full_status()["temperature:0"]["tC"]
            assert shelly.status["sys"]["wakeup_period"] > 0
            await updates.wait_for(RpcUpdateType.DISCONNECTED, timeout=5)   # it went back to sleep
            await shelly.shutdown()
    finally:
        await runner.cleanup()
