"""What a channel card shows, for pages, htmx answers and the websocket snapshot.

Live changes are rendered by the runtime's publisher (once per change, shared by every
browser). Everything else that needs a card — a page, the answer to a command, the
snapshot a socket gets when it (re)connects — comes through here, from the same partial
and, when the runtime runs in this process, from the same context builder, so a card looks
the same whichever path drew it. Without an in-process runtime (scaled mode, or before it
started) the last-known state the runtime wrote to the database is shown, marked as such.

A card is a pure function of its context (plus the local date and the day's energy
baseline), so the last HTML of every channel is kept with what it was drawn from
(`card_html`): the publisher's render after a change is what the next page, snapshot or
command answer reuses, and only a card whose inputs differ is drawn again.
"""

from __future__ import annotations

import asyncio
import colorsys
import dataclasses
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Exists, Min, OuterRef, Q, Subquery
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.safestring import SafeData, mark_safe

from devices import runtime as runtime_module
from devices.drivers.types import Event
from devices.models import Channel, Device, DeviceEvent, Reading
from devices.runtime.publisher import OUTPUT_KINDS, ChannelMeta, DeviceMeta, shown_on_home, state_from_json

CARD_TEMPLATE = "devices/partials.html#channel-card"
CONFIRM_TIMEOUT = 2.0  # seconds a command answer waits for the device to confirm by push


def manager():
    """The device manager of this process, or None (scaled mode / no runtime)."""
    rt = runtime_module.current()
    return getattr(rt, "manager", None) if rt is not None and rt.running else None


def live_sequence() -> int | None:
    """The publisher's sequence number now (see devices/runtime/publisher.py), or None when
    no runtime draws cards in this process. Cards drawn after reading it (render_cards
    takes the runtime's state) show every change numbered up to it."""
    m = manager()
    return m.publisher.seq if m is not None else None


def channel_meta(channel: Channel) -> ChannelMeta:
    return ChannelMeta(channel.pk, channel.device_id, channel.key, channel.kind, channel.name or channel.key,
                       channel.room_id, channel.visible)


def device_meta(device: Device) -> DeviceMeta:
    return DeviceMeta(device.pk, str(device), device.room_id, device.vendor, device.model_name)




KIND_ORDER = {Channel.Kind.SWITCH: 0, Channel.Kind.LIGHT: 0, Channel.Kind.COVER: 0, Channel.Kind.METER: 1,
              Channel.Kind.SENSOR: 2, Channel.Kind.INPUT: 3, Channel.Kind.UNKNOWN: 4}


def in_order(channels) -> list[Channel]:
    """A device's channels with what it is for first: outputs, meters, sensors, inputs."""
    return sorted(channels, key=lambda c: (str(c.device).lower(), c.device_id, KIND_ORDER.get(c.kind, 9), c.order, c.pk))


# The columns cards, their order and their rooms are made of (card_context, device_meta,
# in_order, for_home, access.channel_room_pk). A page of cards loads only these: no
# Room objects, none of a device's raw JSON or encrypted credentials — and the last-known
# state only for devices the runtime here does not follow (render_cards fetches it).
CARD_COLUMNS = (
    "id", "device_id", "key", "kind", "name", "room_id", "order", "visible",
    "device__id", "device__name", "device__model_name", "device__model_code", "device__vendor", "device__mac",
    "device__room_id",
)
LAST_KNOWN_COLUMNS = ("last_state", "last_state_at", "device__online", "device__last_seen")


def card_columns(channels):
    """A channel queryset narrowed to what cards need (see CARD_COLUMNS): building ~450
    model instances is most of a home page's time, and every column counts."""
    return channels.select_related(None).select_related("device").only(*CARD_COLUMNS)


def _load_last_known(channels, m) -> None:
    """The stored state of channels loaded by card_columns whose device the runtime does
    not follow here (none when it does), in one query."""
    missing = {c.pk: c for c in channels if "last_state" not in c.__dict__
               and (m is None or m.store.get(c.device_id) is None)}
    if not missing:
        return
    rows = Channel.objects.filter(pk__in=missing).values_list("pk", *LAST_KNOWN_COLUMNS)
    for pk, state, state_at, online, last_seen in rows:
        channel = missing[pk]
        channel.last_state, channel.last_state_at = state, state_at
        channel.device.online, channel.device.last_seen = online, last_seen


def home_channels(user) -> list[Channel]:
    """The channels on a user's home page, in order, loaded for cards (card_columns). The
    wired inputs for_home leaves out are already left out in SQL, by the same rule over the
    same visible channels (a third fewer rows to turn into model instances); for_home
    still applies the rule, so it stays the one definition."""
    from devices import access

    visible = access.visible_channels(user)
    wired = Exists(access.visible_channels(user).filter(device_id=OuterRef("device_id"), kind__in=OUTPUT_KINDS))
    return for_home(card_columns(visible.exclude(Q(kind=Channel.Kind.INPUT, name="") & wired)))


def for_home(channels) -> list[Channel]:
    """The channels (of those a user sees) the home page shows; see shown_on_home."""
    channels = list(channels)
    with_outputs = {c.device_id for c in channels if c.kind in OUTPUT_KINDS}
    return in_order(c for c in channels if shown_on_home(c.kind, bool(c.name), c.device_id in with_outputs))


def display_name(channel: Channel) -> str:
    """What the household calls a channel: its own name, else its device's."""
    return channel.name or str(channel.device)


def card_context(channel: Channel, *, oob: bool = False, error: str = "", stored_event: bool = True) -> dict[str, Any]:
    """The context the channel-card partial is rendered with. `channel` must have its
    device loaded (select_related) — this runs in sync code only. `stored_event=False`
    leaves an input's last stored press to the caller (render_cards looks them all up in
    one query)."""
    meta = channel_meta(channel)
    m = manager()
    if m is not None and m.store.get(channel.device_id) is not None:
        # The runtime's own context builder, with names and rooms as the database has them
        # now (its catalogue catches up a moment later).
        for _attempt in range(3):
            try:
                context = m.card_context(meta)
                break
            except RuntimeError:  # the loop appended an event while we read: read again
                continue
        else:
            context = {"channel": meta, "state": None, "online": False, "stale": True, "updated_at": None,
                       "last_event": None}
        context["device"] = device_meta(channel.device)
    else:
        device = channel.device
        at = channel.last_state_at or device.last_seen
        context = {
            "channel": meta,
            "device": device_meta(device),
            "state": state_from_json(channel.last_state),
            "online": device.online,
            # Nobody in this process is following the device: whatever we show is what it
            # last told the runtime.
            "stale": True,
            "updated_at": at.timestamp() if at else None,
            "last_event": None,
        }
    if stored_event and context.get("last_event") is None and channel.kind == Channel.Kind.INPUT:
        # The runtime keeps recent presses in memory only; after a restart (or in another
        # process) the last stored one is still worth showing.
        stored = DeviceEvent.objects.filter(channel=channel).exclude(kind__in=NOT_PRESSES).first()
        if stored is not None:
            context["last_event"] = Event(device=channel.device.mac, channel=channel.key, kind=stored.kind,
                                          ts=stored.ts.timestamp())
    context["oob"] = oob
    context["error"] = error
    return context


NOT_PRESSES = ("online", "offline")


def render_card(channel: Channel, *, oob: bool = False, error: str = "") -> str:
    return card_html(card_context(channel, oob=oob, error=error))


def stored_presses(channel_pks) -> dict[int, tuple[str, datetime]]:
    """The newest stored press (kind, time) of each of these channels that has one, ordered
    as DeviceEvent's own ordering (-ts) would give it to .first() — one correlated
    subquery, not one query per channel."""
    channel_pks = list(channel_pks)
    if not channel_pks:
        return {}
    presses = DeviceEvent.objects.filter(channel=OuterRef("pk")).exclude(kind__in=NOT_PRESSES).order_by("-ts")
    rows = (Channel.objects.filter(pk__in=channel_pks)
            .annotate(press_kind=Subquery(presses.values("kind")[:1]), press_ts=Subquery(presses.values("ts")[:1]))
            .filter(press_ts__isnull=False).values_list("pk", "press_kind", "press_ts"))
    return {pk: (kind, ts) for pk, kind, ts in rows}


def render_cards(channels, *, oob: bool = False) -> list[str]:
    """The cards of many channels (a page, a socket's snapshot): the last stored presses
    of inputs the runtime has none of in memory come from one query, not one per card,
    and cards whose inputs did not change since they were last drawn are reused."""
    channels = list(channels)
    _load_last_known(channels, manager())
    contexts = [card_context(c, oob=oob, stored_event=False) for c in channels]
    wanted = {c.pk: (c, ctx) for c, ctx in zip(channels, contexts)
              if c.kind == Channel.Kind.INPUT and ctx.get("last_event") is None}
    for pk, (kind, ts) in stored_presses(wanted).items():
        channel, context = wanted[pk]
        context["last_event"] = Event(device=channel.device.mac, channel=channel.key, kind=kind, ts=ts.timestamp())
    today, zone = timezone.localdate(), timezone.get_current_timezone_name()
    return [card_html(context, today=today, zone=zone) for context in contexts]


# ----------------------------------------------------------------------------- card cache
# One entry per channel: (what the card was drawn from, its HTML without hx-swap-oob).
# Entries are replaced on every new render, dropped when the channel or its device is
# saved, deleted or forgotten by the runtime (see forget_cards), and the whole cache is
# cleared if it ever outgrows MAX_CARDS (channels deleted behind the ORM's back).
_cards: dict[int, tuple[tuple, str]] = {}
MAX_CARDS = 20_000
OOB_ATTRIBUTE = ' hx-swap-oob="true"'
_ARTICLE = "<article"


def card_key(context: dict[str, Any], today=None, zone=None) -> tuple:
    """Everything a card's HTML depends on. Two contexts with the same key render the
    same HTML, so a cached card is exactly what a fresh render would show now:

    * the channel's and device's names and rooms, the state, online/stale (compared by
      value: a poll that found the same values keeps the card);
    * the time shown as "last seen"/"last known" — only while the card shows it (offline
      or stale: an online card's time moves with every poll and is never shown);
    * an input's last press (the only kind that shows it);
    * the local date and time zone ("14:05" today is "3 Mar 14:05" tomorrow; "kWh today"
      starts again at midnight) and the day's energy baseline of the channel.
    """
    channel = context["channel"]
    online, stale = bool(context.get("online")), bool(context.get("stale"))
    return (
        channel, context.get("device"), context.get("state"), online, stale,
        context.get("updated_at") if (stale or not online) else None,
        context.get("last_event") if channel.kind == Channel.Kind.INPUT else None,
        timezone.localdate() if today is None else today,
        timezone.get_current_timezone_name() if zone is None else zone,
        _baselines.get(channel.pk),
    )


def with_oob(html: str) -> str:
    """The out-of-band form of a card (live updates, command answers): the partial puts
    hx-swap-oob first on the <article>, so both forms come from one render."""
    if not html.startswith(_ARTICLE) or html.startswith(_ARTICLE + OOB_ATTRIBUTE):
        return html
    oob = _ARTICLE + OOB_ATTRIBUTE + html[len(_ARTICLE):]
    return mark_safe(oob) if isinstance(html, SafeData) else oob


def card_html(context: dict[str, Any], *, today=None, zone=None) -> str:
    """The card for this context: the cached HTML when nothing it depends on changed,
    else a fresh render (which then replaces the cached one). Cards carrying a command's
    error are one-offs and bypass the cache."""
    oob = bool(context.get("oob"))
    if context.get("error"):
        return render_to_string(CARD_TEMPLATE, context)
    pk = context["channel"].pk
    key = card_key(context, today, zone)
    cached = _cards.get(pk)
    if cached is not None and cached[0] == key:
        html = cached[1]
    else:
        html = render_to_string(CARD_TEMPLATE, {**context, "oob": False})
        # Rendering may set the channel's energy baseline (first sight today): key the
        # entry by what the render left behind, unless the day turned meanwhile.
        after = card_key(context, None, zone)
        if after[7] == key[7]:
            if len(_cards) >= MAX_CARDS:
                _cards.clear()
            # The state as drawn, not the live object: were it ever changed in place, the
            # next lookup must see a difference.
            state = after[2]
            if state is not None and dataclasses.is_dataclass(state):
                after = (*after[:2], dataclasses.replace(state), *after[3:])
            _cards[pk] = (after, html)
    return with_oob(html) if oob else html


def forget_cards(*, channel_pk: int | None = None, device_pk: int | None = None) -> None:
    """Drop the cached card of a channel, or of every channel of a device."""
    if channel_pk is not None:
        _cards.pop(channel_pk, None)
    if device_pk is not None:
        for pk, (key, _html) in list(_cards.items()):
            if key[0].device_pk == device_pk:
                _cards.pop(pk, None)


async def wait_for_confirmation(device_pk: int, key: str, before: object, timeout: float = CONFIRM_TIMEOUT) -> None:
    """Shelly Gen2+ devices confirm a command by notification, after the command's own
    answer: wait (briefly) until the runtime has applied a new state for the channel, so
    the answer shows the device's confirmed state rather than the old one."""
    m = manager()
    if m is None:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = m.store.get(device_pk)
        if live is None or live.channels.get(key) is not before:
            return
        await asyncio.sleep(0.05)


def current_state_object(device_pk: int, key: str) -> object:
    m = manager()
    live = m.store.get(device_pk) if m is not None else None
    return live.channels.get(key) if live is not None else None


# ----------------------------------------------------------------------------- energy today
# "kWh today" = the device's energy counter now minus its value at local midnight. The
# midnight value comes from the first stored reading of the day; a process that has none
# (fresh install, counter just appeared) starts from the first value it sees. Kept in
# memory so the publisher can render it on the event loop without touching the database.
_baselines: dict[int, tuple[Any, float]] = {}
_seeded: dict[int, Any] = {}  # channel pk -> the day its baseline was looked up in the database
MAX_BASELINES = 10_000


def energy_today_wh(channel_pk: int, energy_wh: float | None) -> float | None:
    if energy_wh is None:
        return None
    today = timezone.localdate()
    day, base = _baselines.get(channel_pk, (None, None))
    if day != today or base is None or energy_wh < base:
        # A new day, a first sight, or a counter that went backwards (device reset).
        if len(_baselines) >= MAX_BASELINES:
            _baselines.clear()
            _seeded.clear()
        _baselines[channel_pk] = (today, energy_wh)
        return 0.0
    return energy_wh - base


def seed_day_baselines(channel_pks) -> None:
    """Load today's first energy readings for channels not seeded today (sync, DB)."""
    today = timezone.localdate()
    wanted = [pk for pk in channel_pks if _seeded.get(pk) != today]
    if not wanted:
        return
    midnight = timezone.make_aware(datetime.combine(today, datetime.min.time()))
    firsts = (Reading.objects.filter(channel_id__in=wanted, metric=Reading.Metric.ENERGY, ts__gte=midnight)
              .values("channel_id").annotate(first=Min("ts")))
    pairs = {(row["channel_id"], row["first"]) for row in firsts}
    if pairs:
        values = Reading.objects.filter(channel_id__in=[p for p, _ in pairs], metric=Reading.Metric.ENERGY,
                                        ts__in=[ts for _, ts in pairs]).values_list("channel_id", "ts", "value")
        for pk, ts, value in values:
            if (pk, ts) in pairs:
                day, base = _baselines.get(pk, (None, None))
                if day != today or base is None or value < base:
                    _baselines[pk] = (today, value)
    for pk in wanted:
        _seeded[pk] = today


# ----------------------------------------------------------------------------- colours
def colour_hex(state) -> str | None:
    """The light's colour as #rrggbb for a swatch and the colour picker, or None."""
    colour = getattr(state, "colour", None)
    mode = getattr(state, "colour_mode", None)
    if not colour:
        return None
    try:
        if mode == "hsv" and len(colour) >= 3:
            r, g, b = colorsys.hsv_to_rgb((colour[0] % 360) / 360.0, min(colour[1], 100) / 100.0, 1.0)
            rgb = (r * 255, g * 255, b * 255)
        elif mode in ("rgb", "rgbw") and len(colour) >= 3:
            rgb = colour[:3]
        else:
            return None
        return "#" + "".join(f"{max(0, min(255, round(float(v)))):02x}" for v in rgb)
    except (TypeError, ValueError):
        return None


def hex_to_hsv(text: str) -> tuple[float, float, float] | None:
    """'#ff8800' -> (h 0-360, s 0-100, v 0-100), or None when it is not a colour."""
    if not isinstance(text, str) or len(text) != 7 or text[0] != "#":
        return None
    try:
        r, g, b = (int(text[i:i + 2], 16) / 255.0 for i in (1, 3, 5))
    except ValueError:
        return None
    h, s, v = colorsys.rgb_to_hsv(r, g, b)
    return round(h * 360, 1), round(s * 100, 1), round(v * 100, 1)


# ----------------------------------------------------------------------------- power chart
# Drawn in a small coordinate space so the labels stay readable when a phone scales it down.
CHART_WIDTH, CHART_HEIGHT = 360, 110
CHART_BUCKET = 300  # seconds per point: 288 points for 24 h


@dataclass
class Series:
    name: str
    points: str  # SVG polyline points
    latest: float | None
    peak: float


def power_chart(channels, *, hours: int = 24, now: datetime | None = None) -> dict[str, Any] | None:
    """A server-rendered SVG chart of the last `hours` of stored power readings, one line
    per channel, averaged into 5-minute buckets (so 24 h is at most 288 points a line)."""
    now = now or timezone.now()
    start = now - timedelta(hours=hours)
    span = (now - start).total_seconds()
    by_channel: dict[int, dict[int, list[float]]] = {}
    rows = (Reading.objects.filter(channel__in=channels, metric=Reading.Metric.POWER, ts__gte=start, ts__lte=now)
            .values_list("channel_id", "ts", "value").order_by("ts")[:200_000])
    for pk, ts, value in rows:
        bucket = int((ts - start).total_seconds() // CHART_BUCKET)
        by_channel.setdefault(pk, {}).setdefault(bucket, []).append(value)
    if not by_channel:
        return None
    names = {c.pk: (c.name or c.key) for c in channels}
    averaged = {pk: {b: sum(v) / len(v) for b, v in buckets.items()} for pk, buckets in by_channel.items()}
    peak = max(max(b.values()) for b in averaged.values())
    top = _nice_ceiling(max(peak, 1.0))
    series = []
    for pk, buckets in sorted(averaged.items()):
        pts = []
        for bucket, value in sorted(buckets.items()):
            x = min(span, bucket * CHART_BUCKET + CHART_BUCKET / 2) / span * CHART_WIDTH
            y = CHART_HEIGHT - value / top * CHART_HEIGHT
            pts.append(f"{x:.1f},{y:.1f}")
        if len(pts) == 1:  # a lone point still deserves a visible mark
            x, y = pts[0].split(",")
            pts.append(f"{float(x) + 2:.1f},{y}")
        latest = buckets[max(buckets)]
        series.append(Series(names.get(pk, str(pk)), " ".join(pts), latest, max(buckets.values())))
    ticks = []
    for h in range(0, hours + 1, 6):
        at = start + timedelta(hours=h)
        ticks.append({"x": round(h / hours * CHART_WIDTH, 1), "label": timezone.localtime(at).strftime("%H:%M")})
    return {
        "width": CHART_WIDTH, "height": CHART_HEIGHT, "series": series, "top": top,
        "mid": top / 2, "mid_y": CHART_HEIGHT / 2, "ticks": ticks, "hours": hours,
    }


def _nice_ceiling(value: float) -> float:
    """1, 2, 5 × 10^n at or above value: axis labels people can read."""
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 5, 10):
        if value <= step * magnitude:
            return float(step * magnitude)
    return float(10 * magnitude)
