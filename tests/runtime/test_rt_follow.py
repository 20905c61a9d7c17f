"""The runtime follows simulated devices: state arrives, changes made at the device reach
the channel layer as rendered fragments, failures turn into offline after the hysteresis,
commands go through the device's session, and nothing ever overlaps on the wire."""

from __future__ import annotations

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from devices.credentials import Credentials
from devices.models import Channel, Device, DeviceEvent, Room
from devices.runtime.publisher import device_group, room_group
from devices.runtime.setup import build_runtime
from devices.simulator.mystrom import MyStromSwitch
from devices.simulator.shelly_gen1 import ShellyGen1
from tests.waiting import until

pytestmark = pytest.mark.django_db(transaction=True)




@pytest.fixture
async def household():
    switch = MyStromSwitch("ch_v2", relay=True)
    plug = ShellyGen1("SHSW-PM", password="Gen1-Secret-55")
    await switch.start()
    await plug.start()
    room = await Room.objects.acreate(name="Kitchen")
    d_switch = await Device.objects.acreate(mac=switch.mac, vendor="mystrom", model_code="106", host=switch.host,
                                            port=switch.port, adopted=True, room=room, poll_interval=0.3,
                                            raw_info={"type": 106})
    d_plug = await Device.objects.acreate(mac=plug.mac, vendor="shelly", generation=1, model_code="SHSW-PM",
                                          host=plug.host, port=plug.port, adopted=True, room=room, poll_interval=0.3,
                                          credentials=Credentials(username="admin", password="Gen1-Secret-55"))
    yield {"switch": switch, "plug": plug, "room": room, "d_switch": d_switch, "d_plug": d_plug}
    for sim in (switch, plug):
        await sim.stop()


@pytest.fixture
async def runtime():
    rt = build_runtime(manager_options={"start_spread": 0.2, "flush_period": 0.2})
    await rt.start()
    yield rt
    await rt.stop()


async def test_follows_commands_and_failures(household, runtime):
    manager = runtime.manager
    store = manager.store
    switch, plug = household["switch"], household["plug"]
    pk_switch, pk_plug = household["d_switch"].pk, household["d_plug"].pk

    assert await until(lambda: all(store.get(pk) and store.get(pk).online for pk in (pk_switch, pk_plug)))
    assert store.get(pk_switch).channels["relay"].on is True
    assert "relay:0" in store.get(pk_plug).channels

    # Channels appear in the database by themselves, with the device's room.
    assert await until(lambda: (pk_switch, "relay") in manager.catalogue.channels)
    assert await Channel.objects.filter(device_id=pk_switch, key="relay").aexists()

    layer = get_channel_layer()
    channel_name = await layer.new_channel()
    await layer.group_add(room_group(household["room"].pk), channel_name)
    await layer.group_add(device_group(pk_switch), channel_name)

    # A change made at the device (someone pressed the plug's button) reaches the group.
    switch.flip()

    async def first_off():
        # Power readings of the still-on switch may arrive first; wait for the change.
        while True:
            message = await layer.receive(channel_name)
            assert message["type"] == "fragment"
            if ">Off<" in message["html"]:
                return message

    await asyncio.wait_for(first_off(), 5)
    assert store.get(pk_switch).channels["relay"].on is False

    # A command goes through the session and the device changes.
    result = await manager.command(pk_switch, "relay", "on")
    assert result["ok"] is True and switch.relay is True
    result = await manager.command(pk_plug, "relay:0", "toggle")
    assert result["ok"], result

    # Wrong commands are refused in words, without touching the device.
    assert (await manager.command(pk_switch, "relay", "fly"))["ok"] is False

    # The device is unplugged: offline after the hysteresis, back when it returns.
    await switch.power_off()
    assert await until(lambda: not store.get(pk_switch).online, timeout=8)
    assert "unreachable" in store.get(pk_switch).health.last_error
    failed = await manager.command(pk_switch, "relay", "off")
    assert failed == {"ok": False, "error": "unreachable", "kind": "Unreachable"}
    await switch.power_on()
    assert await until(lambda: store.get(pk_switch).online, timeout=70)

    # Never two requests at once at any device.
    assert switch.max_in_flight == 1 and plug.max_in_flight == 1


async def test_wrong_password_is_reported(household, runtime):
    plug = household["plug"]
    store = runtime.manager.store
    pk = household["d_plug"].pk
    assert await until(lambda: store.get(pk) and store.get(pk).online)
    plug.set_secret("Changed-On-The-Device-1")
    assert await until(lambda: not store.get(pk).online, timeout=8)
    assert "wrong password" in store.get(pk).health.last_error


async def test_gen1_button_presses_become_events(household, runtime):
    plug = household["plug"]
    store = runtime.manager.store
    pk = household["d_plug"].pk
    assert await until(lambda: store.get(pk) and store.get(pk).online)
    plug.press(0, "long")
    assert await until(lambda: any(e.kind == "long" for e in store.get(pk).events), timeout=5)
    await asyncio.sleep(0.5)  # one flush period and then some
    assert await DeviceEvent.objects.filter(device_id=pk, kind="long").aexists()


async def test_last_known_values_survive_a_restart(household):
    switch = household["switch"]
    pk = household["d_switch"].pk
    rt = build_runtime(manager_options={"start_spread": 0.1, "flush_period": 0.1})
    await rt.start()
    assert await until(lambda: rt.manager.store.get(pk) and rt.manager.store.get(pk).online)
    await asyncio.sleep(0.5)
    await rt.stop()
    channel = await Channel.objects.aget(device_id=pk, key="relay")
    assert channel.last_state["on"] is True and channel.last_state_at is not None

    await switch.power_off()
    again = build_runtime(manager_options={"start_spread": 0.1, "flush_period": 0.1})
    await again.start()
    try:
        assert await until(lambda: again.manager.ready.is_set())
        live = again.manager.store.get(pk)
        # Shown at once from the database, honestly marked stale.
        assert live.channels["relay"].on is True and live.stale
    finally:
        await again.stop()
