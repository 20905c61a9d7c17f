"""The pieces a card is made of: colours, kWh today, the chart, which cards the home page
shows, the filters — and the commands the dashboard added to the device adapters, against
the simulated devices."""

from __future__ import annotations

import pytest
from django.template.loader import render_to_string

from devices import cards
from devices.drivers.types import ChannelState, Event
from devices.runtime.publisher import ChannelMeta, DeviceMeta
from devices.templatetags import homedash as filters


def test_colours_both_ways():
    assert cards.hex_to_hsv("#ff0000") == (0.0, 100.0, 100.0)
    assert cards.hex_to_hsv("#00ff00") == (120.0, 100.0, 100.0)
    for garbage in ("red", "#12345", "#gggggg", None, "#ff0000ff"):
        assert cards.hex_to_hsv(garbage) is None
    assert cards.colour_hex(ChannelState(key="light", kind="light", colour=(240.0, 100.0, 50.0), colour_mode="hsv")) == "#0000ff"
    assert cards.colour_hex(ChannelState(key="light:0", kind="light", colour=(255.0, 128.0, 0.0, 10.0),
                                         colour_mode="rgbw")) == "#ff8000"
    assert cards.colour_hex(ChannelState(key="light", kind="light", colour=(3.0, 50.0), colour_mode="mono")) is None
    assert cards.colour_hex(ChannelState(key="light", kind="light", colour=(999.0, 1e9, -5.0), colour_mode="rgb")) == "#ffff00"


def test_energy_today_counts_from_the_first_value_of_the_day():
    pk = 987654
    cards._baselines.pop(pk, None)
    assert cards.energy_today_wh(pk, None) is None
    assert cards.energy_today_wh(pk, 1000.0) == 0.0
    assert cards.energy_today_wh(pk, 1250.0) == 250.0
    # A counter that went backwards (device reset) starts over rather than going negative.
    assert cards.energy_today_wh(pk, 10.0) == 0.0
    assert cards.energy_today_wh(pk, 30.0) == 20.0


@pytest.mark.django_db
def test_energy_today_baseline_comes_from_todays_first_reading(django_user_model):
    from django.utils import timezone

    from devices.models import Channel, Device, Reading

    device = Device.objects.create(mac="AABBCC0000F1", vendor="shelly", host="10.0.0.5", adopted=True)
    channel = Channel.objects.create(device=device, key="switch:0", kind="switch")
    now = timezone.localtime()
    midnight = now.replace(hour=0, minute=0, second=1, microsecond=0)
    Reading.objects.create(channel=channel, metric="energy_wh", value=500.0, ts=midnight)
    Reading.objects.create(channel=channel, metric="energy_wh", value=900.0, ts=now)
    cards._baselines.pop(channel.pk, None)
    cards._seeded.pop(channel.pk, None)
    cards.energy_today_wh(channel.pk, 950.0)  # first sight in this process
    cards.seed_day_baselines([channel.pk])
    assert cards.energy_today_wh(channel.pk, 1000.0) == 500.0


def test_nice_axis_ceiling():
    assert [cards._nice_ceiling(v) for v in (0.4, 1, 3, 7, 42, 180, 1250, 9999)] == [1, 1, 5, 10, 50, 200, 2000, 10000]


@pytest.mark.django_db
def test_chart_without_readings_says_so():
    assert cards.power_chart([]) is None


def test_filters():
    assert filters.channel_label("switch:0") == "Switch 1"
    assert filters.channel_label("relay") == "Relay"
    assert filters.channel_label("devicepower:0") == "Battery 1"
    assert filters.channel_label("weird_thing:x") == "Weird thing"
    assert filters.duration(3 * 86400 + 4 * 3600 + 5) == "3 d 4 h"
    assert filters.duration(125) == "2 min"
    assert filters.duration("garbage") == ""
    assert filters.kwh(1234.5) == "1.23 kWh" and filters.kwh(None) == ""
    assert filters.signal_words(-80) == "-80 dBm (weak)"
    assert filters.when(None) is None and filters.when("x") is None and filters.when(0).year == 1970


def _render(kind, state, *, online=True, stale=False, last_event=None):
    meta = ChannelMeta(pk=7, device_pk=3, key={"input": "input:0"}.get(kind, f"{kind}:0"), kind=kind, name="", room_pk=None)
    return render_to_string(cards.CARD_TEMPLATE, {
        "channel": meta, "device": DeviceMeta(3, "Hall <b>thing</b>", 2, "shelly", "Plus"),
        "state": state, "online": online, "stale": stale, "updated_at": 1_700_000_000.0,
        "last_event": last_event, "oob": True,
    })


def test_cards_by_kind():
    html = _render("switch", ChannelState(key="switch:0", kind="switch", on=True, power_w=12.34, temperature_c=40.2))
    assert 'hx-swap-oob="true"' in html and "12.3 W" in html and "40 °C" in html and 'aria-pressed="true"' in html
    assert "Hall &lt;b&gt;thing&lt;/b&gt;" in html and 'data-room="2"' in html
    html = _render("cover", ChannelState(key="cover:0", kind="cover", position_pct=40.0, moving="closing"))
    assert "40 % open" in html and "closing" in html and 'name="position"' in html
    html = _render("light", ChannelState(key="light:0", kind="light", on=False, brightness_pct=30.0, color_temp_k=3000.0))
    assert 'name="kelvin"' in html and 'name="colour"' not in html and 'name="ramp_ms"' in html
    html = _render("meter", ChannelState(key="em:0", kind="meter", power_w=500.0, energy_wh=123456.0,
                                         phases=(), returned_energy_wh=0.0))
    assert "500 W" in html and "123 kWh" in html
    html = _render("sensor", ChannelState(key="smoke:0", kind="sensor", alarm=True, battery_pct=90.0))
    assert "Alarm!" in html and "is-alarm" in html
    html = _render("input", ChannelState(key="input:0", kind="input"), last_event=Event(device="x", channel="input:0", kind="double"))
    assert "double" in html and "Last press" in html
    html = _render("unknown", None, online=False)
    assert "offline" in html and "/devices/3/raw.json" in html and "No reading yet" in html
    html = _render("switch", ChannelState(key="switch:0", kind="switch", on=False), stale=True)
    assert "last known" in html and "<time" in html


# ----------------------------------------------------------------------------- adapters
async def test_gen1_colour_and_fade_reach_the_device():
    """The dashboard's colour picker and fade, through the runtime's Gen1 adapter, change
    the simulated RGBW2 the way the real one would."""
    from devices.drivers.http import make_client
    from devices.runtime.sessions import DeviceConfig, Gen1Adapter
    from devices.simulator.shelly_gen1 import ShellyGen1

    sim = ShellyGen1("SHRGBW2", mode="color")
    await sim.start()
    try:
        async with make_client() as client:
            adapter = Gen1Adapter(DeviceConfig(pk=1, mac=sim.mac, vendor="shelly", generation=1, model_code="SHRGBW2",
                                               host=sim.host, port=sim.port, raw_info={"mode": "color"}), client)
            (state,) = await adapter.command("light:0", "colour", {"h": 120.0, "s": 100.0, "v": 60.0, "ramp_ms": 500})
            assert state.on and state.colour[:3] == (0.0, 255.0, 0.0) and state.brightness_pct == 60.0
            with pytest.raises(ValueError):
                await adapter.command("light:0", "colour", {"h": "green"})
    finally:
        await sim.stop()


async def test_gen1_dimmer_brightness_with_fade():
    from devices.drivers.http import make_client
    from devices.runtime.sessions import DeviceConfig, Gen1Adapter
    from devices.simulator.shelly_gen1 import ShellyGen1

    sim = ShellyGen1("SHDM-2")
    await sim.start()
    try:
        async with make_client() as client:
            adapter = Gen1Adapter(DeviceConfig(pk=1, mac=sim.mac, vendor="shelly", generation=1, model_code="SHDM-2",
                                               host=sim.host, port=sim.port), client)
            (state,) = await adapter.command("light:0", "brightness", {"brightness": 35, "ramp_ms": 1000})
            assert state.on and state.brightness_pct == 35.0
    finally:
        await sim.stop()
