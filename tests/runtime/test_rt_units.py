"""Pure pieces of the runtime: change detection, hysteresis, coalescing, persistence batches."""

from __future__ import annotations

import asyncio
import time

import pytest

from devices.drivers.types import ChannelState, Event
from devices.runtime.publisher import COALESCE, Catalogue, ChannelMeta, DeviceMeta, Persister, Publisher, state_from_json, state_to_json
from devices.runtime.state import StateStore


def _store():
    store = StateStore()
    store.ensure(1, "AABBCCDDEEFF")
    return store


def test_only_real_changes_count():
    store = _store()
    assert store.apply(1, [ChannelState("relay", "switch", on=True, power_w=10.01)]).channels == {"relay"}
    # A wobble below the display precision is not a change.
    assert not store.apply(1, [ChannelState("relay", "switch", on=True, power_w=10.02)]).channels
    assert store.apply(1, [ChannelState("relay", "switch", on=False, power_w=0.0)]).channels == {"relay"}


def test_offline_only_after_repeated_failures():
    store = _store()
    store.apply(1, [ChannelState("relay", "switch", on=True)])
    assert not store.failure(1, "unreachable").presence and store.get(1).online
    assert store.failure(1, "unreachable").presence and not store.get(1).online
    change = store.apply(1, [ChannelState("relay", "switch", on=True)])
    assert change.presence and store.get(1).online and store.get(1).health.failures_in_row == 0


def test_last_known_state_round_trips_and_tolerates_garbage():
    state = ChannelState("light", "light", on=True, brightness_pct=40.0, colour=(120.0, 50.0, 40.0), colour_mode="hsv")
    assert state_from_json(state_to_json(state)) == state
    for garbage in (None, [], {"key": 5}, {"key": "x", "kind": "switch", "unknown_field": 1, "on": True}):
        result = state_from_json(garbage)
        assert result is None or (result.key == "x" and result.on is True)


async def test_lone_change_goes_out_at_once_and_bursts_are_coalesced():
    store = _store()
    catalogue = Catalogue()
    catalogue.devices[1] = DeviceMeta(1, "Lamp", 7, "shelly", "Plus 1PM")
    catalogue.channels[(1, "switch:0")] = ChannelMeta(10, 1, "switch:0", "switch", "Lamp", None)
    sent: list[tuple[float, list[str], str]] = []

    async def send(groups, html, seq):
        sent.append((time.monotonic(), groups, html))

    renders = []

    def render(pk, keys, presence):
        renders.append(keys)
        return f"<div id='channel-10'>{store.get(pk).channels['switch:0'].on}</div>"

    Publisher(store, catalogue, render, send)
    t0 = time.monotonic()
    store.apply(1, [ChannelState("switch:0", "switch", on=True)])
    for _ in range(50):
        if sent:
            break
        await asyncio.sleep(0.001)
    assert len(sent) == 1 and sent[0][0] - t0 < COALESCE / 2  # not held back for a tick
    assert sent[0][1] == ["device.1", "room.7"]  # the channel falls back to the device's room

    # 50 changes within ~50 ms: at most one message per COALESCE period, the last one true.
    for n in range(50):
        store.apply(1, [ChannelState("switch:0", "switch", on=n % 2 == 0, power_w=float(n))])
        await asyncio.sleep(0.001)
    await asyncio.sleep(COALESCE * 2)
    burst = sent[1:]
    assert 1 <= len(burst) <= 3
    assert burst[-1][2] == "<div id='channel-10'>False</div>"  # n=49 -> off
    gaps = [b[0] - a[0] for a, b in zip(sent, sent[1:])]
    assert all(gap >= COALESCE * 0.9 for gap in gaps)


async def test_cards_nobody_follows_are_not_rendered():
    """With a layer that knows its groups, a change is rendered only for pages that follow
    it: all cards for an open device page, only home-page cards for a followed room, and
    nothing at all when nobody looks."""
    store = _store()
    catalogue = Catalogue()
    catalogue.devices[1] = DeviceMeta(1, "Hall light", 7, "shelly", "Plus 1PM")
    catalogue.channels[(1, "switch:0")] = ChannelMeta(10, 1, "switch:0", "switch", "switch:0", None)
    catalogue.channels[(1, "input:0")] = ChannelMeta(11, 1, "input:0", "input", "input:0", None)
    listeners: set[str] = set()
    renders: list[set[str]] = []

    async def send(groups, html, seq):
        pass

    def render(pk, keys, presence):
        renders.append(set(keys))
        return "<p>card</p>"

    publisher = Publisher(store, catalogue, render, send, listening=lambda group: group in listeners)

    async def change(on: bool) -> set[str] | None:
        before = len(renders)
        store.apply(1, [ChannelState("switch:0", "switch", on=on), ChannelState("input:0", "input", on=on)])
        await asyncio.sleep(COALESCE * 1.5)
        return renders[-1] if len(renders) > before else None

    assert await change(True) is None and publisher.unwatched == 1      # nobody looks
    listeners.add("room.7")                                             # a home page
    assert await change(False) == {"switch:0"}                          # the wired input is not on it
    catalogue.channels[(1, "input:0")].name = "Door bell"               # ... unless it has a name
    assert await change(True) == {"switch:0", "input:0"}
    catalogue.channels[(1, "input:0")].name = "input:0"
    catalogue.channels[(1, "input:0")].room_pk = 8                      # ... or sits in another room
    listeners.add("room.8")
    assert await change(False) == {"switch:0", "input:0"}
    listeners.clear()
    listeners.add("device.1")                                           # the device page
    assert await change(True) == {"switch:0", "input:0"}


def test_persister_batches_readings_at_most_once_a_minute():
    store = _store()
    persister = Persister(store, Catalogue())
    store.apply(1, [ChannelState("relay", "switch", on=True, power_w=5.0)], events=[Event("m", "relay", "single")])
    batch = persister.take_batch(now=1000.0)
    assert [r[3] for r in batch["readings"]] == ["power_w"] and batch["channels"]
    assert [e[2] for e in batch["events"] if e[2] == "single"] == ["single"]
    store.apply(1, [ChannelState("relay", "switch", on=True, power_w=50.0)])
    assert persister.take_batch(now=1030.0)["readings"] == []
    store.apply(1, [ChannelState("relay", "switch", on=True, power_w=60.0)])
    assert [r[4] for r in persister.take_batch(now=1061.0)["readings"]] == [60.0]


@pytest.mark.django_db
def test_a_batch_writes_every_row_as_the_orm_would_read_it():
    """The batch goes to the database as plain executemany UPDATEs: every channel's state,
    every device's presence (raw status and last-seen only when the batch has them)."""
    from devices.drivers.types import PhaseReading
    from devices.models import Channel, Device

    meter = Device.objects.create(mac="AABBCC0000A1", vendor="shelly", generation=2, model_code="S3EM-003CXCEU",
                                  host="127.0.0.1", adopted=True, raw_status={"keep": 1})
    plug = Device.objects.create(mac="AABBCC0000A2", vendor="shelly", generation=2, model_code="SNSW-001P16EU",
                                 host="127.0.0.2", adopted=True, raw_status={"old": True})
    Channel.objects.create(device=meter, key="em:0", kind="meter")
    Channel.objects.create(device=plug, key="switch:0", kind="switch")
    phases = (PhaseReading("a", power_w=10.5, voltage_v=230.1), PhaseReading("b", power_w=-2.0))
    em = ChannelState("em:0", "meter", power_w=8.5, phases=phases, errors=("overpower",))
    switch = ChannelState("switch:0", "switch", on=True, power_w=3.25)
    now = time.time()
    created = Persister.write_batch({
        "channels": [(meter.pk, "em:0", "meter", state_to_json(em), now),
                     (plug.pk, "switch:0", "switch", state_to_json(switch), now),
                     (plug.pk, "input:0", "input", {"key": "input:0", "kind": "input", "on": False}, now)],
        "devices": [(meter.pk, True, now, None), (plug.pk, False, None, {"sys": {"uptime": 5}})],
        "readings": [], "events": []})
    assert list(created) == [(plug.pk, "input:0")]           # a channel seen for the first time
    em_row = Channel.objects.get(device=meter, key="em:0")
    assert state_from_json(em_row.last_state) == state_from_json(state_to_json(em))
    assert em_row.last_state["phases"][0]["voltage_v"] == 230.1
    assert abs(em_row.last_state_at.timestamp() - now) < 1e-3
    assert Channel.objects.get(device=plug, key="switch:0").last_state == {"key": "switch:0", "kind": "switch",
                                                                           "on": True, "power_w": 3.25}
    assert Channel.objects.get(device=plug, key="input:0").last_state["on"] is False
    meter.refresh_from_db()
    plug.refresh_from_db()
    assert meter.online and abs(meter.last_seen.timestamp() - now) < 1e-3 and meter.raw_status == {"keep": 1}
    assert not plug.online and plug.last_seen is None and plug.raw_status == {"sys": {"uptime": 5}}


@pytest.mark.django_db
def test_after_a_restart_cards_pushed_by_the_runtime_show_the_stored_press_and_last_known():
    """The runtime keeps presses in memory only; at start it seeds each input's last stored
    press, so the cards it pushes agree with the page (not "none seen yet"), and a device
    that was online when last seen is "last known" until it answers, not "offline"."""
    from datetime import datetime, timezone as tz

    from django.template.loader import render_to_string

    from devices.models import Channel, Device, DeviceEvent
    from devices.runtime.manager import DeviceManager, _load_from_database, _seeds

    buttons = Device.objects.create(mac="AABBCC0000B1", vendor="shelly", generation=2, model_code="SNSN-0024X",
                                    host="127.0.0.3", adopted=True, name="Scene buttons", online=True)
    gone = Device.objects.create(mac="AABBCC0000B2", vendor="mystrom", model_code="107", host="127.0.0.4",
                                 adopted=True, name="Garage plug", online=False)
    Channel.objects.create(device=gone, key="relay", kind="switch", last_state={"key": "relay", "kind": "switch"})
    first = Channel.objects.create(device=buttons, key="input:0", kind="input",
                                   last_state={"key": "input:0", "kind": "input", "on": False})
    Channel.objects.create(device=buttons, key="input:1", kind="input",
                           last_state={"key": "input:1", "kind": "input", "on": False})
    at = datetime(2026, 11, 22, 18, 30, tzinfo=tz.utc)
    DeviceEvent.objects.create(device=buttons, channel=first, kind="single", ts=at.replace(hour=17))
    DeviceEvent.objects.create(device=buttons, channel=first, kind="double", ts=at)
    DeviceEvent.objects.create(device=buttons, channel=first, kind="offline", ts=at.replace(hour=19))  # not a press

    configs, catalogue, last_known = _load_from_database()
    manager = DeviceManager()
    manager._adopt_catalogue(catalogue)
    presses, online = _seeds(catalogue)
    for device in (buttons, gone):
        states, when = last_known[device.pk]
        manager.store.load_last_known(device.pk, device.mac, states, when, events=presses.get(device.pk, ()),
                                      online=device.pk in online)
    pressed = manager.card_context(catalogue.channels[(buttons.pk, "input:0")])
    assert (pressed["last_event"].kind, pressed["last_event"].ts) == ("double", at.timestamp())
    card = render_to_string("devices/partials.html#channel-card", pressed)
    assert ">double <time" in card and "none seen yet" not in card
    assert "is-stale" in card and "last known" in card and "is-offline" not in card
    card = render_to_string("devices/partials.html#channel-card", manager.card_context(catalogue.channels[(gone.pk, "relay")]))
    assert "is-offline" in card
    assert manager.card_context(catalogue.channels[(buttons.pk, "input:1")])["last_event"] is None
