"""The Discovery service as the runtime sees it: registration, start/stop that really
closes its sockets, subscribers that cannot break discovery, retrying a part that could
not start."""

from __future__ import annotations

import asyncio
import socket

import pytest

from devices.discovery import Discovery, current, services
from devices.discovery import service as service_module
from devices.discovery.identify import Candidate
from devices.drivers.types import DeviceInfo
from devices.models import Device
from devices.runtime import Runtime

from disc_helpers import free_port

LOOPBACK_SETTINGS = {"DISCOVERY": True, "DISCOVERY_BIND": "127.0.0.1", "DISCOVERY_PORT": 0,
                     "MDNS_INTERFACES": [], "ALLOW_LOOPBACK_DEVICES": True}


def test_nothing_to_register_when_discovery_is_off():
    assert services({**LOOPBACK_SETTINGS, "DISCOVERY": False}) == []


def test_from_django_settings(settings):
    settings.DISCOVERY_BIND = "127.0.0.1"
    settings.DISCOVERY_PORT = 17979
    settings.MDNS_INTERFACES = ["127.0.0.1", "eth0"]  # names are not addresses: dropped
    settings.ALLOW_LOOPBACK_DEVICES = True
    discovery = Discovery.from_settings()
    assert (discovery.udp.bind, discovery.udp.requested_port, discovery.udp.allow_loopback) == ("127.0.0.1", 17979, True)
    assert discovery.mdns.interfaces == ["127.0.0.1"]


async def test_runtime_runs_and_stops_the_service():
    runtime = Runtime()
    [(name, fn)] = services(LOOPBACK_SETTINGS, mdns=False)
    assert name == "discovery"
    runtime.add_service(name, fn)
    await runtime.start()
    try:
        for _ in range(100):
            if current() is not None and current().udp.running:
                break
            await asyncio.sleep(0.01)
        running = current()
        assert running is not None and running.mdns is None
        port = running.udp_port
        assert running.status()["udp"]["running"]
    finally:
        await runtime.stop()
    assert current() is None and not running.udp.running and running.client.is_closed
    plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # no SO_REUSEPORT: fails if still held
    try:
        plain.bind(("127.0.0.1", port))
    finally:
        plain.close()


async def test_start_fails_loudly_when_nothing_can_listen():
    port = free_port()
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a tool without SO_REUSEPORT
    blocker.bind(("127.0.0.1", port))
    try:
        discovery = Discovery(udp=True, mdns=False, bind="127.0.0.1", port=port)
        with pytest.raises(OSError, match="discovery could not start"):
            await discovery.start()
        assert "udp" in discovery.errors and discovery.client.is_closed
    finally:
        blocker.close()


class FakeBrowser:
    running = False

    async def start(self) -> None:
        self.running = True

    async def stop(self) -> None:
        self.running = False


async def test_a_part_that_failed_is_retried(monkeypatch):
    monkeypatch.setattr(service_module, "RETRY_FAILED_PARTS", 0.05)
    port = free_port()
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", port))
    discovery = Discovery(udp=True, mdns=False, bind="127.0.0.1", port=port)
    discovery.mdns = FakeBrowser()  # the part that did start
    stopping = asyncio.Event()
    task = asyncio.create_task(discovery.serve(stopping))
    try:
        for _ in range(100):
            if discovery.errors:
                break
            await asyncio.sleep(0.01)
        assert "udp" in discovery.errors and not discovery.udp.running
        blocker.close()  # the other tool went away
        for _ in range(100):
            if discovery.udp.running:
                break
            await asyncio.sleep(0.02)
        assert discovery.udp.running and not discovery.errors
    finally:
        blocker.close()
        stopping.set()
        await asyncio.wait_for(task, 5)
    assert not discovery.udp.running and not discovery.mdns.running


@pytest.mark.django_db(transaction=True)
async def test_subscribers_hear_outcomes_and_cannot_break_discovery(settings):
    settings.ALLOW_LOOPBACK_DEVICES = False
    heard: list[str] = []
    discovery = Discovery(udp=False, mdns=False)

    def broken(outcome):
        raise RuntimeError("subscriber bug")

    async def runtime_hook(outcome):
        heard.append(f"{outcome.kind}:{outcome.mac}")

    discovery.subscribe(broken)
    discovery.subscribe(runtime_hook)
    unsubscribe = discovery.subscribe(lambda o: heard.append("moved-only"), kinds={"moved"})
    info = DeviceInfo(vendor="shelly", mac="441793D69718", generation=2, model="SNSW-001P16EU",
                      model_name="Shelly Plus 1PM", firmware="1.7.5")
    try:
        first = await discovery.found(Candidate(info, "192.168.1.20", 80, "mdns"))
        second = await discovery.found(Candidate(info, "192.168.1.21", 80, "mdns"))
        unsubscribe()
        await discovery.found(Candidate(info, "192.168.1.22", 80, "mdns"))
        refused = await discovery.found(Candidate(info, "127.0.0.1", 80, "mdns"))
    finally:
        await discovery.stop()
    assert (first.kind, second.kind, refused) == ("created", "moved", None)
    assert heard == ["created:441793D69718", "moved:441793D69718", "moved-only", "moved:441793D69718"]
    assert await Device.objects.filter(host="192.168.1.22").aexists()
