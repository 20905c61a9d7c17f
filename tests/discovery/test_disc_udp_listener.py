"""The announcement listener: rate limits and bounds with a fake clock and fake devices,
then the real thing on loopback — a simulated myStrom switch announcing 8-byte records to
our socket, the inbox filling, and the switch moving to a new address."""

from __future__ import annotations

import asyncio
import socket

import pytest
from asgiref.sync import sync_to_async

from devices.discovery import Discovery
from devices.discovery.identify import Candidate
from devices.discovery.mystrom_udp import MyStromListener, open_announcement_socket
from devices.models import Device, DeviceEvent
from devices.simulator.mystrom import MyStromSwitch
from devices.credentials import Credentials

from disc_helpers import FakeDevices, free_port, loopback_block, port_free_on


def packet(mac: str, type_code: int = 106, flags: int = 4) -> bytes:
    return bytes.fromhex(mac) + bytes((type_code, flags))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def settle(listener: MyStromListener) -> None:
    for _ in range(50):
        if not listener._probing:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("probes did not finish")


async def test_one_probe_per_mac_per_window():
    fake = FakeDevices()
    fake.mystrom("192.168.1.47", "083AF271E800", 107, "3.83.1")
    found: list[Candidate] = []

    async def on_found(c: Candidate) -> None:
        found.append(c)

    clock = Clock()
    async with fake.client() as client:
        listener = MyStromListener(client, on_found, probe_window=60, refresh_after=600, clock=clock)
        for _ in range(30):  # a burst of repeats (and a replaying attacker) costs one probe
            listener.handle(packet("083AF271E800", 107), "192.168.1.47")
        await settle(listener)
        assert fake.count() == 1
        assert [(c.mac, c.host, c.info.firmware, c.confirmed) for c in found] == [
            ("083AF271E800", "192.168.1.47", "3.83.1", True)]

        # Same address, window passed: nothing new to learn until the refresh is due.
        clock.now += 120
        listener.handle(packet("083AF271E800", 107), "192.168.1.47")
        await settle(listener)
        assert fake.count() == 1

        clock.now += 600
        listener.handle(packet("083AF271E800", 107), "192.168.1.47")
        await settle(listener)
        assert fake.count() == 2 and len(found) == 2


async def test_new_address_is_probed_but_still_rate_limited():
    fake = FakeDevices()
    fake.mystrom("192.168.1.47", "083AF271E800")
    fake.mystrom("192.168.1.80", "083AF271E800")
    found: list[Candidate] = []

    async def on_found(c: Candidate) -> None:
        found.append(c)

    clock = Clock()
    async with fake.client() as client:
        listener = MyStromListener(client, on_found, probe_window=60, clock=clock)
        listener.handle(packet("083AF271E800"), "192.168.1.47")
        await settle(listener)
        clock.now += 10
        listener.handle(packet("083AF271E800"), "192.168.1.80")  # within the window: later
        await settle(listener)
        assert fake.count() == 1
        clock.now += 60
        listener.handle(packet("083AF271E800"), "192.168.1.80")
        await settle(listener)
        assert [c.host for c in found] == ["192.168.1.47", "192.168.1.80"]


async def test_mismatching_mac_is_not_reported_and_table_is_bounded():
    fake = FakeDevices(delay=0.05)
    fake.mystrom("192.168.1.47", "083AF271E800")
    found: list[Candidate] = []

    async def on_found(c: Candidate) -> None:
        found.append(c)

    async with fake.client() as client:
        listener = MyStromListener(client, on_found, max_probes=4, max_devices=16)
        # A forged MAC from a real device's address: the device's own info disagrees.
        listener.handle(packet("30AEA4999999"), "192.168.1.47")
        # A flood of random MACs: at most 4 probes in flight, the rest dropped, table capped.
        for i in range(200):
            listener.handle(packet(f"30AEA4{i:06X}"), f"192.168.2.{i % 250 + 1}")
        assert listener.slots.busy <= 4 and listener.dropped >= 190
        assert len(listener.heard()) == 16
        await settle(listener)
        assert fake.peak <= 4
        assert found == []


async def test_packets_from_refused_addresses_are_ignored():
    fake = FakeDevices()
    async with fake.client() as client:
        listener = MyStromListener(client, lambda c: asyncio.sleep(0), allow_loopback=False)
        listener.handle(packet("30AEA4000001"), "127.0.0.1")
        listener.handle(packet("30AEA4000001"), "224.0.0.1")
        listener.handle(b"garbage", "192.168.1.5")
        assert listener.rejected == 3 and fake.count() == 0


def test_socket_coexists_with_other_listeners():
    """Another tool (Home Assistant, node-red) holds the port with SO_REUSEADDR/SO_REUSEPORT:
    ours binds beside it and both receive. (Linux spreads unicast datagrams over the sockets
    sharing a port by sender address, so they come from many senders here; a broadcast
    announcement reaches every one of them.)"""
    port = free_port()
    first = open_announcement_socket("127.0.0.1", port)
    second = None
    try:
        second = open_announcement_socket("127.0.0.1", port)
        received = {first: [], second: []}
        for n in range(64):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:   # a new source port each
                sender.sendto(packet(f"AABBCC00{n:04X}"), ("127.0.0.1", port))
            for sock in (first, second):
                _drain(sock, received[sock])
            if all(received.values()) and n >= 8:
                break
        for sock in (first, second):
            _drain(sock, received[sock], wait=0.2)
        assert received[first] and received[second], {k.fileno(): len(v) for k, v in received.items()}
        assert all(len(data) == 8 for data in received[first] + received[second])
        assert len(received[first]) + len(received[second]) >= 9
    finally:
        first.close()
        if second is not None:
            second.close()


def _drain(sock: socket.socket, into: list, wait: float = 0.01) -> None:
    """Whatever datagrams are waiting on a non-blocking socket (after up to `wait` s)."""
    import select

    while select.select([sock], [], [], wait)[0]:
        into.append(sock.recv(64))
        wait = 0


# ------------------------------------------------------------------ real switch, real DB


@pytest.fixture
def loopback_devices(settings):
    settings.ALLOW_LOOPBACK_DEVICES = True
    settings.AUTO_ADOPT = False


async def wait_for(predicate, timeout: float = 5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await sync_to_async(predicate)()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def _discovery(device_port: int, **kw) -> Discovery:
    return Discovery(udp=True, mdns=False, bind="127.0.0.1", port=0, device_port=device_port,
                     allow_loopback=True, probe_window=0.3, **kw)


@pytest.mark.django_db(transaction=True)
async def test_announcing_switch_lands_in_inbox_and_its_move_is_followed(loopback_devices):
    block = loopback_block()
    first, second = f"{block}.10", f"{block}.20"
    http_port = free_port(first)
    if not port_free_on(second, http_port):
        pytest.skip(f"port {http_port} busy on {second}")
    events = []
    discovery = _discovery(http_port)
    discovery.subscribe(events.append)
    await discovery.start()
    switch = MyStromSwitch("eu", host=first, port=http_port, mac="083AF271E800",
                           announce_to=("127.0.0.1", discovery.udp_port), announce_interval=0.1)
    try:
        await switch.start()
        device = await wait_for(lambda: Device.objects.filter(mac="083AF271E800").first())
        assert (device.vendor, device.model_code, device.model_name, device.firmware) == (
            "mystrom", "WSE", "WiFi Switch EU", "3.83.1")
        assert (device.host, device.port, device.found_by) == (first, http_port, "udp")
        assert not device.adopted and not device.ignored and not device.auth_required
        assert device.raw_info["mac"] == "083AF271E800"
        assert events[0].kind == "created"

        try:
            await switch.move_to(second, http_port)
        except OSError as exc:
            pytest.skip(f"cannot bind {second}: {exc}")
        moved = await wait_for(lambda: Device.objects.filter(mac="083AF271E800", host=second).first())
        assert moved.port == http_port
        event = await sync_to_async(lambda: DeviceEvent.objects.get(device=moved, kind="address_changed"))()
        assert event.detail == f"{first}:{http_port} → {second}:{http_port}"
        assert event.data["old_host"] == first and event.data["host"] == second
        moved_outcomes = [e for e in events if e.kind == "moved"]
        assert moved_outcomes and moved_outcomes[0].old_host == first
        assert await sync_to_async(Device.objects.count)() == 1
        # Several probes at most: one per window, not one per announcement.
        assert discovery.udp.probes < switch.announcements_sent
    finally:
        await switch.stop()
        await discovery.stop()


@pytest.mark.django_db(transaction=True)
async def test_token_protected_switch_waits_in_inbox_needing_credentials(loopback_devices):
    block = loopback_block()
    first, second = f"{block}.11", f"{block}.21"
    http_port = free_port(first)
    if not port_free_on(second, http_port):
        pytest.skip(f"port {http_port} busy on {second}")
    discovery = _discovery(http_port)
    await discovery.start()
    switch = MyStromSwitch("ch_v2", host=first, port=http_port, mac="30AEA4ABCDEF", token="geheim",
                           announce_to=("127.0.0.1", discovery.udp_port), announce_interval=0.1)
    try:
        await switch.start()
        device = await wait_for(lambda: Device.objects.filter(mac="30AEA4ABCDEF").first())
        assert device.auth_required and device.model_code == "WS2" and device.host == first

        # Once the household stored the token, an announcement from a new address is only
        # a claim: the token is never sent there, and staff are asked to confirm the move.
        device.credentials = Credentials(token="geheim")
        await sync_to_async(device.save)()
        await switch.move_to(second, http_port)
        pending = await wait_for(lambda: Device.objects.filter(mac="30AEA4ABCDEF", pending_host=second).first())
        assert (pending.host, pending.pending_port, pending.pending_found_by) == (first, http_port, "udp")
        assert not pending.pending_answered  # tokenless, the device only answers 404
        assert await sync_to_async(DeviceEvent.objects.filter(device=pending, kind="move_pending").count)() == 1
    finally:
        await switch.stop()
        await discovery.stop()


@pytest.mark.django_db(transaction=True)
async def test_unproven_move_of_token_device_is_not_believed(loopback_devices):
    """Without the token, a token-protected device announcing from a new address cannot
    prove it: the address stays (a forged packet must not redirect a device)."""
    block = loopback_block()
    first, second = f"{block}.12", f"{block}.22"
    http_port = free_port(second)
    await sync_to_async(Device.objects.create)(mac="30AEA4ABCDE0", vendor="mystrom", host=first, port=http_port,
                                               adopted=True, auth_required=True)
    discovery = _discovery(http_port)
    await discovery.start()
    switch = MyStromSwitch("ch_v2", host=second, port=http_port, mac="30AEA4ABCDE0", token="geheim",
                           announce_to=("127.0.0.1", discovery.udp_port), announce_interval=0.1)
    try:
        await switch.start()
        await wait_for(lambda: discovery.udp.probes >= 1)
        await asyncio.sleep(0.3)
        device = await sync_to_async(Device.objects.get)(mac="30AEA4ABCDE0")
        assert device.host == first
        assert not await sync_to_async(DeviceEvent.objects.filter(kind="address_changed").exists)()
    finally:
        await switch.stop()
        await discovery.stop()


async def test_stop_closes_the_socket():
    discovery = _discovery(80)
    await discovery.start()
    port = discovery.udp_port
    await discovery.stop()
    # Without SO_REUSEPORT, binding fails while any socket still holds the port.
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("127.0.0.1", port))
    finally:
        sock.close()
