"""Anyone on the LAN can announce any number of MACs: the inbox stays bounded (a cap, the
least recently seen waiting device makes way, never an adopted, ignored or roomed one),
forgets what it has not seen for days, takes one new device per source address per window,
and its page is paginated. The flood test sends real UDP announcements to the real
listener from many loopback addresses, each with a hand-written "locked myStrom" behind it
(404 everywhere, so every announcement becomes an unconfirmed inbox candidate)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time

import pytest
from asgiref.sync import sync_to_async
from django.test import Client
from django.utils import timezone

from devices.discovery import Discovery, inbox
from devices.discovery.identify import Candidate
from devices.drivers.types import DeviceInfo
from devices.models import Channel, Device, Room
from devices.simulator.mystrom import MyStromSwitch

from disc_helpers import free_port, loopback_block


def mystrom_info(mac: str, **kw) -> DeviceInfo:
    values = dict(vendor="mystrom", mac=mac, generation=0, model="WS2", model_name="WiFi Switch CH v2",
                  firmware="4.0.14", type_code=106, raw={"mac": mac, "type": 106})
    values.update(kw)
    return DeviceInfo(**values)


def waiting_count() -> int:
    return Device.objects.filter(adopted=False, ignored=False).count()


@pytest.fixture(autouse=True)
def lan_settings(settings):
    settings.ALLOW_LOOPBACK_DEVICES = False
    settings.AUTO_ADOPT = False


# ------------------------------------------------------------------ the rules, one by one


@pytest.mark.django_db
def test_full_inbox_forgets_the_least_recently_seen_waiting_device(settings):
    settings.INBOX_LIMIT = 10
    now = timezone.now()
    room = Room.objects.create(name="Hall")
    # The household's devices, all seen long ago: none of them may ever make way.
    adopted = Device.objects.create(mac="AA0000000001", vendor="mystrom", host="192.168.1.201", adopted=True,
                                    last_seen=now - timezone.timedelta(days=300))
    ignored = Device.objects.create(mac="AA0000000002", vendor="mystrom", host="192.168.1.202", ignored=True,
                                    last_seen=now - timezone.timedelta(days=300))
    roomed = Device.objects.create(mac="AA0000000003", vendor="mystrom", host="192.168.1.203", room=room,
                                   last_seen=now - timezone.timedelta(days=1))
    followed_once = Device.objects.create(mac="AA0000000004", vendor="mystrom", host="192.168.1.204",
                                          last_seen=now - timezone.timedelta(days=1))
    Channel.objects.create(device=followed_once, key="relay", kind="switch")
    for i in range(8):
        inbox.record(mystrom_info(f"30AEA40000{i:02X}"), f"192.168.1.{10 + i}", 80, "udp", confirmed=False)
        Device.objects.filter(mac=f"30AEA40000{i:02X}").update(last_seen=now - timezone.timedelta(minutes=60 - i))
    assert waiting_count() == 10  # 8 discovered + the roomed one + the one followed once

    outcome = inbox.record(mystrom_info("30AEA40000FF"), "192.168.1.99", 80, "udp", confirmed=False)

    assert outcome.kind == inbox.CREATED
    assert waiting_count() == 10
    assert not Device.objects.filter(mac="30AEA4000000").exists()  # the least recently seen
    assert Device.objects.filter(mac="30AEA4000001").exists()
    for kept in (adopted, ignored, roomed, followed_once):
        assert Device.objects.filter(pk=kept.pk).exists()
    # Known devices are updated as before, whatever the inbox holds.
    moved = inbox.record(mystrom_info("30AEA4000007"), "192.168.1.77", 80, "udp")
    assert moved.kind == inbox.MOVED and waiting_count() == 10


@pytest.mark.django_db
def test_inbox_full_of_the_households_devices_refuses_newcomers(settings):
    settings.INBOX_LIMIT = 3
    room = Room.objects.create(name="Hall")
    for i in range(3):
        Device.objects.create(mac=f"AA00000000{i:02X}", vendor="mystrom", host=f"192.168.1.{i + 1}", room=room)
    with pytest.raises(inbox.InboxFull):
        inbox.record(mystrom_info("30AEA4000001"), "192.168.1.50", 80, "udp", confirmed=False)
    assert Device.objects.count() == 3


@pytest.mark.django_db
def test_waiting_devices_not_seen_for_days_expire():
    now = timezone.now()
    old = now - timezone.timedelta(days=inbox.INBOX_EXPIRY_DAYS + 1)
    recent = now - timezone.timedelta(days=inbox.INBOX_EXPIRY_DAYS - 1)
    stale = Device.objects.create(mac="30AEA4000001", vendor="mystrom", host="192.168.1.1", last_seen=old)
    never_seen = Device.objects.create(mac="30AEA4000002", vendor="mystrom", host="192.168.1.2", created=old)
    fresh = Device.objects.create(mac="30AEA4000003", vendor="mystrom", host="192.168.1.3", last_seen=recent)
    adopted = Device.objects.create(mac="30AEA4000004", vendor="mystrom", host="192.168.1.4", last_seen=old,
                                    adopted=True)
    ignored = Device.objects.create(mac="30AEA4000005", vendor="mystrom", host="192.168.1.5", last_seen=old,
                                    ignored=True)

    assert inbox.prune_inbox(now) == 2

    left = set(Device.objects.values_list("pk", flat=True))
    assert left == {fresh.pk, adopted.pk, ignored.pk}
    assert stale.pk not in left and never_seen.pk not in left


@pytest.mark.django_db
def test_unverified_announcement_is_not_auto_adopted(settings):
    settings.AUTO_ADOPT = True
    unverified = inbox.record(mystrom_info("30AEA4000001", auth_enabled=True), "192.168.1.31", 80, "udp",
                              confirmed=False)
    verified = inbox.record(mystrom_info("30AEA4000002"), "192.168.1.32", 80, "udp")
    assert not unverified.adopted and verified.adopted


@pytest.mark.django_db(transaction=True)
async def test_one_new_device_per_source_address_per_window():
    discovery = Discovery(udp=False, mdns=False)

    def lan(mac: str, host: str, found_by: str = "udp") -> Candidate:
        return Candidate(mystrom_info(mac, auth_enabled=True), host, 80, found_by, confirmed=False)

    first = await discovery.found(lan("30AEA4000001", "192.168.1.40"))
    assert first is not None and first.kind == inbox.CREATED
    # The same machine inventing more MACs: refused, counted, nothing stored.
    for i in range(2, 30):
        assert await discovery.found(lan(f"30AEA40000{i:02X}", "192.168.1.40")) is None
    assert discovery.limited == 28 and discovery.status()["new_devices_limited"] == 28
    # Another address brings its own device; a known device from the first address is
    # still followed; staff's scan is not limited.
    assert (await discovery.found(lan("30AEA4000099", "192.168.1.41"))).kind == inbox.CREATED
    assert (await discovery.found(lan("30AEA4000001", "192.168.1.40"))).kind == inbox.UNCHANGED
    scanned = await discovery.found(Candidate(mystrom_info("30AEA40000AA"), "192.168.1.40", 80, "scan"))
    assert scanned is not None and scanned.kind == inbox.CREATED
    assert await sync_to_async(waiting_count)() == 3


@pytest.mark.django_db
def test_inbox_page_is_paginated(django_user_model):
    now = timezone.now()
    Device.objects.bulk_create([
        Device(mac=f"30AEA4{i:06X}", vendor="mystrom", host=f"192.168.{i // 250}.{i % 250 + 1}",
               last_seen=now - timezone.timedelta(seconds=i), webhook_secret=f"s{i}")
        for i in range(60)
    ])
    staff = django_user_model.objects.create_user("anna", password="pw-anna-12345", is_staff=True)
    client = Client()
    client.force_login(staff)
    first = client.get("/inbox/")
    assert first.status_code == 200
    assert first.content.count(b'class="panel inbox-item"') == 25
    assert b"30AEA4000000" in first.content and b"30AEA4000019" not in first.content  # newest first
    assert b"Page 1 of 3 (60 waiting)" in first.content
    last = client.get("/inbox/?page=3")
    assert last.content.count(b'class="panel inbox-item"') == 10 and b"30AEA400003B" in last.content
    assert client.get("/inbox/?page=999").status_code == 200  # out of range: the last page
    member = django_user_model.objects.create_user("ben", password="pw-ben-123456")
    client.force_login(member)
    assert client.get("/inbox/").status_code == 403


# ------------------------------------------------------------------ the flood, for real


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class LockedMyStroms:
    """Hand-written attacker hosts: every request gets a 404, as a myStrom with a token
    set answers a request without it. One listening socket per loopback address."""

    def __init__(self) -> None:
        self.servers: list[asyncio.AbstractServer] = []
        self.requests = 0

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            self.requests += 1
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
        writer.close()

    async def start(self, hosts: list[str], port: int) -> list[str]:
        started = []
        for host in hosts:
            try:
                self.servers.append(await asyncio.start_server(self._answer, host, port))
            except OSError:
                continue  # that address:port is taken by someone else; use the others
            started.append(host)
        return started

    async def stop(self) -> None:
        for server in self.servers:
            server.close()
        for server in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)


@pytest.mark.django_db(transaction=True)
async def test_announcement_flood_keeps_inbox_bounded_and_its_page_small(settings, django_user_model):
    settings.ALLOW_LOOPBACK_DEVICES = True
    # A smaller cap than the default, so that the flood (which gets about a hundred source
    # addresses probed before the probe slots run full) shows the cap holding.
    limit = settings.INBOX_LIMIT = 50
    block = loopback_block()
    sources = [f"{block}.{i}" for i in range(1, 251)]
    http_port = free_port(sources[0])
    attackers = LockedMyStroms()
    sources = await attackers.start(sources, http_port)
    assert len(sources) > 2 * limit, "not enough loopback addresses for the flood"
    discovery = Discovery(udp=True, mdns=False, bind="127.0.0.1", port=0, device_port=http_port,
                          allow_loopback=True, probe_window=60)
    await discovery.start()
    senders = []
    rss_before = _rss_kib()
    try:
        for host in sources:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((host, 0))
            sock.setblocking(False)
            senders.append(sock)
        rng = random.Random(14)
        target = ("127.0.0.1", discovery.udp_port)
        started = time.monotonic()
        for n in range(1500):
            # Random locally administered unicast MACs, each from one of the addresses.
            mac = bytes([0x02 | (rng.randrange(256) & 0xFC)]) + rng.randbytes(5)
            rng.choice(senders).sendto(mac + bytes((106, 4)), target)
            if n % 25 == 24:
                await asyncio.sleep(0.1)  # ~1,500 packets in ~6 s, as fast as the probes go
        while discovery.udp._probing and time.monotonic() - started < 60:
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)

        stats = discovery.status()["udp"]
        assert stats["packets"] == 1500
        hosts = await sync_to_async(lambda: list(Device.objects.values_list("host", flat=True)))()
        # Bounded: the cap is reached and holds; one new device per source address.
        assert len(hosts) == limit
        assert len(set(hosts)) == len(hosts)
        assert discovery.limited > 0 and attackers.requests > len(hosts)
        assert _rss_kib() - rss_before < 64 * 1024, "the flood grew the process by more than 64 MiB"

        # A real device announcing after the flood still gets into the inbox.
        real_host = f"{block}.252"
        switch = MyStromSwitch("ch_v2", host=real_host, port=http_port, mac="30AEA4C0FFEE",
                               announce_to=target, announce_interval=0.2)
        await switch.start()
        try:
            deadline = time.monotonic() + 10
            while not await Device.objects.filter(mac="30AEA4C0FFEE").aexists():
                assert time.monotonic() < deadline, "the real switch never reached the inbox"
                await asyncio.sleep(0.1)
        finally:
            await switch.stop()
        assert await sync_to_async(waiting_count)() <= limit

        # The inbox page: one page of devices, small and quick, however full.
        staff = await django_user_model.objects.acreate(username="anna", is_staff=True)
        client = Client()
        await sync_to_async(client.force_login)(staff)
        began = time.monotonic()
        page = await sync_to_async(client.get)("/inbox/")
        took = time.monotonic() - began
        assert page.status_code == 200
        assert page.content.count(b'class="panel inbox-item"') <= 25
        assert len(page.content) < 200 * 1024, len(page.content)
        assert took < 1.5, took
    finally:
        for sock in senders:
            sock.close()
        await discovery.stop()
        await attackers.stop()
