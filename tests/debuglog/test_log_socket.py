"""The log socket's bookkeeping with lines put straight into the hub (no device needed):
a new view gets the whole ring first (in pieces), a paused view gets on resume what the
ring still holds and is told how much it no longer does, and the frames stay in budget."""

from __future__ import annotations

import pytest

from devices.drivers.types import LogLine
from devices.logviews import FRAME_BYTES
from devices.models import Device
from debuglog_helpers import Reader, cast, open_log, running_hub, until

pytestmark = pytest.mark.django_db(transaction=True)


def line(text: str, level: int = 2) -> LogLine:
    return LogLine(device="x", ts=12.5, level=level, fd=1, text=text, received_at=1_760_000_000.0)


async def device(people) -> Device:
    return await Device.objects.acreate(mac="441793000042", vendor="shelly", generation=2, host="127.0.0.1", port=9,
                                        adopted=True, name="Boiler", room=people["room"])


async def test_a_new_view_gets_the_whole_ring_first(tmp_path):
    people = await cast()
    boiler = await device(people)
    async with running_hub(tmp_path, ring_size=1000) as hub:
        hub._log(boiler.pk, "Boiler")
        for i in range(1500):
            hub.ingest(boiler.pk, line(f"old {i}"))
        await hub.flush()
        communicator, _ = await open_log([boiler.pk], people["reader"])
        reader = Reader(communicator)
        assert await reader.read(lambda r: len(r.lines) >= 1000)
        assert reader.texts()[0] == "old 500" and reader.texts()[-1] == "old 1499"
        assert reader.dropped == 0                      # history beyond the ring is not "dropped"
        assert all(len(frame) < 2 * FRAME_BYTES for frame in reader.raw)
        # Live lines follow, once each.
        hub.ingest(boiler.pk, line("new 1"))
        assert await reader.read(lambda r: "new 1" in r.texts())
        assert reader.texts().count("old 1499") == 1 and len(reader.lines) == 1001
        await communicator.disconnect()


async def test_pause_keeps_lines_on_the_server_and_resume_reports_what_did_not_fit(tmp_path):
    people = await cast()
    boiler = await device(people)
    async with running_hub(tmp_path, ring_size=100) as hub:
        hub._log(boiler.pk, "Boiler")
        communicator, _ = await open_log([boiler.pk], people["staff"])
        reader = Reader(communicator)
        await reader.read(timeout=0.3)
        hub.ingest(boiler.pk, line("before pause"))
        assert await reader.read(lambda r: "before pause" in r.texts())
        await communicator.send_to(text_data='{"type":"pause"}')
        await reader.read(timeout=0.2)
        for i in range(30):
            hub.ingest(boiler.pk, line(f"while paused {i}"))
        await reader.read(timeout=0.4)
        assert not any(t.startswith("while paused") for t in reader.texts())   # nothing while paused
        await communicator.send_to(text_data='{"type":"resume"}')
        assert await reader.read(lambda r: "while paused 29" in r.texts())
        assert reader.texts()[-30:] == [f"while paused {i}" for i in range(30)] and reader.dropped == 0
        # Paused for longer than the ring holds: the rest is reported, not silently lost.
        await communicator.send_to(text_data='{"type":"pause"}')
        await reader.read(timeout=0.2)
        for i in range(250):
            hub.ingest(boiler.pk, line(f"long pause {i}"))
        await communicator.send_to(text_data='{"type":"resume"}')
        assert await reader.read(lambda r: "long pause 249" in r.texts())
        assert reader.dropped == 150
        assert [t for t in reader.texts() if t.startswith("long pause")] == [f"long pause {i}" for i in range(150, 250)]
        # Nonsense from the page changes nothing.
        for junk in ("not json", '{"type":"refresh"}', '["ack"]', "x" * 5000):
            await communicator.send_to(text_data=junk)
        hub.ingest(boiler.pk, line("still here"))
        assert await reader.read(lambda r: "still here" in r.texts())
        assert await until(lambda: hub.status(boiler.pk)["viewers"] == 1)
        await communicator.disconnect()
        assert await until(lambda: hub.status(boiler.pk)["viewers"] == 0)


async def test_commands_also_travel_over_the_channel_layer(tmp_path, monkeypatch):
    """When web and runtime are separate processes, views and sockets reach the hub through
    the channel layer (HUB_CHANNEL) instead of calling it: same answers."""
    from devices import debuglogs

    people = await cast()
    boiler = await device(people)
    async with running_hub(tmp_path) as hub:
        monkeypatch.setattr(debuglogs, "local_hub", lambda: None)
        monkeypatch.setattr(debuglogs, "_layer_reaches_other_processes", lambda layer: True)
        hub._log(boiler.pk, "Boiler")
        hub.ingest(boiler.pk, line("over the layer <3"))
        answer = await debuglogs.ask({"type": "log.status", "pks": [boiler.pk]})
        assert answer["ok"] and answer["logs"][0]["lines"] == 1
        assert "over the layer <3" in (await debuglogs.ask({"type": "log.dump", "pks": [boiler.pk]}))["text"]
        answer = await debuglogs.ask({"type": "log.start", "pk": boiler.pk, "source": "udp"})
        assert not answer["ok"] and "UDP" in answer["error"]
        communicator, _ = await open_log([boiler.pk], people["staff"])
        reader = Reader(communicator)
        assert await reader.read(lambda r: "over the layer <3" in r.texts())
        assert await until(lambda: hub.status(boiler.pk)["viewers"] == 1)
        await communicator.disconnect()
        assert await until(lambda: hub.status(boiler.pk)["viewers"] == 0)
