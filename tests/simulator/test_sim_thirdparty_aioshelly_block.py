"""aioshelly 13.x (Home Assistant's library) drives the simulated Gen1 devices exactly as it
drives real ones: ``GET /shelly``, ``/settings``, ``/status``, ``/cit/d`` over HTTP, ``cit/s``
over CoAP to port 5683 of the device address, commands over HTTP, CoIoT pushes (code 30)
to its listener.

aioshelly refuses any HTTP port but 80 for Gen1 and always sends CoAP to port 5683, so
every device gets its own 127.x.y.z address (root or a private network namespace). The
CoAP listener joins its multicast group on loopback only (no IGMP on a real interface) and
uses an ephemeral port: aioshelly's requests still go to the devices' 5683, the replies come
back to wherever they were sent from, and parallel test runs cannot steal each other's.
"""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address

import aiohttp
import pytest
from aioshelly.block_device import COAP, BlockDevice, BlockUpdateType
from aioshelly.common import ConnectionOptions
from aioshelly.exceptions import DeviceConnectionError, InvalidAuthError

from devices.simulator.shelly_gen1 import ShellyGen1
from sim_helpers import fresh_host, own_addresses_or_skip, running, until


@pytest.fixture
async def coap():
    own_addresses_or_skip()
    context = COAP()
    try:
        await context.initialize(0, [IPv4Address("127.0.0.1")])
    except OSError as exc:
        pytest.skip(f"cannot open a CoIoT listener: {exc}")
    yield context
    context.close()


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


def block(device: BlockDevice, kind: str):
    return next(b for b in device.blocks if b.type == kind)


async def test_initialise_read_and_switch_a_relay(coap, session):
    sim = ShellyGen1("SHSW-PM", host=fresh_host(), port=80, name="Garage & \"Werkstatt\"")
    async with running(sim):
        assert sim.coap_port == 5683
        device = await BlockDevice.create(session, coap, ConnectionOptions(sim.host))
        await device.initialize()
        try:
            assert device.initialized and device.firmware_supported
            assert device.model == "SHSW-PM" and device.shelly["mac"] == sim.mac
            assert device.name == 'Garage & "Werkstatt"'
            assert device.coap_s is not None                 # cit/s answered over CoAP
            relay = block(device, "relay")
            assert relay.output == int(sim.outputs[0].ison)
            await relay.set_state(turn="on")
            assert sim.outputs[0].ison is True
            await device.update()                            # CoAP cit/s round trip
            assert relay.output == 1
            await relay.toggle()
            await device.update_status()
            assert device.status["relays"][0]["ison"] is False
            assert block(device, "device").deviceTemp > 0
        finally:
            await device.shutdown()


async def test_basic_auth_with_and_without_credentials(coap, session):
    sim = ShellyGen1("SHPLG-S", host=fresh_host(), port=80, password="Haus&Hof:1")
    async with running(sim):
        anonymous = await BlockDevice.create(session, coap, ConnectionOptions(sim.host))
        with pytest.raises(InvalidAuthError):
            await anonymous.initialize()
        await anonymous.shutdown()
        wrong = await BlockDevice.create(session, coap, ConnectionOptions(sim.host, "admin", "nope"))
        with pytest.raises(InvalidAuthError):
            await wrong.initialize()
        await wrong.shutdown()
        device = await BlockDevice.create(session, coap, ConnectionOptions(sim.host, "admin", "Haus&Hof:1"))
        await device.initialize()
        try:
            assert device.requires_auth and device.settings["login"]["enabled"] is True
            await block(device, "relay").set_state(turn="on")
            assert sim.outputs[0].ison is True
        finally:
            await device.shutdown()


async def test_coiot_peer_pushes_reach_aioshelly_after_reboot(coap, session):
    sim = ShellyGen1("SHSW-PM", host=fresh_host(), port=80, update_period=0.3)
    async with running(sim):
        device = await BlockDevice.create(session, coap, ConnectionOptions(sim.host))
        await device.initialize()
        updates: list[BlockUpdateType] = []
        device.subscribe_updates(lambda _dev, kind: updates.append(kind))
        try:
            listener_port = coap.transport.get_extra_info("sockname")[1]
            await device.configure_coiot_protocol("127.0.0.1", listener_port)
            await device.trigger_reboot()                    # the peer takes effect at boot
            assert await until(lambda: BlockUpdateType.COAP_PERIODIC in updates, timeout=5)
            updates.clear()
            sim.flip(0)                                      # a wall switch: pushed at once
            assert await until(lambda: updates, timeout=2)
            assert block(device, "relay").output == int(sim.outputs[0].ison)
        finally:
            await device.shutdown()


async def test_lights_roller_and_sleeping_ht(coap, session):
    rgbw = ShellyGen1("SHRGBW2", host=fresh_host(), port=80)
    roller = ShellyGen1("SHSW-25", host=fresh_host(), port=80, roller_maxtime=0.5)
    dimmer = ShellyGen1("SHDM-2", host=fresh_host(), port=80)
    ht = ShellyGen1("SHHT-1", host=fresh_host(), port=80)
    async with running(rgbw, roller, dimmer, ht):
        devices = []
        try:
            for sim in (rgbw, roller, dimmer):
                device = await BlockDevice.create(session, coap, ConnectionOptions(sim.host))
                await device.initialize()
                devices.append(device)
            d_rgbw, d_roller, d_dimmer = devices
            await block(d_rgbw, "light").set_state(turn="on", red=200, green=10, blue=0, gain=70)
            assert rgbw.outputs[0].ison and rgbw.outputs[0].red == 200      # via /color/0
            await block(d_dimmer, "light").set_state(turn="on", brightness=35)
            assert dimmer.outputs[0].brightness == 35
            await block(d_roller, "roller").set_state(go="open")
            assert await until(lambda: roller.rollers[0].current() == 100, timeout=3)
            await d_roller.update()
            assert block(d_roller, "roller").rollerPos == 100

            # asleep: not even /shelly answers; awake it is a normal block device
            asleep = await BlockDevice.create(session, coap, ConnectionOptions(ht.host))
            with pytest.raises(DeviceConnectionError):
                await asyncio.wait_for(asleep.initialize(), 3)
            await asleep.shutdown()
            await ht.wake(10)
            d_ht = await BlockDevice.create(session, coap, ConnectionOptions(ht.host))
            await d_ht.initialize()
            devices.append(d_ht)
            sensor = block(d_ht, "sensor")
            assert sensor.extTemp == ht.temperature_c and sensor.humidity == ht.humidity
        finally:
            for device in devices:
                await device.shutdown()
