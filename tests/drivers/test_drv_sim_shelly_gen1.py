"""Shelly Gen1 driver against the simulated devices."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest

from devices.drivers import (
    AuthRequired,
    DeviceTimeout,
    ProtocolError,
    ShellyGen1,
    Unreachable,
    Unsupported,
    WrongCredentials,
    make_client,
    probe,
)
from devices.simulator import shelly_gen1 as sim


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


async def test_relay_device_poll_commands_and_events(client):
    async with running(sim.ShellyGen1("SHSW-PM")) as dev:
        shelly = ShellyGen1(client, dev.host, dev.port, device=dev.mac)
        info = await shelly.shelly()
        assert (info.generation, info.model, info.mac, info.auth_enabled) == (1, "SHSW-PM", dev.mac, False)

        first = await shelly.poll()
        keys = {c.key for c in first.channels}
        assert {"relay:0", "input:0"} <= keys and first.events == []
        assert first.system.uptime_s is not None

        state = await shelly.relay(0, "on")
        assert state.on is True
        state = await shelly.relay(0, "toggle")
        assert state.on is False
        assert (await shelly.relay(0, "on", timer=30)).on is True
        relay = {c.key: c for c in (await shelly.poll()).channels}["relay:0"]
        assert relay.on is True and relay.power_w is not None and relay.energy_wh is not None

        pressing = dev.press(0, "single")  # a task on sleepers, None on mains devices
        if pressing is not None:
            await pressing
        events = (await shelly.poll()).events
        assert any(e.kind == "single" and e.channel == "input:0" and e.device == dev.mac for e in events)
        with pytest.raises(Unsupported):
            await shelly.relay(3, "on")


async def test_roller(client):
    async with running(sim.ShellyGen1("SHSW-25", mode="roller", roller_maxtime=2.0)) as dev:
        shelly = ShellyGen1(client, dev.host, dev.port)
        assert (await shelly.shelly()).kind == "cover"
        state = await shelly.roller(0, "open")
        assert state.key == "roller:0" and state.moving in ("opening", "stopped")
        await shelly.roller(0, "stop")
        state = await shelly.roller(0, "to_pos", position=40)
        assert state.kind == "cover"
        channels = {c.key: c for c in await shelly.channels()}
        assert "roller:0" in channels and "relay:0" not in channels
        await shelly.roller(0, "close", duration=1)


async def test_relay_mode_25(client):
    async with running(sim.ShellyGen1("SHSW-25", mode="relay")) as dev:
        shelly = ShellyGen1(client, dev.host, dev.port)
        await shelly.relay(1, "on")
        channels = {c.key: c for c in await shelly.channels()}
        assert channels["relay:1"].on is True and "relay:0" in channels


async def test_dimmer_and_rgbw(client):
    async with running(sim.ShellyGen1("SHDM-2")) as dev:
        dimmer = ShellyGen1(client, dev.host, dev.port)
        state = await dimmer.light(0, turn="on", brightness=35, transition_ms=500)
        assert state.on is True and state.brightness_pct == 35
        light = {c.key: c for c in await dimmer.channels()}["light:0"]
        assert light.brightness_pct == 35 and light.power_w is not None
    async with running(sim.ShellyGen1("SHRGBW2", mode="color")) as dev:
        rgbw = ShellyGen1(client, dev.host, dev.port)
        state = await rgbw.color(0, turn="on", rgb=(255, 20, 0), white=10, gain=70)
        assert state.colour == (255.0, 20.0, 0.0, 10.0) and state.brightness_pct == 70
    async with running(sim.ShellyGen1("SHRGBW2", mode="white")) as dev:
        white = ShellyGen1(client, dev.host, dev.port)
        state = await white.white(2, turn="on", brightness=55)
        assert state.on is True and state.brightness_pct == 55
        lights = [c for c in await white.channels() if c.kind == "light"]
        assert len(lights) == 4 and lights[2].on is True


async def test_sleeping_ht(client):
    async with running(sim.ShellyGen1("SHHT-1", awake=True)) as dev:
        ht = ShellyGen1(client, dev.host, dev.port)
        info = await ht.shelly()
        assert info.sleeping and info.kind == "sensor"
        sensor = {c.key: c for c in await ht.channels()}["sensor:0"]
        assert sensor.temperature_c is not None and sensor.humidity_pct is not None and sensor.battery_pct is not None


async def test_basic_auth(client):
    async with running(sim.ShellyGen1("SHPLG-S", password="pw")) as dev:
        assert (await ShellyGen1(client, dev.host, dev.port).shelly()).auth_enabled  # /shelly is open
        with pytest.raises(AuthRequired):
            await ShellyGen1(client, dev.host, dev.port).poll()
        with pytest.raises(WrongCredentials):
            await ShellyGen1(client, dev.host, dev.port, password="nope").relay(0, "on")
        ok = ShellyGen1(client, dev.host, dev.port, password="pw")
        assert (await ok.relay(0, "on")).on is True
        dev.set_secret(None)
        assert (await ShellyGen1(client, dev.host, dev.port).relay(0, "off")).on is False


async def test_faults_and_serialisation(client):
    async with running(sim.ShellyGen1("SHSW-PM")) as dev:
        async with make_client(timeout=httpx.Timeout(0.5)) as quick:
            shelly = ShellyGen1(quick, dev.host, dev.port)
            for fault, expected in [("http_500", ProtocolError), ("malformed", ProtocolError),
                                    ("truncated", ProtocolError), ("oversized", ProtocolError),
                                    ("hang", DeviceTimeout)]:
                dev.faults.clear()
                setattr(dev.faults, fault, True)
                with pytest.raises(expected):
                    await shelly.poll()
            dev.faults.clear()
            dev.faults.latency = 0.02
            dev.reset_counters()
            await asyncio.gather(*(shelly.poll() for _ in range(4)), shelly.relay(0, "on"))
            assert dev.max_in_flight == 1
        await dev.power_off()
        with pytest.raises(Unreachable):
            await ShellyGen1(client, dev.host, dev.port).poll()


async def test_probe_gen1(client):
    async with running(sim.ShellyGen1("SHDM-2")) as dev:
        info = await probe(client, dev.host, dev.port)
        assert info.generation == 1 and info.model == "SHDM-2" and info.mac == dev.mac
