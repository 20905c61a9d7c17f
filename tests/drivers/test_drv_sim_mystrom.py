"""myStrom driver against the simulated devices (real HTTP on loopback)."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest

from devices.drivers import (
    AuthRequired,
    BadToken,
    CorsRefused,
    DeviceTimeout,
    MyStrom,
    ProtocolError,
    Unreachable,
    Unsupported,
    make_client,
    probe,
)
from devices.simulator import mystrom as sim


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


@pytest.fixture
async def quick_client():
    async with make_client(timeout=httpx.Timeout(0.5)) as c:
        yield c


async def test_switch_commands(client):
    async with running(sim.MyStromSwitch("ch_v2")) as dev:
        switch = MyStrom(client, dev.host, dev.port)
        info = await switch.info()
        assert (info.mac, info.type_code, info.model, info.kind) == (dev.mac, 106, "WS2", "switch")
        assert dev.protection  # CORS protection is on, and we still get through

        state = await switch.set_relay(True)
        assert state.on is True and dev.relay is True
        assert state.power_w is not None and state.temperature_c is not None
        assert state.energy_wh is not None and state.energy_wh >= 0  # fw 4.x boot_id rule
        state = await switch.set_relay(False)
        assert state.on is False and dev.relay is False
        state = await switch.toggle()
        assert state.on is True and dev.relay is True

        await switch.timer("off", 60)
        assert dev.relay is False
        await switch.timer("none", 0)
        await switch.set_relay(True)
        await switch.power_cycle(30)
        assert dev.relay is False  # off now, back on after 30 s

        temp = await switch.temperature()
        assert temp.compensated is not None
        with pytest.raises(Unsupported):
            await switch.sensors()  # a switch has no sensors endpoint


async def test_switch_requests_are_serialised(client):
    async with running(sim.MyStromSwitch("ch_v2")) as dev:
        dev.faults.latency = 0.02
        switch = MyStrom(client, dev.host, dev.port)
        dev.reset_counters()
        await asyncio.gather(*(switch.report() for _ in range(6)), switch.set_relay(True))
        assert dev.max_in_flight == 1


async def test_switch_variants(client):
    async with running(sim.MyStromSwitch("ch_v1")) as v1:
        old = MyStrom(client, v1.host, v1.port)
        info = await old.info()  # /api/v1/info redirects to HTML; /info.json answers
        assert (info.type_code, info.mac) == (101, v1.mac)
        report = await old.report()
        assert report.temperature_c is None and report.energy_wh is None
        with pytest.raises(Unsupported):
            await old.temperature()
    async with running(sim.MyStromSwitch("zero")) as zero:
        state = await MyStrom(client, zero.host, zero.port).report()
        assert state.power_w is None and state.temperature_c is None and state.on in (True, False)
    async with running(sim.MyStromSwitch("eu")) as eu:
        device = MyStrom(client, eu.host, eu.port)
        assert (await device.info()).model == "WSE"
        state = await device.report()
        assert state.power_w is not None and state.energy_wh is None  # fw 3.x: no boot_id


async def test_token(client):
    async with running(sim.MyStromSwitch("ch_v2")) as dev:
        dev.set_secret("s3cret")
        with pytest.raises(AuthRequired):
            await MyStrom(client, dev.host, dev.port).report()
        with pytest.raises(BadToken):
            await MyStrom(client, dev.host, dev.port, token="wrong").set_relay(True)
        assert dev.relay is not None
        ok = MyStrom(client, dev.host, dev.port, token="s3cret")
        assert (await ok.set_relay(True)).on is True
        with pytest.raises(Unsupported):  # right token, path the firmware lacks
            await ok.sensors()
        # set a new token through the settings API: the driver follows it
        await ok.set_settings(token="n3w")
        assert dev.token == "n3w"
        assert (await ok.report()).on is True


async def test_cors_protection(client):
    async def add_encoding(request: httpx.Request) -> None:
        request.headers["Accept-Encoding"] = "gzip, deflate"  # what aiohttp/browsers send

    async with running(sim.MyStromSwitch("ch_v2")) as dev:
        assert dev.protection
        assert (await MyStrom(client, dev.host, dev.port).report()).on in (True, False)
        async with make_client() as leaky:
            leaky.event_hooks["request"].append(add_encoding)
            with pytest.raises(CorsRefused):
                await MyStrom(leaky, dev.host, dev.port).set_relay(True)
            # turning the protection off (as the peer benchmark does) lets it through
            await MyStrom(client, dev.host, dev.port).set_protection(False)
            assert not dev.protection
            assert (await MyStrom(leaky, dev.host, dev.port).set_relay(True)).on is True
            await MyStrom(client, dev.host, dev.port).set_protection(True)
            assert dev.protection


async def test_bulb_and_strip(client):
    async with running(sim.MyStromBulb()) as dev:
        bulb = MyStrom(client, dev.host, dev.port)
        info = await bulb.info()
        assert info.kind == "bulb"
        state = await bulb.set_light(action="on", hsv=(120, 100, 50), ramp_ms=300)
        assert state.on is True and state.colour == (120.0, 100.0, 50.0) and state.colour_mode == "hsv"
        assert dev.on is True and dev.color == "120;100;50"
        state = await bulb.set_light(rgbw=(255, 0, 0, 0))
        assert state.colour_mode == "rgbw" and state.colour[:3] == (255.0, 0.0, 0.0)
        state = await bulb.set_light(mono=(5, 60))
        assert state.colour_mode == "mono" and state.brightness_pct == 60
        assert (await bulb.light_off()).on is False
        assert (await bulb.light_toggle()).on is True
        full = await bulb.light_state()
        assert full.power_w is not None and full.on is True
    async with running(sim.MyStromLedStrip()) as dev:
        strip = MyStrom(client, dev.host, dev.port)
        assert (await strip.info()).kind == "strip"
        assert (await strip.light_on(ramp_ms=100)).on is True
        assert (await strip.set_light(hsv=(10, 20, 30))).colour == (10.0, 20.0, 30.0)


async def test_pir(client):
    async with running(sim.MyStromPir()) as dev:
        pir = MyStrom(client, dev.host, dev.port)
        assert (await pir.info()).kind == "pir"
        channels = {c.key: c for c in await pir.sensors()}
        assert channels["motion"].motion in (True, False)
        assert channels["temperature"].temperature_c is not None
        actions = await pir.actions()
        assert "pir/rise" in actions
        await pir.set_action("pir/rise", "get://127.0.0.1:9/hook?x=1")
        assert (await pir.actions())["pir/rise"] == "get://127.0.0.1:9/hook?x=1"
        assert (await pir.temperature()).compensated is not None


async def test_button(client):
    async with running(sim.MyStromButton(plus=True, awake=True)) as dev:
        button = MyStrom(client, dev.host, dev.port)
        info = await button.info()
        assert info.kind == "button" and info.sleeping
        state, actions = await button.button()
        assert state.battery_v is not None and set(actions) >= {"single", "double", "long", "generic"}
        await button.set_action("generic", "get://127.0.0.1:9/hooks/mystrom/abc")
        assert dev.actions["generic"] == "get://127.0.0.1:9/hooks/mystrom/abc"
        assert (await button.actions())["generic"] == "get://127.0.0.1:9/hooks/mystrom/abc"
        await dev.sleep()
        with pytest.raises(Unreachable):  # asleep: off the network
            await button.button()


async def test_faults_are_typed(client, quick_client):
    async with running(sim.MyStromSwitch("ch_v2")) as dev:
        switch = MyStrom(quick_client, dev.host, dev.port)
        cases = [("http_500", ProtocolError), ("malformed", ProtocolError), ("truncated", ProtocolError),
                 ("oversized", ProtocolError), ("hang", DeviceTimeout)]
        for fault, expected in cases:
            dev.faults.clear()
            setattr(dev.faults, fault, True)
            with pytest.raises(expected):
                await switch.report()
        dev.faults.clear()
        dev.faults.latency = 1.0
        with pytest.raises(DeviceTimeout):
            await switch.report()
        dev.faults.clear()
        assert (await switch.report()).on in (True, False)
        await dev.power_off()
        with pytest.raises(Unreachable):
            await MyStrom(client, dev.host, dev.port).report()
        await dev.power_on()
        assert (await MyStrom(client, dev.host, dev.port).report()).on in (True, False)


async def test_probe_mystrom(client):
    async with running(sim.MyStromSwitch("eu")) as dev:
        info = await probe(client, dev.host, dev.port)
        assert info.vendor == "mystrom" and info.mac == dev.mac


async def test_bulb_white_tone_through_the_runtime(client):
    """myStrom white is a tone index (1 warmest .. 18), not kelvin: the runtime's "white"
    command sets mono mode at the current brightness, and brightness then keeps the tone."""
    from devices.runtime.sessions import CommandError, DeviceConfig, MyStromAdapter

    async with running(sim.MyStromBulb()) as dev:
        config = DeviceConfig(pk=1, mac=dev.mac, vendor="mystrom", generation=None, model_code="102",
                              host=dev.host, port=dev.port)
        adapter = MyStromAdapter(config, client)
        await adapter.driver.set_light(action="on", hsv=(30, 80, 40))
        [state] = await adapter.command("light", "white", {"white": 4})
        assert (state.colour_mode, state.colour[0], state.brightness_pct) == ("mono", 4.0, 40)
        assert dev.mode == "mono" and dev.color == "4;40"
        [state] = await adapter.command("light", "brightness", {"brightness": 75})
        assert dev.color == "4;75" and state.colour_mode == "mono"
        for bad in ({"white": 0}, {"white": 19}, {"white": "warm"}, {}):
            with pytest.raises(CommandError):
                await adapter.command("light", "white", bad)
        assert dev.color == "4;75"
