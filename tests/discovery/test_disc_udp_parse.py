"""The 7979 announcement parser: the real Switch EU packet, the record rules, and
arbitrary bytes (never an exception, never a made-up MAC)."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from devices.discovery.mystrom_udp import (
    MAX_RECORDS,
    Announcement,
    info_from_announcement,
    parse_announcement,
)

MAC_RE = re.compile(r"^[0-9A-F]{12}$")


def test_real_switch_eu_packet():
    # Switch EU at 192.168.1.47, fw 3.83.1 (reference mystrom.md §1.2).
    [ann] = parse_announcement(bytes.fromhex("083af271e8006b04"))
    assert ann.mac == "083AF271E800"
    assert ann.type_code == 107 and ann.model == "WSE"
    assert (ann.mesh_child, ann.registered, ann.cloud_connected, ann.restarted) == (False, False, True, False)


def test_flags_decoded_bit_by_bit():
    mac = bytes.fromhex("30aea4000001")
    for flags, expected in [
        (0x01, (True, False, False, False)),
        (0x02, (False, True, False, False)),
        (0x04, (False, False, True, False)),
        (0x08, (False, False, False, True)),
        (0xFF, (True, True, True, True)),
    ]:
        [ann] = parse_announcement(mac + bytes((106, flags)))
        assert (ann.mesh_child, ann.registered, ann.cloud_connected, ann.restarted) == expected


def test_several_records_sender_first():
    data = bytes.fromhex("30aea4000001" "6a04") + bytes.fromhex("30aea4000002" "6601")
    first, second = parse_announcement(data)
    assert first.mac == "30AEA4000001" and first.type_code == 106
    assert second.mac == "30AEA4000002" and second.mesh_child


def test_wrong_lengths_are_dropped():
    good = bytes.fromhex("30aea40000016a04")
    assert parse_announcement(b"") == []
    assert parse_announcement(good[:7]) == []
    assert parse_announcement(good + b"\x00") == []
    assert parse_announcement(good * (MAX_RECORDS + 1)) == []
    assert len(parse_announcement(good * MAX_RECORDS)) == MAX_RECORDS


def test_placeholder_and_multicast_macs_are_not_devices():
    assert parse_announcement(bytes(6) + b"\x6a\x00") == []
    assert parse_announcement(b"\xff" * 6 + b"\x6a\x00") == []
    assert parse_announcement(bytes.fromhex("01005e0000fb") + b"\x6a\x00") == []  # multicast bit
    # A bad child record is skipped; the sender still counts.
    data = bytes.fromhex("30aea40000016a04") + bytes(8)
    assert [a.mac for a in parse_announcement(data)] == ["30AEA4000001"]


def test_not_bytes_is_empty():
    assert parse_announcement("083af271e8006b04") == []  # type: ignore[arg-type]
    assert parse_announcement(None) == []  # type: ignore[arg-type]


def test_info_from_announcement_for_token_protected_device():
    ann = Announcement(mac="30AEA4000001", type_code=106, flags=4)
    info = info_from_announcement(ann, auth_required=True)
    assert (info.vendor, info.mac, info.model, info.model_name, info.auth_enabled) == (
        "mystrom", "30AEA4000001", "WS2", "WiFi Switch CH v2", True)
    unknown = info_from_announcement(Announcement(mac="30AEA4000001", type_code=250, flags=0), auth_required=False)
    assert unknown.model == "250" and "250" in unknown.model_name


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data):
    records = parse_announcement(data)
    assert isinstance(records, list)
    if records:
        assert len(data) % 8 == 0 and len(data) <= 8 * MAX_RECORDS
        assert records[0].mac == data[:6].hex().upper()
    for ann in records:
        assert MAC_RE.match(ann.mac)
        assert 0 <= ann.type_code <= 255 and 0 <= ann.flags <= 255


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.binary(min_size=6, max_size=6), st.integers(0, 255), st.integers(0, 255)),
                min_size=1, max_size=MAX_RECORDS))
def test_well_formed_records_round_trip(records):
    data = b"".join(mac + bytes((t, f)) for mac, t, f in records)
    parsed = parse_announcement(data)
    usable = [(m, t, f) for m, t, f in records if m not in (bytes(6), b"\xff" * 6) and not m[0] & 1]
    first_usable = records[0][0] not in (bytes(6), b"\xff" * 6) and not records[0][0][0] & 1
    if not first_usable:
        assert parsed == []
        return
    assert [(a.mac, a.type_code, a.flags) for a in parsed] == [(m.hex().upper(), t, f) for m, t, f in usable]
