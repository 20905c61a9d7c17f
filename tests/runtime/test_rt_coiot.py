"""Gen1 CoIoT as a push path: a status message from a known device makes its session read
/status at once; repeats of the same serial cost nothing; strangers are ignored."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

import pytest
from hypothesis import given, settings, strategies as st

from devices import runtime as runtime_module
from devices.drivers.coiot import belongs_to, parse_coiot
from devices.models import Device
from devices.runtime.setup import build_runtime
from devices.simulator.shelly_gen1 import ShellyGen1, coap_encode
from tests.waiting import until

pytestmark = pytest.mark.django_db(transaction=True)


@given(st.binary(max_size=600))
@settings(max_examples=300, deadline=None)
def test_parser_never_raises(data):
    parse_coiot(data)


def test_parses_a_status_message():
    raw = coap_encode(30, 7, [(3332, b"SHSW-PM#A4CF12F3D4E1#2"), (3412, b"\x00\x26"), (3420, b"\x01\x02")],
                      b'{"G":[[0,1101,1]]}')
    message = parse_coiot(raw)
    assert (message.code, message.model, message.device, message.serial) == (30, "SHSW-PM", "A4CF12F3D4E1", 258)
    assert message.payload == {"G": [[0, 1101, 1]]}
    assert belongs_to(message, "A4CF12F3D4E1") and not belongs_to(message, "A4CF12000000")




async def test_coiot_status_triggers_an_immediate_read():
    rt = build_runtime(manager_options={"start_spread": 0.0, "flush_period": 0.2},
                       coiot_host="127.0.0.1", coiot_port=0)
    await rt.start()
    runtime_module.install(rt)
    manager = rt.manager
    try:
        assert await until(lambda: getattr(manager, "coiot_port", None))
        plug = ShellyGen1("SHSW-PM", coiot_peer=f"127.0.0.1:{manager.coiot_port}", update_period=1.0)
        await plug.start()
        try:
            device = await Device.objects.acreate(mac=plug.mac, vendor="shelly", generation=1, model_code="SHSW-PM",
                                                  host=plug.host, port=plug.port, adopted=True, poll_interval=30)
            await manager.reload_device(device.pk)
            store = manager.store
            assert await until(lambda: store.get(device.pk).online)
            before = store.get(device.pk).channels["relay:0"].on
            requests = plug.requests_total
            plug.flip(0)
            # Far sooner than the 30 s poll interval.
            assert await until(lambda: store.get(device.pk).channels["relay:0"].on is (not before), timeout=3)
            assert store.get(device.pk).health.mode == "push (CoIoT)"
            await asyncio.sleep(2.5)  # periodic repeats with an unchanged serial
            assert plug.requests_total - requests <= 2
            assert manager.coiot.received >= 2
        finally:
            await plug.stop()

        # A forged message from elsewhere for an unknown id changes nothing.
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.sendto(coap_encode(30, 1, [(3332, b"SHSW-PM#000000000000#2"), (3420, b"\x09")], b"{}"),
                    ("127.0.0.1", manager.coiot_port))
        sock.close()
    finally:
        runtime_module.install(None)
        await rt.stop()


async def test_a_flood_of_spoofed_status_messages_reads_at_most_once_a_second():
    """Anyone can send CoIoT with the device's address, id and a fresh serial each time:
    the device is read no more than once per gap, and the latest state still arrives."""
    from devices.runtime.coiot import MIN_POLL_GAP

    rt = build_runtime(manager_options={"start_spread": 0.0, "flush_period": 0.2},
                       coiot_host="127.0.0.1", coiot_port=0)
    await rt.start()
    runtime_module.install(rt)
    manager = rt.manager
    plug = None
    try:
        assert await until(lambda: getattr(manager, "coiot_port", None))
        # The device's own CoIoT goes elsewhere: every message the listener gets is forged.
        plug = ShellyGen1("SHSW-PM", update_period=60.0)
        await plug.start()
        device = await Device.objects.acreate(mac=plug.mac, vendor="shelly", generation=1, model_code="SHSW-PM",
                                              host=plug.host, port=plug.port, adopted=True, poll_interval=30)
        await manager.reload_device(device.pk)
        store = manager.store
        assert await until(lambda: store.get(device.pk).online)
        before = store.get(device.pk).channels["relay:0"].on
        requests = plug.requests_total

        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((plug.host, 0))  # the device's own address, as a spoofer on the LAN sends
        sock.setblocking(False)
        ident = f"SHSW-PM#{plug.mac}#2".encode()
        sent = 0
        seconds = 3.0
        started = time.monotonic()
        flipped = False
        while time.monotonic() - started < seconds:
            for _ in range(50):
                sent += 1
                with contextlib.suppress(BlockingIOError):
                    sock.sendto(coap_encode(30, sent & 0xFFFF, [(3332, ident), (3420, (sent & 0xFFFF).to_bytes(2, "big"))],
                                            b'{"G":[]}'), ("127.0.0.1", manager.coiot_port))
            if not flipped and time.monotonic() - started > seconds - 0.5:
                plug.flip(0)  # a real change late in the flood
                flipped = True
            await asyncio.sleep(0.002)
        sock.close()
        elapsed = time.monotonic() - started
        assert manager.coiot.received > 500, manager.coiot.received  # the flood did arrive
        # The change made during the flood shows within one gap (no 30 s poll needed).
        assert await until(lambda: store.get(device.pk).channels["relay:0"].on is (not before),
                           timeout=MIN_POLL_GAP + 2)
        reads = plug.requests_total - requests
        assert reads <= elapsed / MIN_POLL_GAP + 2, (reads, sent)
        assert manager.coiot.folded >= manager.coiot.received - reads - 5
    finally:
        if plug is not None:
            await plug.stop()
        runtime_module.install(None)
        await rt.stop()
