"""mDNS records -> sightings -> one probed, confirmed candidate per device: with constructed
zeroconf ServiceInfo objects, hostile TXT, and the real decoded packets in
../shared/payloads/shelly/mdns__*.json."""

from __future__ import annotations

import pytest
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
