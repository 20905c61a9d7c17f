"""Every fault a test can inflict on a myStrom or Shelly Gen1 device, and the in-flight
accounting that proves homedash never sends two requests at once."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from devices.simulator.base import OVERSIZED_BYTES
from devices.simulator.mystrom import MyStromSwitch
from devices.simulator.shelly_gen1 import ShellyGen1
from sim_helpers import plain_session, running, until


def url(device, path: str) -> str:
    return f"http://{device.address}{path}"


@pytest.fixture
async def switch():
    async with running(MyStromSwitch("ch_v2", relay=True)) as sw:
        yield sw


async def test_latency(switch):
    switch.faults.latency = 0.3
    async with plain_session() as s:
        started = time.monotonic()
        async with s.get(url(switch, "/report")) as r:
            assert r.status == 200
        assert time.monotonic() - started >= 0.3


async def test_hang_until_the_client_gives_up(switch):
    switch.faults.hang = True
    async with plain_session(timeout=aiohttp.ClientTimeout(total=0.3)) as s:
        with pytest.raises(asyncio.TimeoutError):
            await s.get(url(switch, "/report"))
    # the client's disconnect ends the handler: nothing stays "in flight"
    assert await until(lambda: switch.in_flight == 0, timeout=2)
    switch.faults.clear()
    async with plain_session() as s, s.get(url(switch, "/report")) as r:
        assert r.status == 200


async def test_http_500_malformed_truncated_oversized(switch):
    async with plain_session() as s:
        switch.faults.http_500 = True
        async with s.get(url(switch, "/report")) as r:
            assert r.status == 500
        switch.faults.clear()
        switch.faults.malformed = True
        async with s.get(url(switch, "/report")) as r:
            body = await r.text()
            with pytest.raises(ValueError):
                json.loads(body)
        switch.faults.clear()
        switch.faults.truncated = True
        async with s.get(url(switch, "/api/v1/info")) as r:
            body = await r.text()
        with pytest.raises(ValueError):
            json.loads(body)
        assert body.startswith('{"version"')
        switch.faults.clear()
        switch.faults.oversized = True
        async with s.get(url(switch, "/report")) as r:
            assert len(await r.read()) >= OVERSIZED_BYTES


async def test_refused_while_powered_off_even_on_a_kept_alive_connection(switch):
    async with plain_session() as s:
        async with s.get(url(switch, "/report")) as r:
            assert r.status == 200                      # connection now pooled
        await switch.power_off()
        with pytest.raises(aiohttp.ClientConnectionError):
            await s.get(url(switch, "/report"))
        await switch.power_on()
        async with s.get(url(switch, "/report")) as r:
            assert r.status == 200


async def test_reboot_refuses_then_comes_back_with_a_new_boot(switch):
    async with plain_session() as s:
        switch.boot_epoch -= 1000
        async with s.get(url(switch, "/report")) as r:
            before = await r.json()
        rebooting = asyncio.ensure_future(switch.reboot(0.3))
        await asyncio.sleep(0.1)
        with pytest.raises(aiohttp.ClientConnectionError):
            await s.get(url(switch, "/report"))
        await rebooting
        async with s.get(url(switch, "/report")) as r:
            after = await r.json()
        assert after["boot_id"] != before["boot_id"]
        assert after["time_since_boot"] < 5 <= before["time_since_boot"]
        assert after["energy_since_boot"] < before["energy_since_boot"] or before["energy_since_boot"] < 1


async def test_move_to_a_new_address_keeps_the_mac(switch):
    old = switch.address
    await switch.move_to("127.0.0.12")
    async with plain_session() as s:
        with pytest.raises(aiohttp.ClientConnectionError):
            await s.get(f"http://{old}/api/v1/info")
        async with s.get(url(switch, "/api/v1/info")) as r:
            info = await r.json()
    assert switch.host == "127.0.0.12" and info["mac"] == switch.mac and info["ip"] == "127.0.0.12"


async def test_set_secret_on_both_vendors():
    sw, plug = MyStromSwitch("eu"), ShellyGen1("SHPLG-S")
    async with running(sw, plug), plain_session() as s:
        sw.set_secret("tok")
        plug.set_secret("pass")
        async with s.get(url(sw, "/report")) as r:
            assert r.status == 404
        async with s.get(url(plug, "/status")) as r:
            assert r.status == 401
        assert sw.describe()["secret"] == "tok" and plug.describe()["secret"] == "pass"


async def test_faults_apply_to_gen1_too():
    async with running(ShellyGen1("SHSW-PM")) as dev, aiohttp.ClientSession() as s:
        dev.faults.http_500 = True
        async with s.get(url(dev, "/status")) as r:
            assert r.status == 500
        dev.faults.clear()
        dev.faults.truncated = True
        async with s.get(url(dev, "/shelly")) as r:
            with pytest.raises(ValueError):
                json.loads(await r.text())


async def test_max_in_flight_counts_parallel_requests(switch):
    switch.faults.latency = 0.2
    async with plain_session() as s:
        async def one():
            async with s.get(url(switch, "/report")) as r:
                return r.status

        assert await asyncio.gather(one(), one(), one()) == [200, 200, 200]
        assert switch.max_in_flight == 3
        switch.reset_counters()
        switch.faults.latency = 0
        for _ in range(4):
            await one()
        assert switch.max_in_flight == 1 and switch.requests_total == 4
        assert switch.in_flight == 0
