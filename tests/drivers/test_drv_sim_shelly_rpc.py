"""Shelly RPC drivers (HTTP, websocket session, debug log) against the simulated Gen2+ devices."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest

from devices.drivers import (
    AuthRequired,
    DebugLogStream,
    DeviceTimeout,
    ProtocolError,
    RpcError,
    SessionUpdate,
    ShellyRpcHttp,
    ShellyRpcSession,
    Throttled,
    Unreachable,
    Unsupported,
    WrongCredentials,
    make_client,
    probe,
)
from devices.simulator import shelly_rpc as sim

QUIET = dict(drift_period=None, debug_rate=0.0)  # no background noise in assertions


@contextlib.asynccontextmanager
async def running(device):
    await device.start()
    try:
        yield device
    finally:
        await device.stop()


@pytest.fixture
async def client():
    async with make_client() as c:
        yield c


def session_for(dev, **kw) -> ShellyRpcSession:
    kw.setdefault("reconnect_min", 0.05)
    kw.setdefault("reconnect_max", 0.3)
    kw.setdefault("call_timeout", 3.0)
    kw.setdefault("throttle_backoff", 0.05)
    return ShellyRpcSession(dev.host, dev.port, device=dev.mac, **kw)


async def next_update(updates, kind: str, timeout: float = 5.0, where=lambda u: True) -> SessionUpdate:
    async def find():
        async for update in updates:
            if update.kind == kind and where(update):
                return update

    return await asyncio.wait_for(find(), timeout)


# ----------------------------------------------------------------------------- HTTP


async def test_http_switch_device(client):
    async with running(sim.ShellyRpc("SNSW-001P16EU", **QUIET)) as dev:
        rpc = ShellyRpcHttp(client, dev.host, dev.port)
        info = await rpc.device_info()
        assert (info.generation, info.model, info.mac, info.device_id) == (2, "SNSW-001P16EU", dev.mac, dev.device_id)
        channels = {c.key: c for c in await rpc.channels()}
        assert {"switch:0", "input:0"} <= set(channels)
        was = channels["switch:0"].on
        assert await rpc.switch_set(0, not was) is was
        assert await rpc.switch_toggle(0) is (not was)
        assert (await rpc.get_status())["switch:0"]["output"] is was
        assert "switch:0" in await rpc.get_config()
        assert isinstance(await rpc.components(), list)
        assert "Switch.Set" in await rpc.list_methods()
        sys_config = await rpc.sys_get_config()
        assert "device" in sys_config
        assert await rpc.sys_set_config({"device": {"name": "Hall lamp"}}) in (True, False, None)
        updates = await rpc.check_for_update()
        assert set(updates) == {"stable", "beta"}
        with pytest.raises(Unsupported):
            await rpc.call("No.SuchMethod")
        with pytest.raises(RpcError):
            await rpc.switch_set(7, True)  # no such switch


async def test_http_cover_and_meter(client):
    async with running(sim.ShellyRpc("SNSW-102P16EU", profile="cover", cover_travel_time=1.0, **QUIET)) as dev:
        rpc = ShellyRpcHttp(client, dev.host, dev.port)
        info = await rpc.device_info()
        assert info.kind == "cover" and info.profile == "cover"
        await rpc.cover_close(0)
        cover = {c.key: c for c in await rpc.channels()}["cover:0"]
        assert cover.kind == "cover" and cover.moving in ("closing", "closed", "stopped")
        await rpc.cover_stop(0)
        await rpc.cover_go_to_position(0, 50)
        await rpc.cover_open(0, duration=0.5)
    async with running(sim.ShellyRpc("SPEM-003CEBEU", **QUIET)) as dev:
        em = {c.key: c for c in await ShellyRpcHttp(client, dev.host, dev.port).channels()}["em:0"]
        assert em.kind == "meter" and len(em.phases) == 3 and em.energy_wh is not None and em.power_w is not None


async def test_http_digest_auth_rules(client):
    async with running(sim.ShellyRpc("S3SW-001P16EU", password="pw", fw="2.0.0", nonce_lifetime=0.3,
                                     auth_fail_limit=3, auth_lockout=(0.4,), **QUIET)) as dev:
        info = await ShellyRpcHttp(client, dev.host, dev.port).device_info()  # open without auth
        assert info.auth_enabled and info.generation == 3
        with pytest.raises(AuthRequired):
            await ShellyRpcHttp(client, dev.host, dev.port).get_status()
        good = ShellyRpcHttp(client, dev.host, dev.port, password="pw", throttle_backoff=0.5)
        assert "switch:0" in await good.get_status()
        challenges = dev.guard.stats.challenges
        await good.get_status()
        assert dev.guard.stats.challenges == challenges  # the nonce is reused (nc counts up)
        await asyncio.sleep(0.4)  # the nonce expires: stale re-challenge, not "wrong password"
        assert "switch:0" in await good.get_status()
        assert dev.guard.stats.stale >= 1 and dev.guard.stats.failures == 0

        bad = ShellyRpcHttp(client, dev.host, dev.port, password="nope", throttle_retries=0)
        for _ in range(3):
            with contextlib.suppress(WrongCredentials, Throttled):
                await bad.get_status()
        assert dev.guard.stats.failures <= 3  # one failed attempt per call, not two
        assert dev.guard.locked_out
        with pytest.raises(Throttled):
            await ShellyRpcHttp(client, dev.host, dev.port, password="pw", throttle_retries=0).get_status()
        # the right password after the lock-out: 429, drop the nonce, wait, retry - succeeds
        assert "switch:0" in await good.get_status()


async def test_set_auth_changes_password(client):
    async with running(sim.ShellyRpc("SNSW-001P16EU", password="old", **QUIET)) as dev:
        rpc = ShellyRpcHttp(client, dev.host, dev.port, password="old")
        await rpc.device_info()
        await rpc.set_auth("new")
        assert "switch:0" in await rpc.get_status()  # the driver switched over itself
        with pytest.raises(WrongCredentials):
            await ShellyRpcHttp(client, dev.host, dev.port, password="old").get_status()
        await rpc.set_auth(None)
        assert "switch:0" in await ShellyRpcHttp(client, dev.host, dev.port).get_status()


async def test_http_faults_are_typed(client):
    async with running(sim.ShellyRpc("SNSW-001P16EU", **QUIET)) as dev:
        async with make_client(timeout=httpx.Timeout(0.5)) as quick:
            rpc = ShellyRpcHttp(quick, dev.host, dev.port)
            for fault, expected in [("http_500", ProtocolError), ("malformed", ProtocolError),
                                    ("truncated", ProtocolError), ("oversized", ProtocolError),
                                    ("hang", DeviceTimeout)]:
                dev.faults.clear()
                setattr(dev.faults, fault, True)
                with pytest.raises(expected):
                    await rpc.get_status()
            dev.faults.clear()
            dev.faults.latency = 0.02
            dev.reset_counters()
            await asyncio.gather(*(rpc.get_status() for _ in range(4)), rpc.switch_toggle(0))
            assert dev.max_in_flight == 1
        await dev.power_off()
        with pytest.raises(Unreachable):
            await ShellyRpcHttp(client, dev.host, dev.port).get_status()


async def test_probe_rpc(client):
    async with running(sim.ShellyRpc("S4SW-001P16EU", **QUIET)) as dev:
        info = await probe(client, dev.host, dev.port)
        assert info.generation == 4 and info.is_rpc and info.mac == dev.mac


# ----------------------------------------------------------------------------- websocket


async def test_session_push_updates_and_events():
    async with running(sim.ShellyRpc("SNSN-0024X", **QUIET)) as i4, running(sim.ShellyRpc("SNSW-001P16EU", **QUIET)) as dev:
        async with session_for(dev) as session:
            updates = session.updates()
            connected = await next_update(updates, "connected")
            assert "switch:0" in connected.changed and session.info.mac == dev.mac
            before = session.status["switch:0"]["output"]
            await dev.flip(0)  # someone used the wall switch
            update = await next_update(updates, "status", where=lambda u: "switch:0" in u.changed)
            channel = {c.key: c for c in update.channels}["switch:0"]
            assert channel.on is (not before)
            assert await session.switch_set(0, before) is (not before)
            await next_update(updates, "status", where=lambda u: session.status["switch:0"]["output"] is before)
        async with session_for(i4) as session:
            updates = session.updates()
            await next_update(updates, "connected")
            await i4.press(1, "double")
            event = await next_update(updates, "event", where=lambda u: any(e.kind == "double" for e in u.events))
            assert any(e.channel == "input:1" for e in event.events)


async def test_session_survives_reboot_and_rearms():
    async with running(sim.ShellyRpc("SNSW-001P16EU", reboot_time=0.2, **QUIET)) as dev:
        async with session_for(dev) as session:
            updates = session.updates()
            await next_update(updates, "connected")
            await session.reboot(delay_ms=0)
            down = await next_update(updates, "disconnected")
            assert isinstance(down.error, Unreachable)
            await next_update(updates, "connected")
            assert session.connects == 2
            await dev.flip(0)  # notifications flow again: we re-armed with a request carrying src
            await next_update(updates, "status", where=lambda u: "switch:0" in u.changed)


async def test_session_digest_auth():
    async with running(sim.ShellyRpc("SNSW-001P16EU", password="pw", fw="2.0.0", nonce_lifetime=0.3, **QUIET)) as dev:
        async with session_for(dev, password="pw") as session:
            updates = session.updates()
            await next_update(updates, "connected")
            await dev.flip(0)  # a protected device pushes to us: the bootstrap authenticated
            await next_update(updates, "status", where=lambda u: "switch:0" in u.changed)
            assert "switch:0" in await session.get_status()
            await asyncio.sleep(0.4)  # expired nonce over the websocket: stale, re-challenge
            assert "switch:0" in await session.get_status()
            assert dev.guard.stats.failures == 0 and dev.guard.stats.stale >= 1
        async with session_for(dev, password="wrong", auth_failure_backoff=10) as bad:
            with pytest.raises(WrongCredentials):
                await bad.wait_connected(5)
        assert dev.guard.stats.failures == 1
        async with session_for(dev, auth_failure_backoff=10) as none:
            with pytest.raises(AuthRequired):
                await none.wait_connected(5)


async def test_session_password_change_keeps_notifications(client):
    async with running(sim.ShellyRpc("SNSW-001P16EU", password="old", **QUIET)) as dev:
        async with session_for(dev, password="old") as session:
            updates = session.updates()
            await next_update(updates, "connected")
            await session.set_auth("new")
            assert session.auth.password == "new"
            await dev.flip(0)  # still pushed to us: we authenticated with the new password
            await next_update(updates, "status", where=lambda u: "switch:0" in u.changed)
        with pytest.raises(WrongCredentials):
            await ShellyRpcHttp(client, dev.host, dev.port, password="old").get_status()
        assert "switch:0" in await ShellyRpcHttp(client, dev.host, dev.port, password="new").get_status()


async def test_session_unreachable_then_back():
    dev = sim.ShellyRpc("SNSW-001P16EU", **QUIET)
    await dev.start()
    try:
        async with session_for(dev) as session:
            updates = session.updates()
            await next_update(updates, "connected")
            await dev.power_off()
            await next_update(updates, "disconnected")
            with pytest.raises(Unreachable):
                await session.get_status()
            await dev.power_on()
            await next_update(updates, "connected")
            assert "switch:0" in await session.get_status()
    finally:
        await dev.stop()


# ----------------------------------------------------------------------------- debug log


async def test_debug_log_with_auth(client):
    async with running(sim.ShellyRpc("SNSW-001P16EU", password="pw", drift_period=None, debug_rate=50.0)) as dev:
        with pytest.raises(Unsupported):  # the stream is off until enabled
            await DebugLogStream(dev.host, dev.port, password="pw").open()
        rpc = ShellyRpcHttp(client, dev.host, dev.port, password="pw")
        await rpc.sys_set_config({"debug": {"websocket": {"enable": True}}})
        with pytest.raises(AuthRequired):
            await DebugLogStream(dev.host, dev.port).open()
        with pytest.raises(WrongCredentials):
            await DebugLogStream(dev.host, dev.port, password="nope").open()
        async with DebugLogStream(dev.host, dev.port, password="pw", device=dev.mac, line_cap=120) as stream:
            await rpc.switch_toggle(0)
            lines = []
            async for line in stream:
                lines.append(line)
                if len(lines) >= 3:
                    break
        assert all(line.device == dev.mac and len(line.text) <= 120 for line in lines)
        assert any(line.level is not None for line in lines)
