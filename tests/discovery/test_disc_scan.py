"""Subnet scan and manual add: what ranges and addresses are accepted, a scan over a
loopback /29 with simulated devices of both vendors, bounded concurrency over a /24."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from asgiref.sync import sync_to_async

from devices.discovery import Discovery
from devices.discovery.identify import AddressRefused, check_host, make_probe_client, resolve_and_check
from devices.discovery.scan import NotADevice, SubnetRefused, add_by_address, check_subnet, scan_subnet, scan_targets
from devices.models import Device
from devices.simulator.mystrom import MyStromSwitch
from devices.simulator.shelly_gen1 import ShellyGen1
from devices.simulator.shelly_rpc import ShellyRpc

from disc_helpers import FakeDevices, free_port, loopback_block, port_free_on


@pytest.mark.parametrize("cidr", ["192.168.1.0/24", "10.0.0.0/22", "172.16.5.7/24", "100.64.1.0/24", "fd00::/120"])
def test_private_ranges_up_to_a_22_are_scanned(cidr):
    network = check_subnet(cidr, allow_loopback=False)
    # The range as typed (host bits of "172.16.5.7/24" dropped), every host address in it.
    assert network == ipaddress.ip_network(cidr, strict=False)
    targets = scan_targets(network)
    hosts = network.num_addresses - (2 if network.version == 4 else 1)
    assert len(targets) == hosts and len(set(targets)) == hosts
    assert all(ipaddress.ip_address(t) in network for t in targets)
    if network.version == 4:   # not the network's own address nor its broadcast
        assert str(network.network_address) not in targets and str(network.broadcast_address) not in targets


@pytest.mark.parametrize("cidr, why", [
    ("10.0.0.0/21", "too large"),
    ("192.168.0.0/16", "too large"),
    ("8.8.8.0/24", "not a private"),
    ("192.168.1.0/33", "not an address range"),
    ("192.168.1.0/24; rm -rf", "not an address range"),
    ("", "give a range"),
    ("127.0.0.0/24", "loopback"),
    ("169.254.0.0/24", "not a private"),
    ("224.0.0.0/24", "not a private"),
    ("fe80::/120", "not a private"),
])
def test_other_ranges_are_refused(cidr, why):
    with pytest.raises(SubnetRefused, match=why):
        check_subnet(cidr, allow_loopback=False)


def test_loopback_range_needs_permission():
    assert str(check_subnet("127.0.0.8/29", allow_loopback=True)) == "127.0.0.8/29"


@pytest.mark.parametrize("host", ["192.168.1.20", "10.1.2.3", "shelly1-34945472a643.local", "myStrom-Switch-123ABC",
                                  "fd00::5", "[fd00::5]", "nas.fritz.box"])
def test_manual_addresses_accepted(host):
    check_host(host, allow_loopback=False)


@pytest.mark.parametrize("host", ["http://192.168.1.20", "192.168.1.20/api", "admin:pw@192.168.1.20",
                                  "192.168.1.20:8080", "127.0.0.1", "localhost", "169.254.1.1", "fe80::1",
                                  "0.0.0.0", "255.255.255.255", "224.0.0.251", "bad_name!", "a" * 300, "",
                                  "1.2.3", "192.168.1.20?x", "-lead.local"])
def test_manual_addresses_refused(host):
    with pytest.raises(AddressRefused):
        check_host(host, allow_loopback=False)


def test_loopback_allowed_when_configured():
    assert check_host("127.0.0.5", allow_loopback=True) == "127.0.0.5"
    assert check_host("localhost", allow_loopback=True) == "localhost"


async def test_host_names_must_not_point_at_refused_addresses(monkeypatch):
    loop = asyncio.get_running_loop()

    async def fake_getaddrinfo(host, port, **kw):
        return [(2, 1, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(loop, "getaddrinfo", fake_getaddrinfo)
    with pytest.raises(AddressRefused, match="loopback"):
        await resolve_and_check("sneaky.example", 80, allow_loopback=False)
    await resolve_and_check("sneaky.example", 80, allow_loopback=True)


async def test_scan_concurrency_is_bounded():
    fake = FakeDevices(delay=0.01)
    fake.mystrom("192.168.7.23", "30AEA4000023")
    fake.shelly("192.168.7.40", {"type": "SHSW-1", "mac": "34945472A643", "auth": True, "fw": "x/v1.14.0"})
    async with fake.client() as client:
        report = await scan_subnet(client, "192.168.7.0/24", concurrency=8)
    assert report.probed == 254 and fake.peak <= 8 and report.peak_in_flight <= 8
    assert len({h for h, _ in fake.requests}) == 254
    assert [(c.host, c.mac, c.info.vendor, c.found_by) for c in report.found] == [
        ("192.168.7.23", "30AEA4000023", "mystrom", "scan"),
        ("192.168.7.40", "34945472A643", "shelly", "scan"),
    ]
    assert report.found[1].info.auth_enabled


@pytest.fixture
async def loopback_household():
    """A myStrom switch, a Shelly Gen1 and a Gen2 device in one random loopback /29, all on
    one port (as real devices all use 80)."""
    block = loopback_block()
    hosts = [f"{block}.9", f"{block}.10", f"{block}.13"]
    port = free_port(hosts[0])
    if not all(port_free_on(h, port) for h in hosts):
        pytest.skip("port busy on the loopback block")
    devices = [
        MyStromSwitch("ch_v2", host=hosts[0], port=port, mac="30AEA4111111"),
        ShellyGen1("SHSW-PM", host=hosts[1], port=port, mac="E868E7222222"),
        ShellyRpc("SNSW-001P16EU", host=hosts[2], port=port, mac="441793333333", password="sommer-77"),
    ]
    for device in devices:
        await device.start()
    try:
        yield f"{block}.8/29", port, devices
    finally:
        for device in devices:
            await device.stop()


async def test_scan_finds_simulated_devices(loopback_household):
    cidr, port, devices = loopback_household
    async with make_probe_client() as client:
        report = await scan_subnet(client, cidr, port=port, concurrency=4, allow_loopback=True)
    assert report.probed == 6 and report.peak_in_flight <= 4
    found = {c.mac: c for c in report.found}
    assert set(found) == {"30AEA4111111", "E868E7222222", "441793333333"}
    assert (found["30AEA4111111"].info.vendor, found["30AEA4111111"].info.model) == ("mystrom", "WS2")
    assert (found["E868E7222222"].info.generation, found["E868E7222222"].info.model) == (1, "SHSW-PM")
    assert found["441793333333"].info.generation == 2 and found["441793333333"].info.auth_enabled


async def test_scan_refuses_loopback_without_permission():
    async with FakeDevices().client() as client:
        with pytest.raises(SubnetRefused):
            await scan_subnet(client, "127.0.0.8/29", allow_loopback=False)


@pytest.mark.django_db(transaction=True)
async def test_discovery_scan_and_manual_add_fill_the_inbox(settings, loopback_household):
    settings.ALLOW_LOOPBACK_DEVICES = True
    cidr, port, devices = loopback_household
    seen = []
    discovery = Discovery(udp=False, mdns=False, allow_loopback=True)
    discovery.subscribe(seen.append, kinds={"created"})
    try:
        report, outcomes = await discovery.scan(cidr, port=port)
        assert sorted(o.kind for o in outcomes) == ["created"] * 3
        rows = await sync_to_async(lambda: {d.mac: (d.found_by, d.adopted, d.auth_required, d.generation)
                                            for d in Device.objects.all()})()
        assert rows == {"30AEA4111111": ("scan", False, False, None), "E868E7222222": ("scan", False, False, 1),
                        "441793333333": ("scan", False, True, 2)}
        assert len(seen) == 3

        # Adding a known device by address changes nothing but the last-seen time.
        outcome = await discovery.add(devices[1].host, port)
        assert outcome.kind == "unchanged" and outcome.mac == "E868E7222222"
    finally:
        await discovery.stop()


async def test_manual_add_identifies_or_explains(loopback_household):
    _, port, devices = loopback_household
    switch, gen1, rpc = devices
    async with make_probe_client() as client:
        candidate = await add_by_address(client, rpc.host, port, allow_loopback=True)
        assert (candidate.mac, candidate.found_by, candidate.confirmed) == ("441793333333", "manual", True)
        with pytest.raises(AddressRefused):
            await add_by_address(client, rpc.host, port, allow_loopback=False)
        with pytest.raises(AddressRefused):
            await add_by_address(client, f"http://{rpc.host}", port, allow_loopback=True)
        with pytest.raises(AddressRefused):
            await add_by_address(client, rpc.host, 0, allow_loopback=True)
        with pytest.raises(NotADevice, match="nothing usable"):
            await add_by_address(client, rpc.host.rsplit(".", 1)[0] + ".14", port, allow_loopback=True)

        switch.set_secret("geheim")
        with pytest.raises(NotADevice, match="token"):
            await add_by_address(client, switch.host, port, allow_loopback=True)
        with pytest.raises(NotADevice, match="refused the token"):
            await add_by_address(client, switch.host, port, token="falsch", allow_loopback=True)
        candidate = await add_by_address(client, switch.host, port, token="geheim", allow_loopback=True)
        assert candidate.mac == "30AEA4111111" and candidate.info.auth_enabled



@hyp_settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.integers(), st.none()))
def test_any_typed_address_is_accepted_or_refused_politely(value):
    try:
        host = check_host(value, allow_loopback=False)
    except AddressRefused:
        return
    assert host and "/" not in host and "@" not in host and len(host) <= 253 and host == host.strip()


@hyp_settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_any_typed_range_is_accepted_or_refused_politely(value):
    try:
        network = check_subnet(value, allow_loopback=False)
    except SubnetRefused:
        return
    assert network.num_addresses <= 1024
