"""The card cache (devices/cards.py): every channel's last card is kept with what it was
drawn from, and reused by pages, snapshots and command answers only while a fresh render
would show exactly the same — names, rooms, state, online/offline/stale, the time shown,
the day (and with it "kWh today"). The cache holds cards, not decisions: who sees which
card is still decided per request."""

from __future__ import annotations

import asyncio
import datetime as dt
from types import SimpleNamespace

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.template.loader import render_to_string
from django.test import Client
from django.urls import reverse

from devices import cards
from devices import runtime as runtime_module
from devices.drivers.types import ChannelState, Event, PhaseReading
from devices.models import Channel
from devices.runtime.publisher import ChannelMeta, DeviceMeta
from tests.dashboard.conftest import build_house

NOON = dt.datetime(2026, 3, 3, 12, 0, tzinfo=dt.timezone.utc).timestamp()


@pytest.fixture(autouse=True)
def empty_cache():
    cards._cards.clear()
    yield
    cards._cards.clear()


@pytest.fixture
def renders(monkeypatch):
    """Counts the card renders that really happen (cache misses and error cards)."""
    done: list[int] = []
    real = cards.render_to_string

    def counting(template, context=None, *args, **kwargs):
        if template == cards.CARD_TEMPLATE:
            done.append(context["channel"].pk)
        return real(template, context, *args, **kwargs)

    monkeypatch.setattr(cards, "render_to_string", counting)
    return done


def context(kind="switch", state=None, *, pk=7, name="", room=None, device_name="Hall thing", online=True,
            stale=False, updated_at=NOON, last_event=None, oob=False):
    key = {"input": "input:0", "light": "light:0"}.get(kind, f"{kind}:0")
    return {
        "channel": ChannelMeta(pk=pk, device_pk=3, key=key, kind=kind, name=name or key, room_pk=room),
        "device": DeviceMeta(3, device_name, 2, "shelly", "Plus"), "state": state, "online": online,
        "stale": stale, "updated_at": updated_at, "last_event": last_event, "oob": oob,
    }


STATES = {
    "switch": ChannelState(key="switch:0", kind="switch", on=True, power_w=12.34, energy_wh=5000.0, temperature_c=40.2),
    "cover": ChannelState(key="cover:0", kind="cover", position_pct=40.0, moving="closing", power_w=80.0),
    "light": ChannelState(key="light:0", kind="light", on=False, brightness_pct=30.0, colour=(120.0, 100.0, 40.0),
                          colour_mode="hsv", color_temp_k=3000.0),
    "meter": ChannelState(key="meter:0", kind="meter", power_w=500.0, energy_wh=123456.0, returned_energy_wh=10.0,
                          phases=(PhaseReading("a", power_w=100.0, voltage_v=230.0, current_a=0.4),)),
    "sensor": ChannelState(key="sensor:0", kind="sensor", temperature_c=18.5, humidity_pct=55.0, alarm=True,
                           battery_pct=80.0, errors=("overtemp",)),
    "input": ChannelState(key="input:0", kind="input", on=True, battery_v=2.9),
    "unknown": None,
}


def every_variant():
    press = Event(device="x", channel="input:0", kind="double", ts=NOON)
    for kind, state in STATES.items():
        for online, stale in ((True, False), (True, True), (False, False), (False, True)):
            yield context(kind, state, online=online, stale=stale, last_event=press if kind == "input" else None)
    yield context("switch", STATES["switch"], name="Kettle <b>", device_name="Plug & co", room=5)
    yield context("input", STATES["input"])


@pytest.mark.parametrize("variant", list(every_variant()), ids=lambda c: f"{c['channel'].kind}-{c['online']}-{c['stale']}")
def test_a_cached_card_is_exactly_a_fresh_render(variant, renders):
    cards._baselines.pop(variant["channel"].pk, None)
    first = cards.card_html(variant)                      # drawn and kept
    fresh = render_to_string(cards.CARD_TEMPLATE, variant)
    assert cards.card_html(dict(variant)) == first == fresh
    oob = {**variant, "oob": True}
    assert cards.card_html(oob) == render_to_string(cards.CARD_TEMPLATE, oob) == cards.with_oob(first)
    assert 'hx-swap-oob="true"' in cards.card_html(oob) and 'hx-swap-oob' not in first
    assert renders == [variant["channel"].pk]             # one render served all four


def test_a_state_changed_in_place_is_drawn_again(renders):
    state = ChannelState(key="switch:0", kind="switch", on=True, power_w=12.0)
    ctx = context("switch", state)
    assert "12.0 W" in cards.card_html(ctx)
    state.power_w = 99.0
    assert "99.0 W" in cards.card_html(ctx) and len(renders) == 2


def test_what_the_cache_leaves_out_never_shows(renders):
    """An online card's time moves with every poll and is never shown; a switch shows no
    presses. Both stay out of the key, and the card is indeed the same without them."""
    base = context("switch", STATES["switch"], updated_at=NOON)
    other = context("switch", STATES["switch"], updated_at=NOON + 3600,
                    last_event=Event(device="x", channel="switch:0", kind="single", ts=NOON))
    assert render_to_string(cards.CARD_TEMPLATE, base) == render_to_string(cards.CARD_TEMPLATE, other)
    assert cards.card_key(base) == cards.card_key(other)
    cards.card_html(base)
    cards.card_html(other)
    assert len(renders) == 1


@pytest.mark.parametrize("change", [
    dict(state=ChannelState(key="switch:0", kind="switch", on=True, power_w=12.36, energy_wh=5000.0, temperature_c=40.2)),
    dict(state=ChannelState(key="switch:0", kind="switch", on=True, power_w=12.34, energy_wh=5000.0, temperature_c=40.6)),
    dict(online=False), dict(stale=True), dict(name="Kettle"), dict(room=9), dict(device_name="Kitchen plug"),
])
def test_anything_a_card_shows_makes_it_drawn_again(change, renders):
    before = context("switch", STATES["switch"])
    after = context("switch", **{"state": STATES["switch"], **change})
    assert cards.card_html(before) != cards.card_html(after) == render_to_string(cards.CARD_TEMPLATE, after)
    assert len(renders) == 2


def test_the_time_of_a_stale_or_offline_card_is_part_of_it(renders):
    for flags in (dict(online=False), dict(stale=True)):
        first = cards.card_html(context("switch", STATES["switch"], updated_at=NOON, **flags))
        later = cards.card_html(context("switch", STATES["switch"], updated_at=NOON + 120, **flags))
        assert first != later and "12:02" in later
    assert len(renders) == 4


def test_a_new_day_draws_offline_times_and_kwh_today_again(monkeypatch, renders):
    """'last seen 23:50' becomes '3 Mar 23:50' after midnight, and today's energy starts
    from zero: a card cached yesterday is not what a render shows today."""
    from django.utils import timezone

    late = dt.datetime(2026, 3, 3, 23, 50, tzinfo=dt.timezone.utc)
    monkeypatch.setattr(timezone, "now", lambda: late)
    cards._baselines.pop(7, None)
    offline = context("switch", STATES["switch"], online=False, updated_at=late.timestamp())
    energy = STATES["switch"]
    yesterday = cards.card_html(offline)
    assert ">23:50</time>" in yesterday
    cards._baselines[7] = (timezone.localdate(), energy.energy_wh - 300.0)  # the day's first value
    assert "0.30 kWh" in cards.card_html(offline)
    monkeypatch.setattr(timezone, "now", lambda: late + dt.timedelta(minutes=20))
    today = cards.card_html(offline)
    assert today == render_to_string(cards.CARD_TEMPLATE, offline)
    assert "3 Mar 23:50" in today and "0.00 kWh" in today
    assert len(renders) == 3


def test_a_new_energy_baseline_draws_the_card_again(renders):
    """The home page seeds 'kWh today' from the day's first stored reading after the
    publisher may already have drawn the card from a first sight."""
    from django.utils import timezone

    cards._baselines.pop(7, None)
    ctx = context("switch", STATES["switch"])
    assert "0.00 kWh" in cards.card_html(ctx)          # first sight: today starts now
    cards.card_html(ctx)
    assert len(renders) == 1

    cards._baselines[7] = (timezone.localdate(), 4000.0)  # what seed_day_baselines found
    assert "1.00 kWh" in cards.card_html(ctx)
    assert len(renders) == 2


def test_error_cards_are_one_offs(renders):
    ctx = context("switch", STATES["switch"], oob=True)
    plain = cards.card_html(ctx)
    failed = cards.card_html({**ctx, "error": "unreachable"})
    assert "Did not work: unreachable." in failed and "Did not work" not in cards.card_html(ctx)
    assert plain == cards.card_html(ctx) and len(renders) == 2


def test_the_cache_holds_one_card_per_channel_and_stays_bounded(monkeypatch):
    for n in range(5):
        cards.card_html(context("switch", ChannelState(key="switch:0", kind="switch", on=bool(n % 2), power_w=float(n))))
    assert len(cards._cards) == 1
    monkeypatch.setattr(cards, "MAX_CARDS", 3)
    for pk in range(10, 20):
        cards.card_html(context("sensor", STATES["sensor"], pk=pk))
    assert len(cards._cards) <= 3
    cards.forget_cards(channel_pk=19)
    assert 19 not in cards._cards
    cards.forget_cards(device_pk=3)
    assert not cards._cards


def test_card_urls_are_the_urls_reverse_gives(settings):
    from devices.templatetags.homedash import url_of

    for name, pk in (("channel-command", 7), ("device", 3), ("device-raw", 3), ("channel-command", 123456)):
        assert url_of(pk, name) == reverse(name, args=[pk])
    html = cards.card_html(context("unknown", None))
    assert 'href="/devices/3/"' in html and 'href="/devices/3/raw.json"' in html


# ----------------------------------------------------------------------------- pages
def _card(page: str, pk: int) -> str:
    start = page.index(f'<article id="channel-{pk}"')
    return page[start:page.index("</article>", start)]


@pytest.mark.django_db
def test_the_home_page_reuses_cards_and_follows_renames_and_moves(as_user, house, renders):
    client = as_user(house.anna)
    first = client.get("/").content.decode()
    drawn = len(renders)
    assert drawn == 4
    again = client.get("/").content.decode()
    assert len(renders) == drawn                      # nothing drawn twice
    assert _card(again, house.plug_ch.pk) == _card(first, house.plug_ch.pk)

    prefix = f"ch{house.plug_ch.pk}"
    client.post(reverse("channel-settings", args=[house.plug_ch.pk]),
                {f"{prefix}-name": "Kettle", f"{prefix}-room": house.garden.pk, f"{prefix}-visible": "on"})
    page = client.get("/").content.decode()
    card = _card(page, house.plug_ch.pk)
    assert ">Kettle</a>" in card and f'data-room="{house.garden.pk}"' in card
    # ...and it is listed in the garden now, not in the kitchen.
    assert page.index("Garden") < page.index(f'id="channel-{house.plug_ch.pk}"')

    client.post(reverse("device-settings", args=[house.lamp.pk]), {"name": "Reading lamp", "room": house.kitchen.pk})
    assert ">Reading lamp</a>" in _card(client.get("/").content.decode(), house.lamp_ch.pk)


@pytest.mark.django_db
def test_saving_or_deleting_a_channel_or_device_drops_its_cards(as_user, house):
    as_user(house.anna).get("/")
    assert {house.plug_ch.pk, house.lamp_ch.pk, house.cover_ch.pk, house.sensor_ch.pk} <= set(cards._cards)
    house.plug_ch.name = "Kettle"
    house.plug_ch.save()
    assert house.plug_ch.pk not in cards._cards and house.lamp_ch.pk in cards._cards
    house.lamp.save()
    assert house.lamp_ch.pk not in cards._cards
    pk = house.cover_ch.pk
    house.shutter.delete()
    assert pk not in cards._cards


@pytest.mark.django_db
def test_cached_cards_show_nobody_a_room_they_may_not_see(as_user, house):
    """Anna's visit draws every card; Cara (kitchen, view) and Dora (nothing) still get
    only what they may see, and the kitchen card Cara gets is the one Anna got."""
    anna = as_user(house.anna).get("/").content.decode()
    cara = as_user(house.cara).get("/").content.decode()
    assert _card(cara, house.plug_ch.pk) == _card(anna, house.plug_ch.pk)
    for hidden in (house.cover_ch, house.sensor_ch):
        assert f'id="channel-{hidden.pk}"' not in cara
    assert "channel-" not in as_user(house.dora).get("/").content.decode()
    assert "Garden" not in cara and 'class="room can-control"' not in cara


@pytest.mark.django_db
def test_the_home_page_leaves_out_wired_inputs_by_what_each_user_sees(as_user, house):
    """home_channels leaves wired inputs out in SQL: by the same rule as for_home, over
    the channels the user sees — an input whose relay is in a room the user cannot see is
    not 'wired' for them."""
    from devices import access

    wired = Channel.objects.create(device=house.plug, key="input:0", kind="input")
    named = Channel.objects.create(device=house.plug, key="input:1", kind="input", name="Door bell")
    house.plug_ch.room = house.garden
    house.plug_ch.save()
    for user in (house.anna, house.ben, house.cara, house.dora):
        expected = [c.pk for c in cards.for_home(access.visible_channels(user))]
        assert [c.pk for c in cards.home_channels(user)] == expected
    assert wired.pk not in [c.pk for c in cards.home_channels(house.anna)]
    assert {wired.pk, named.pk} <= {c.pk for c in cards.home_channels(house.ben)}  # his view: no relay
    page = as_user(house.ben).get("/").content.decode()
    assert f'id="channel-{wired.pk}"' in page and f'id="channel-{house.plug_ch.pk}"' not in page


@pytest.mark.django_db
def test_the_home_page_makes_the_same_queries_for_3_cards_or_30(as_user, house):
    """No query per card: not for the last press of an input, not for the last-known
    state of a device nobody follows, not for a deferred column."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from devices.models import Device, DeviceEvent

    client = as_user(house.anna)
    buttons, queries = [], []
    for batch in (range(0, 3), range(3, 30)):
        for n in batch:
            device = Device.objects.create(mac=f"AABBCC0001{n:02d}", vendor="mystrom", host=f"10.0.1.{n + 1}",
                                           name=f"Button {n}", room=house.kitchen, adopted=True, online=True)
            buttons.append(Channel.objects.create(device=device, key="button", kind="input",
                                                  last_state={"key": "button", "kind": "input", "battery_pct": 50.0 + n}))
            DeviceEvent.objects.create(device=device, channel=buttons[-1], kind="long" if n else "double")
            DeviceEvent.objects.create(device=device, channel=buttons[-1], kind="single",
                                       ts=DeviceEvent.objects.latest("ts").ts - dt.timedelta(hours=1))
            DeviceEvent.objects.create(device=device, kind="offline")
        client.get("/")  # seeds the day's energy baselines of new channels
        cards._cards.clear()
        with CaptureQueriesContext(connection) as captured:
            page = client.get("/").content.decode()
        queries.append(len(captured))
    assert queries[0] == queries[1]  # 3 inputs or 30: the same queries
    assert "double" in _card(page, buttons[0].pk) and "long" in _card(page, buttons[7].pk)
    assert "single" not in _card(page, buttons[7].pk) and "57 %" in _card(page, buttons[7].pk)
    assert "1200.5 W" in _card(page, house.plug_ch.pk)  # the stored state, fetched in one go


# ----------------------------------------------------------------------------- with the runtime
def _home(user) -> str:
    client = Client()
    client.force_login(user)
    return client.get("/").content.decode()


@pytest.mark.django_db(transaction=True)
async def test_presence_transitions_are_never_served_from_the_cache(renders):
    """With the runtime in this process: a card drawn while the device was 'last known'
    is not what the page shows once the device answered, nor after it went offline — and
    the publisher's own render of each change is what the next page reuses."""
    from devices.runtime.manager import DeviceManager, _load_from_database

    house = await sync_to_async(build_house)(get_user_model())
    manager = DeviceManager()
    _, catalogue, last_known = await sync_to_async(_load_from_database)()
    manager._adopt_catalogue(catalogue)
    for device in (house.plug, house.lamp, house.shutter, house.loose):
        states, at = last_known[device.pk]
        manager.store.load_last_known(device.pk, device.mac, states, at)
        manager.store.get(device.pk).online = device.online  # as the database last had it
    runtime_module.install(SimpleNamespace(running=True, manager=manager))
    # A home page follows the plug's room: the publisher draws only what someone follows.
    from devices.runtime.publisher import room_group

    await manager.layer.group_add(room_group(house.plug.room_id), await manager.layer.new_channel())
    try:
        pk = house.plug_ch.pk
        card = _card(await sync_to_async(_home)(house.anna), pk)
        assert "last known" in card and "is-stale" in card

        state = ChannelState(key="switch:0", kind="switch", on=True, power_w=900.0)
        manager.store.apply(house.plug.pk, [state])   # the device answers: online, fresh
        card = _card(await sync_to_async(_home)(house.anna), pk)  # before the publisher ran, even
        assert "last known" not in card and ">online</p>" in card and "900.0 W" in card

        manager.store.apply(house.plug.pk, [ChannelState(key="switch:0", kind="switch", on=False, power_w=0.0)])
        pushed = manager.render(house.plug.pk, {"switch:0"}, False)  # what the publisher sends...
        drawn = len(renders)
        card = _card(await sync_to_async(_home)(house.anna), pk)
        assert 'aria-pressed="false"' in card and cards.with_oob(card) in pushed
        assert renders[drawn:].count(pk) == 0         # ...is what the page reuses

        for _ in range(2):                            # two failures in a row: offline
            manager.store.failure(house.plug.pk, "unreachable")
        card = _card(await sync_to_async(_home)(house.anna), pk)
        assert "is-offline" in card and "last seen" in card

        manager.store.apply(house.plug.pk, [state])   # back
        card = _card(await sync_to_async(_home)(house.anna), pk)
        assert "is-offline" not in card and ">online</p>" in card
        await asyncio.sleep(0.15)
    finally:
        runtime_module.install(None)
