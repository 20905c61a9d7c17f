"""python-mystrom (the library Home Assistant uses) against the simulated myStrom devices.

It sends aiohttp's default ``Accept-Encoding`` without Referer/Origin, so a device with the
CORS protection on refuses it with 404 -- exactly python-mystrom issue #28 on real
firmware. With the protection off, reading and switching work. python-mystrom only talks to
port 80, so each device gets its own 127.x.y.z address (root or a private netns).
"""

from __future__ import annotations

import pytest
from pymystrom import get_device_info
from pymystrom.bulb import MyStromBulb as PyBulb
from pymystrom.exceptions import MyStromConnectionError
from pymystrom.switch import MyStromSwitch as PySwitch

from devices.simulator.mystrom import MyStromBulb, MyStromLedStrip, MyStromSwitch
from sim_helpers import fresh_host, own_addresses_or_skip, plain_session, running

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture(autouse=True)
def _port_80():
    own_addresses_or_skip()


async def disable_protection(device) -> None:
    # The way a user would: the documented endpoint, from a client without Accept-Encoding.
    async with plain_session() as s, s.post(f"http://{device.address}/api/v1/protection/disable",
                                            headers={"Token": device.token} if device.token else {}) as r:
        assert r.status == 200


async def test_protected_switch_refuses_python_mystrom_then_works_without_protection():
    sw = MyStromSwitch("ch_v2", host=fresh_host(), port=80, relay=False)
    async with running(sw):
        async with PySwitch(sw.host) as client:
            with pytest.raises(MyStromConnectionError, match="authenticating"):
                await client.get_state()
            with pytest.raises(MyStromConnectionError):
                await client.turn_on()
        assert sw.relay is False                         # the refused command did nothing
        assert sw.requests_total >= 2                    # it did reach the device

        await disable_protection(sw)
        async with PySwitch(sw.host) as client:
            await client.get_state()
            assert client.relay is False and client.consumption == 0
            assert client.firmware == sw.firmware and client.mac == sw.mac
            assert client.device_type == "Switch CH v2"
            assert client.boot_id == sw.boot_id and client.time_since_boot is not None
            assert client.temperature is not None
            await client.turn_on()
            assert sw.relay is True and client.relay is True and client.consumption > 0
            await client.toggle()
            assert sw.relay is False and client.relay is False
            full = await client.get_temperature_full()
            assert set(full) == {"measured", "compensation", "compensated", "offset"}


async def test_token_is_needed_by_python_mystrom_too():
    sw = MyStromSwitch("eu", host=fresh_host(), port=80, token="Zug-Chriesi&1")
    async with running(sw):
        await disable_protection(sw)
        async with PySwitch(sw.host) as client:
            with pytest.raises(MyStromConnectionError):
                await client.get_state()
        async with PySwitch(sw.host, token="Zug-Chriesi&1") as client:
            await client.get_state()
            assert client.device_type == "Switch EU" and client.boot_id is None


async def test_v1_switch_works_through_the_info_json_fallback():
    # fw 2.68 predates the protection; /api/v1/info is an HTML redirect.
    sw = MyStromSwitch("ch_v1", host=fresh_host(), port=80)
    zero = MyStromSwitch("zero", host=fresh_host(), port=80)
    async with running(sw, zero):
        async with PySwitch(sw.host) as client:
            await client.get_state()
            assert client.firmware == "2.68.10" and client.mac == sw.mac
            assert client.device_type is None             # v1 reports no type at all
            assert client.temperature is None and client.consumedWs is None
        await disable_protection(zero)
        async with PySwitch(zero.host) as client:
            await client.get_state()
            assert client.consumption is None and client.device_type == "Switch Zero"
        info = await get_device_info(sw.host)
        assert "gateway" in info


async def test_bulb_and_strip_with_python_mystrom():
    bulb = MyStromBulb(host=fresh_host(), port=80)
    strip = MyStromLedStrip(host=fresh_host(), port=80)
    async with running(bulb, strip):
        async with PyBulb(bulb.host, bulb.mac) as client:
            with pytest.raises(MyStromConnectionError):
                await client.get_state()
            with pytest.raises(MyStromConnectionError):
                await client.set_on()
        await disable_protection(bulb)
        async with PyBulb(bulb.host, bulb.mac) as client:
            await client.set_color_hsv(120, 100, 50)     # sent as text/plain with literal ';'
            assert (bulb.on, bulb.mode, bulb.color) == (True, "hsv", "120;100;50")
            await client.get_state()
            assert client.state is True and client.color == "120;100;50" and client.bulb_type == "rgblamp"
            assert client.firmware == bulb.firmware and client.consumption > bulb.standby_w
            await client.set_color_hex("00FF0000")
            assert bulb.mode == "rgb" and bulb.color == "00FF0000"
            await client.set_transition_time(450)
            assert bulb.ramp == 450
            await client.set_off()
            await client.get_state()
            assert client.state is False and bulb.on is False
        await disable_protection(strip)
        async with PyBulb(strip.host, strip.mac) as client:
            await client.get_state()
            assert client.bulb_type == "strip" and client.mode == "mono"
