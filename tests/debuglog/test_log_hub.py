"""The hub's own rules, without devices: every line escaped and numbered, batches within
budget with the gap visible, downloads in arrival order, UDP lines only from the device
that sent them, and restoring exactly what was changed."""

from __future__ import annotations

from datetime import timezone

from devices.debuglogs import BATCH_LINES, DeviceFacts, LogHub, debug_patch, device_time
from devices.drivers.debuglog import TRUNCATION_MARK, parse_debug_log_message
from devices.drivers.types import LogLine
from devices.logviews import firmware_version, parse_device_list


def hub(**kw) -> LogHub:
    return LogHub(ring_size=kw.pop("ring_size", 500), **kw)


def line(text: str, *, level: int | None = 2, ts: float | None = 1_760_000_000.25, at: float = 1_760_000_000.5) -> LogLine:
    return LogLine(device="x", ts=ts, level=level, fd=1, text=text, received_at=at)


def test_lines_are_escaped_numbered_and_capped() -> None:
    h = hub()
    h._log(3, 'Kitchen <b>"plug"</b>')
    h.ingest(3, line("<script>alert('x')</script> & more", level=0, ts=84452.34))
    long = parse_debug_log_message('{"ts":1.0,"level":2,"data":"' + "y" * 5000 + '","fd":1}', line_cap=300)
    h.ingest(3, long)
    first, second = h.logs[3].ring
    assert (first.seq, second.seq) == (1, 2)
    assert "<script>" not in first.html and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in first.html
    assert "Kitchen &lt;b&gt;&quot;plug&quot;&lt;/b&gt;" in first.html and "<b>" not in first.html
    assert "lv-0" in first.html and ">error<" in first.html
    assert "up 84452.340" in first.html      # a device "time" below 2001 is its uptime
    assert second.line.truncated and second.line.text.endswith(TRUNCATION_MARK) and len(second.line.text) == 300
    # Unknown levels and odd values are still lines, never exceptions.
    h.ingest(3, LogLine(device="x", ts=None, level=99, fd=None, text="", received_at=0.0))
    assert "lv-x" in h.logs[3].ring[-1].html


def test_batches_keep_the_newest_within_budget_and_the_numbers_show_the_rest() -> None:
    h = hub(ring_size=2000)
    h._log(1, "one")
    for i in range(1000):
        h.ingest(1, line(f"n{i}"))
    message = h.batch(h.logs[1])
    assert len(message["lines"]) == BATCH_LINES and message["first"] == 1000 - BATCH_LINES + 1
    assert "n999" in message["lines"][-1]
    assert h.batch(h.logs[1]) is None          # nothing new since
    h.ingest(1, line("n1000"))
    assert h.batch(h.logs[1])["first"] == 1001
    # The ring is bounded: old lines go, numbering goes on.
    small = hub(ring_size=50)
    small._log(2, "two")
    for i in range(120):
        small.ingest(2, line(f"m{i}"))
    assert len(small.logs[2].ring) == 50 and small.logs[2].ring[0].seq == 71


def test_download_is_in_arrival_order_with_level_filter() -> None:
    h = hub(time_zone=timezone.utc)
    h._log(1, "Plug")
    h._log(2, "Pump")
    h.ingest(1, line("first", at=100.0))
    h.ingest(2, line("second", level=3, at=101.0))
    h.ingest(1, line("third", level=0, at=102.0))
    h.note(h.logs[2], "reconnected after 2 s")
    text = h.dump([1, 2])
    rows = text.splitlines()
    assert [r.split()[-1] for r in rows[:3]] == ["first", "second", "third"]
    assert "[Pump] debug" in rows[1] and "[Plug] error" in rows[2]
    assert rows[3].endswith("homedash: reconnected after 2 s")
    assert "second" not in h.dump([1, 2], max_level=2) and "third" in h.dump([1, 2], max_level=0)
    assert h.dump([7]) == ""


def test_udp_lines_reach_only_the_running_device_they_name_from_its_address() -> None:
    h = hub()
    for pk, mac in ((1, "441793AABB01"), (2, "441793AABB02")):
        entry = h._log(pk, f"dev{pk}")
        entry.source = "udp"
        entry.facts = DeviceFacts(pk, f"dev{pk}", mac, "shelly", 2, "127.0.0.1", 80, "")
        entry.udp_sources = {"127.0.0.1"}
    datagram = (b"shellyplus1pm-441793aabb01 7 84452.340 1 2|shelly_notification:211 Event from sys\x00"
                b"shellyplus1pm-441793aabb02 8 12.500 0|mgos_http.c:1 four header fields\x00"
                b"shellyplus1pm-99999999ffff 9 1.0 1 2|a device we do not follow\x00")
    h.udp_datagram(datagram, "127.0.0.1")
    assert [e.line.text for e in h.logs[1].ring] == ["shelly_notification:211 Event from sys"]
    assert h.logs[1].ring[0].line.ts == 84452.34 and h.logs[1].ring[0].line.fd == 1
    assert [(e.line.text, e.line.level) for e in h.logs[2].ring] == [("mgos_http.c:1 four header fields", 0)]
    assert h.udp_ignored == 1
    h.udp_datagram(datagram, "10.9.9.9")       # same lines from another address: not theirs
    assert len(h.logs[1].ring) == 1 and h.udp_ignored == 4
    h.logs[2].source = None                    # a stopped log takes nothing
    h.udp_datagram(datagram, "127.0.0.1")
    assert len(h.logs[2].ring) == 1


def test_restoring_touches_only_what_was_changed() -> None:
    previous = {"level": 2, "mqtt": {"enable": False}, "websocket": {"enable": False}, "udp": {"addr": "10.0.0.5:514"}}
    assert debug_patch(previous, {"websocket"}) == {"debug": {"websocket": {"enable": False}}}
    assert debug_patch(previous, {"udp"}) == {"debug": {"udp": {"addr": "10.0.0.5:514"}}}
    assert debug_patch({}, {"websocket", "udp"}) == {"debug": {"websocket": {"enable": False}, "udp": {"addr": None}}}


def test_small_parsers() -> None:
    assert device_time(None, timezone.utc) == ("", "")
    assert device_time(1_760_000_000.123, timezone.utc)[0].endswith(".123")
    assert parse_device_list(["1,2", "2", " 7 "]) == [1, 2, 7]
    assert parse_device_list(["1;drop"]) is None and parse_device_list([",".join(map(str, range(40)))]) is None
    assert firmware_version("20231107-164738/1.0.8-g7d56a4e") == (1, 0, 8)
    assert firmware_version("0.14.1") == (0, 14, 1) and firmware_version("") is None
