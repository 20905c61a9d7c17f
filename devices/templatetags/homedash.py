"""Small filters the cards and pages need. They never touch the database: the publisher
renders cards on the event loop."""

from __future__ import annotations

import json
from datetime import datetime, timezone as dt_timezone
from functools import lru_cache

from django import template
from django.conf import settings
from django.urls import get_script_prefix, get_urlconf, reverse
from django.utils import timezone

from devices import cards

register = template.Library()

CHANNEL_WORDS = {
    "switch": "Switch", "relay": "Relay", "cover": "Cover", "roller": "Roller", "light": "Light", "rgb": "Light",
    "rgbw": "Light", "cct": "Light", "white": "Light", "color": "Light", "input": "Input", "button": "Button",
    "em": "Meter", "em1": "Meter", "emeter": "Meter", "pm1": "Meter", "meter": "Meter", "temperature": "Temperature",
    "humidity": "Humidity", "devicepower": "Battery", "illuminance": "Light level", "smoke": "Smoke",
    "flood": "Flood", "sensor": "Sensor", "motion": "Motion",
}


@register.filter
def when(epoch) -> datetime | None:
    """Epoch seconds (what the runtime keeps) -> an aware datetime for the date filter."""
    if epoch is None or isinstance(epoch, bool):
        return None
    try:
        return datetime.fromtimestamp(float(epoch), dt_timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


@register.filter
def is_today(value) -> bool:
    if not isinstance(value, datetime):
        return False
    return timezone.localtime(value).date() == timezone.localdate()


@register.filter
def channel_label(key: str) -> str:
    """'switch:0' -> 'Switch 1', 'relay' -> 'Relay': the device's own names, in words."""
    if not isinstance(key, str):
        return ""
    kind, _, index = key.partition(":")
    word = CHANNEL_WORDS.get(kind, kind.replace("_", " ").capitalize())
    if index.isdigit():
        return f"{word} {int(index) + 1}"
    return word


@lru_cache(maxsize=16384)
def _reverse(name: str, pk: int, urlconf, prefix: str, root: str) -> str:
    return reverse(name, args=[pk], urlconf=urlconf)


@register.filter
def url_of(pk, name: str) -> str:
    """{% url name pk %} for the URLs every card carries, remembered: reversing is a good
    part of drawing a card, and a card is drawn for every change. Keyed by everything
    reverse() depends on (URLconf, script prefix)."""
    return _reverse(name, int(pk), get_urlconf(), get_script_prefix(), settings.ROOT_URLCONF)


@register.filter
def card_title(channel, device) -> str:
    """What a card is headed with: the channel's own name, else its device's (a channel
    without a name carries its key as name, see ChannelMeta)."""
    name = getattr(channel, "name", "")
    if name and name != getattr(channel, "key", None):
        return name
    return getattr(device, "name", "") or ""


@register.filter
def energy_today(state, channel_pk) -> float | None:
    energy = getattr(state, "energy_wh", None)
    try:
        return cards.energy_today_wh(int(channel_pk), energy)
    except (TypeError, ValueError):
        return None


@register.filter
def kwh(wh) -> str:
    if wh is None:
        return ""
    try:
        value = float(wh) / 1000.0
    except (TypeError, ValueError):
        return ""
    if value >= 100:
        return f"{value:,.0f} kWh".replace(",", "\u2009")
    return f"{value:.2f} kWh"


@register.filter
def colour_hex(state) -> str | None:
    return cards.colour_hex(state)


@register.filter
def duration(seconds) -> str:
    """Uptime in words: '3 d 4 h', '2 h 5 min', '40 s'."""
    try:
        s = int(float(seconds))
    except (TypeError, ValueError):
        return ""
    if s < 0:
        return ""
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min"
    return f"{secs} s"


@register.filter
def pretty_json(value) -> str:
    """Raw device JSON for the expandable view. Escaping is left to autoescape."""
    try:
        return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)[:200_000]
    except (TypeError, ValueError):
        return "(not representable as JSON)"


@register.filter
def signal_words(rssi) -> str:
    try:
        value = float(rssi)
    except (TypeError, ValueError):
        return ""
    quality = "good" if value >= -60 else "fair" if value >= -72 else "weak"
    return f"{value:.0f} dBm ({quality})"
