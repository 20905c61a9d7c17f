"""mDNS records -> sightings -> one probed, confirmed candidate per device: with constructed
zeroconf ServiceInfo objects, hostile TXT, and the real decoded packets in
../shared/payloads/shelly/mdns__*.json."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from zeroconf import ServiceInfo

from devices.discovery.identify import Candidate
from devices.discovery.mdns import (
    MAX_TXT_KEYS,
    MAX_TXT_VALUE,
    ShellyBrowser,
    decode_txt,
    info_from_sighting,
    sighting_from_records,
    sighting_from_service_info,
)

from disc_helpers import FakeDevices

CAPTURES = {
    # file: (mac, generation, address, app)
    "mdns__gen1_SHSW-1.json": ("34945472A643", 1, "192.168.1.240", "switch1"),
    "mdns__gen2_Plus1PM.json": ("441793D69718", 2, "192.168.68.78", "Plus1PM"),
    "mdns__gen2_PlusHT.json": ("08B61FCD36A8", 2, "10.101.1.135", "PlusHT"),
    "mdns__gen2_Pro4PM.json": ("34987A67D7D0", 2, "192.168.68.88", "Pro4PM"),
    "mdns__gen3_1G3.json": ("34B7DACAC830", 3, "192.168.70.7", "S1G3"),
    "mdns__gen4_1G4.json": ("A085E3BCA4C8", 4, "192.168.70.1", "S1G4"),
}


def sightings_of(capture: dict) -> list:
    """Rebuild each announced instance from a decoded packet (PTR -> SRV/TXT -> A)."""
    records = capture["answers"] + capture["additionals"]
    out = []
    for ptr in records:
        if ptr["type"] != "PTR" or not ptr["name"].endswith(("_http._tcp.local", "_shelly._tcp.local")):
            continue
        instance = ptr["data"]
        srv = next(r["data"] for r in records if r["type"] == "SRV" and r["name"] == instance)
        txt = next((r["data"] for r in records if r["type"] == "TXT" and r["name"] == instance), [])
        addresses = [r["data"] for r in records if r["type"] == "A" and r["name"] == srv["target"]]
        sighting = sighting_from_records(ptr["name"] + ".", instance + ".", txt=txt, addresses=addresses,
                                         port=srv["port"], server=srv["target"] + ".")
        out.append(sighting)
    return out


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_real_captures(payload, name):
    mac, gen, address, app = CAPTURES[name]
    sightings = sightings_of(payload("shelly", name))
    assert sightings, name
    for s in sightings:
        assert s.shelly_evidence and s.port == 80
        assert s.addresses == (address,)
        assert s.generation == gen
        assert s.mac in (mac, None)  # the user-named instance has no MAC in it
    # At least one instance names the device, and every instance resolves to one address.
    assert {s.mac for s in sightings} - {None} == {mac}
    assert any(s.app == app for s in sightings)


def test_gen2_user_named_instance_has_no_identity(payload):
    sightings = {s.instance: s for s in sightings_of(payload("shelly", "mdns__gen2_Plus1PM.json"))}
    named = sightings["1PM Plus"]
    assert named.mac is None and named.device_id is None
    assert (named.app, named.firmware, named.generation) == ("Plus1PM", "1.7.5", 2)
    by_id = sightings["shellyplus1pm-441793d69718"]
    assert by_id.device_id == "shellyplus1pm-441793d69718" and by_id.txt == {"gen": "2"}


def test_gen1_from_constructed_service_info():
    info = ServiceInfo(
        "_http._tcp.local.", "shelly1-34945472A643._http._tcp.local.", port=80,
        properties={b"id": b"shelly1-34945472A643", b"arch": b"esp8266", b"app": b"switch1",
                    b"fw_version": b"1.0", b"fw_id": b"20230913-112003/v1.14.0-gcb84623", b"discoverable": b"false"},
        server="shelly1-34945472A643.local.", parsed_addresses=["192.168.1.240"],
    )
    s = sighting_from_service_info(info)
    assert (s.mac, s.generation, s.device_id, s.app) == ("34945472A643", 1, "shelly1-34945472a643", "switch1")
    assert s.firmware == "20230913-112003/v1.14.0-gcb84623"
    assert s.host(allow_loopback=False) == "192.168.1.240"


def test_gen1_short_id_is_not_a_mac():
    info = ServiceInfo("_http._tcp.local.", "shellyht-EE45E9._http._tcp.local.", port=80,
                       properties={b"id": b"shellyht-EE45E9", b"arch": b"esp8266"},
                       server="shellyht-EE45E9.local.", parsed_addresses=["192.168.1.9"])
    s = sighting_from_service_info(info)
    assert s.mac is None and s.device_id == "shellyht-ee45e9" and s.generation == 1 and s.shelly_evidence


def test_gen3_from_constructed_service_info_prefers_ipv4():
    info = ServiceInfo("_shelly._tcp.local.", "shelly1pmg3-34b7dacac830._shelly._tcp.local.", port=80,
                       properties={b"gen": b"3", b"app": b"S1PMG3", b"ver": b"1.7.5"},
                       server="Shelly1PMG3-34B7DACAC830.local.",
                       parsed_addresses=["fd00::1234", "192.168.70.7"])
    s = sighting_from_service_info(info)
    assert (s.mac, s.generation) == ("34B7DACAC830", 3)
    assert s.host(allow_loopback=False) == "192.168.70.7"


def test_non_shelly_and_hostile_records():
    printer = ServiceInfo("_http._tcp.local.", "Brother HL-L2350DW._http._tcp.local.", port=80,
                          properties={b"path": b"/", b"note": b"office"}, server="printer.local.",
                          parsed_addresses=["192.168.1.50"])
    assert not sighting_from_service_info(printer).shelly_evidence

    hostile = {f"k{i}".encode(): b"\x00\x1b[31m" + b"v" * 5000 for i in range(500)}
    txt = decode_txt(hostile)
    assert len(txt) == MAX_TXT_KEYS
    assert all(len(v) <= MAX_TXT_VALUE and "\x00" not in v and "\x1b" not in v for v in txt.values())
    assert decode_txt([b"gen=2", "app=Plus1PM", b"\xff\xfe=\xff", "novalue"])["novalue"] == ""
    assert sighting_from_records("_shelly._tcp.local.", "x._shelly._tcp.local.", txt={}, addresses=[],
                                 port=0, server=None) is None
    s = sighting_from_records("_shelly._tcp.local.", "x._shelly._tcp.local.", txt={b"gen": b"99999"},
                              addresses=["not-an-ip", "224.0.0.251", "127.0.0.1", "192.168.1.3"],
                              port=80, server="x.local.")
    assert s.generation is None
    assert s.host(allow_loopback=False) == "192.168.1.3"
    assert s.host(allow_loopback=True) == "127.0.0.1"


def test_fallback_info_for_a_sleeper():
    s = sighting_from_records("_shelly._tcp.local.", "shellyplusht-08b61fcd36a8._shelly._tcp.local.",
                              txt=["app=PlusHT", "ver=0.14.1", "gen=2"], addresses=["10.101.1.135"],
                              port=80, server="ShellyPlusHT-08B61FCD36A8.local.")
    info = info_from_sighting(s)
    assert (info.vendor, info.mac, info.generation, info.model, info.firmware) == (
        "shelly", "08B61FCD36A8", 2, "PlusHT", "0.14.1")


def shelly_reply(mac: str, gen: int, app: str) -> dict:
    if gen == 1:
        return {"type": "SHSW-1", "mac": mac, "auth": False, "fw": "20230913-112003/v1.14.0-gcb84623"}
    return {"id": f"shelly{app.lower()}-{mac.lower()}", "mac": mac, "model": "SNSW-001X16EU", "gen": gen,
            "app": app, "ver": "1.7.5", "auth_en": gen == 4, "fw_id": "20250101-000000/1.7.5-gabc"}


async def test_browser_reports_each_device_once(payload):
    fake = FakeDevices()
    sightings = []
    for name, (mac, gen, address, app) in CAPTURES.items():
        fake.shelly(address, shelly_reply(mac, gen, app))
        sightings += sightings_of(payload("shelly", name))
    found: list[Candidate] = []

    async def on_found(c: Candidate) -> None:
        found.append(c)

    async with fake.client() as client:
        browser = ShellyBrowser(client, on_found)
        for s in sightings + sightings:  # every instance, twice (re-announcements)
            await browser.handle_sighting(s)
    assert sorted(c.mac for c in found) == sorted(m for m, *_ in CAPTURES.values())
    assert {c.mac: c.info.generation for c in found} == {m: g for m, g, *_ in CAPTURES.values()}
    assert all(c.confirmed and c.found_by == "mdns" and c.port == 80 for c in found)
    assert fake.count() == len(CAPTURES)  # one /shelly per device, not per instance
    gen4 = next(c for c in found if c.info.generation == 4)
    assert gen4.info.auth_enabled


async def test_browser_trusts_the_device_not_the_name():
    fake = FakeDevices()
    fake.shelly("192.168.1.77", shelly_reply("441793000001", 2, "Plus1PM"))
    found: list[Candidate] = []

    async def on_found(c: Candidate) -> None:
        found.append(c)

    lying = sighting_from_records("_shelly._tcp.local.", "shellyplus1pm-441793ffffff._shelly._tcp.local.",
                                  txt=["gen=2"], addresses=["192.168.1.77"], port=80, server=None)
    not_shelly = sighting_from_records("_http._tcp.local.", "shellyfan._http._tcp.local.",
                                       txt=[], addresses=["192.168.1.78"], port=80, server=None)
    fake.routes[("192.168.1.78", "/other")] = {}
    async with fake.client() as client:
        browser = ShellyBrowser(client, on_found)
        await browser.handle_sighting(lying)
        await browser.handle_sighting(not_shelly)  # answers 404 on /shelly
    assert [c.mac for c in found] == ["441793000001"]


async def test_sleeper_gone_before_probe_falls_back_to_txt():
    fake = FakeDevices()  # nothing answers
    found: list[Candidate] = []

    async def on_found(c: Candidate) -> None:
        found.append(c)

    s = sighting_from_records("_shelly._tcp.local.", "shellyplusht-08b61fcd36a8._shelly._tcp.local.",
                              txt=["app=PlusHT", "ver=0.14.1", "gen=2"], addresses=["10.101.1.135"],
                              port=80, server=None)
    async with fake.client() as client:
        await ShellyBrowser(client, on_found).handle_sighting(s)
    [c] = found
    assert (c.mac, c.confirmed, c.info.model) == ("08B61FCD36A8", False, "PlusHT")


async def test_a_device_that_moved_is_reported_at_its_new_address():
    fake = FakeDevices()
    reply = shelly_reply("441793D69718", 2, "Plus1PM")
    fake.shelly("192.168.68.78", reply)
    fake.shelly("192.168.68.99", reply)
    found: list[Candidate] = []

    async def on_found(c: Candidate) -> None:
        found.append(c)

    def seen_at(address):
        return sighting_from_records("_shelly._tcp.local.", "shellyplus1pm-441793d69718._shelly._tcp.local.",
                                     txt=["gen=2"], addresses=[address], port=80, server=None)

    async with fake.client() as client:
        browser = ShellyBrowser(client, on_found)
        await browser.handle_sighting(seen_at("192.168.68.78"))
        await browser.handle_sighting(seen_at("192.168.68.99"))  # DHCP moved it a moment later
        await browser.handle_sighting(seen_at("192.168.68.99"))
    assert [c.host for c in found] == ["192.168.68.78", "192.168.68.99"]


def test_two_addresses_choose_the_same_one_every_time():
    a = sighting_from_records("_shelly._tcp.local.", "x._shelly._tcp.local.", txt=["gen=2"],
                              addresses=["192.168.1.30", "192.168.1.4", "fe80::1%eth0"], port=80, server=None)
    b = sighting_from_records("_shelly._tcp.local.", "x._shelly._tcp.local.", txt=["gen=2"],
                              addresses=["192.168.1.4", "192.168.1.30"], port=80, server=None)
    assert a.host(allow_loopback=True) == b.host(allow_loopback=True) == "192.168.1.4"
    only_link_local = sighting_from_records("_shelly._tcp.local.", "x._shelly._tcp.local.", txt=["gen=2"],
                                            addresses=["fe80::1%eth0"], port=80, server=None)
    assert only_link_local.host(allow_loopback=True) is None


async def test_missing_address_record_is_resolved_separately(monkeypatch):
    """Some responders leave out the A record (micropython-mdns#34): the host name in the
    SRV record is then resolved on its own (zeroconf patched at the adapter boundary)."""
    from devices.discovery import mdns

    class NoAddressInfo:
        def __init__(self, type_, name):
            self.type, self.name = type_, name
            self.port, self.server = 80, "ShellyPlus1PM-441793D69718.local."
            self.properties = {b"gen": b"2", b"app": b"Plus1PM"}

        async def async_request(self, zc, timeout):
            return False  # incomplete: no address

        def parsed_scoped_addresses(self):
            return []

    class Resolver:
        def __init__(self, server):
            self.server = server

        async def async_request(self, zc, timeout):
            return True

        def parsed_scoped_addresses(self):
            return ["192.168.68.78"]

    monkeypatch.setattr(mdns, "AsyncServiceInfo", NoAddressInfo)
    monkeypatch.setattr(mdns, "_address_resolver", Resolver)
    browser = ShellyBrowser(None, None, zeroconf=type("ZC", (), {"zeroconf": object()})())
    s = await browser._resolve("_shelly._tcp.local.", "shellyplus1pm-441793d69718._shelly._tcp.local.")
    assert s.addresses == ("192.168.68.78",) and s.mac == "441793D69718" and s.app == "Plus1PM"



@hyp_settings(max_examples=300, deadline=None)
@given(
    txt=st.dictionaries(st.binary(max_size=40), st.one_of(st.none(), st.binary(max_size=300)), max_size=60),
    name=st.text(max_size=300),
    server=st.one_of(st.none(), st.text(max_size=300)),
    addresses=st.lists(st.text(max_size=50), max_size=20),
    port=st.one_of(st.integers(-5, 70000), st.none(), st.booleans()),
)
def test_any_record_content_gives_a_bounded_sighting_or_none(txt, name, server, addresses, port):
    s = sighting_from_records("_http._tcp.local.", name, txt=txt, addresses=addresses, port=port, server=server)
    if s is None:
        return
    assert 1 <= s.port <= 65535 and len(s.addresses) <= 8
    assert len(s.txt) <= MAX_TXT_KEYS and all(len(v) <= MAX_TXT_VALUE for v in s.txt.values())
    assert s.mac is None or (len(s.mac) == 12 and s.mac == s.mac.upper())
    s.host(allow_loopback=False)
    info_from_sighting(s)
