"""From state changes to browsers and to the database.

Publisher: a change goes out at once when the device has been quiet (a lone toggle reaches
the browser in milliseconds), while bursts from one device are coalesced to at most one
message per device per COALESCE seconds carrying the latest state. Fragments are rendered
once, from the same template partials the pages use, and the resulting string is sent to
the channel-layer groups of the device and of every room it shows up in — never rendered
per browser.

Every change the publisher hears of gets the next number of one sequence, and each message
carries the number of its device's newest change (`seq`): a page's socket reads the
sequence before drawing a snapshot, and a message numbered at or below that shows nothing
the snapshot does not (devices/consumers.py drops such messages if they arrive after it).

Persister: last-known state and readings are written in batches off the hot path, so a
restart shows last-known values at once (marked stale) without the database seeing every
watt of every poll.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import defaultdict
from dataclasses import dataclass

from devices.drivers.types import ChannelState, Event
from devices.runtime.state import Change, StateStore

log = logging.getLogger(__name__)

COALESCE = 0.1            # seconds: at most one message per device per this period
FLUSH_PERIOD = 2.0        # seconds between database batches
BULK = 200                # rows per UPDATE statement (SQLite's variable limit is far above)
READING_PERIOD = 60.0     # seconds: at most one stored reading per channel and metric
STATUS_PERIOD = 60.0      # seconds: raw status JSON written at most this often

READING_FIELDS = {
    "power_w": "power_w", "energy_wh": "energy_wh", "temperature_c": "temperature_c",
    "humidity_pct": "humidity_pct", "battery_pct": "battery_pct", "voltage_v": "voltage_v",
    "current_a": "current_a", "illuminance_lux": "illuminance_lux", "position_pct": "position_pct",
}


def device_group(pk: int) -> str:
    return f"device.{pk}"


def room_group(pk: int | None) -> str:
    return f"room.{pk if pk is not None else 'none'}"


@dataclass
class ChannelMeta:
    """The database's view of a channel, cached for rendering without the ORM."""

    pk: int
    device_pk: int
    key: str
    kind: str
    name: str
    room_pk: int | None
    visible: bool = True


@dataclass
class DeviceMeta:
    pk: int
    name: str
    room_pk: int | None
    vendor: str
    model_name: str


# Inputs wired to a device's own relay, dimmer or cover (the wall switch behind a Shelly)
# are plumbing, not something to look at every day: the home page leaves them to the
# device page unless someone named them. Stand-alone inputs (an i4, a button) stay.
OUTPUT_KINDS = frozenset({"switch", "cover", "light"})


def shown_on_home(kind: str, named: bool, outputs_beside: bool) -> bool:
    """Whether the home page shows a channel: `outputs_beside` = the same device has an
    output channel the same viewer sees."""
    return not (kind == "input" and not named and outputs_beside)


class Catalogue:
    """Names and rooms of devices and channels, refreshed by the manager from the database."""

    def __init__(self) -> None:
        self.devices: dict[int, DeviceMeta] = {}
        self.channels: dict[tuple[int, str], ChannelMeta] = {}

    def room_of(self, meta: ChannelMeta) -> int | None:
        if meta.room_pk is not None:
            return meta.room_pk
        device = self.devices.get(meta.device_pk)
        return device.room_pk if device else None

    def rooms_of(self, device_pk: int, keys) -> set[int | None]:
        rooms = set()
        for key in keys:
            meta = self.channels.get((device_pk, key))
            if meta is not None and meta.visible:
                rooms.add(self.room_of(meta))
        return rooms

    def on_home(self, device_pk: int, key: str, siblings) -> bool:
        """Whether the home page of anyone who sees this channel's room shows it.
        `siblings`: the keys of the device's other channels. An output in the same room is
        seen by everyone who sees the input there."""
        meta = self.channels.get((device_pk, key))
        if meta is None or not meta.visible:
            return False
        room = self.room_of(meta)
        beside = any(other.kind in OUTPUT_KINDS and other.visible and self.room_of(other) == room
                     for other in (self.channels.get((device_pk, k)) for k in siblings if k != key) if other)
        return shown_on_home(meta.kind, meta.name != meta.key, beside)


_STATE_FIELDS = tuple(f.name for f in dataclasses.fields(ChannelState))


def state_to_json(state: ChannelState) -> dict:
    # Field by field: dataclasses.asdict deep-copies every value and cost ~60 µs a
    # channel in the loop; only nested dataclasses (phases) need converting.
    data = {}
    for name in _STATE_FIELDS:
        value = getattr(state, name)
        if value is None:
            continue
        if isinstance(value, (list, tuple)) and value and dataclasses.is_dataclass(value[0]):
            value = [dataclasses.asdict(v) for v in value]
        elif dataclasses.is_dataclass(value):
            value = dataclasses.asdict(value)
        elif isinstance(value, tuple):
            value = list(value)
        data[name] = value
    return data


def _update_rows(model, fields, rows: list[tuple]) -> None:
    """UPDATE model SET fields... WHERE pk = last value, for every row, in one executemany;
    values go through each field's own conversion for the database in use."""
    if not rows:
        return
    from django.db import connection

    meta = model._meta
    columns = [meta.get_field(name) for name in fields]
    quote = connection.ops.quote_name
    sql = (f"UPDATE {quote(meta.db_table)} SET " + ", ".join(f"{quote(f.column)} = %s" for f in columns)
           + f" WHERE {quote(meta.pk.column)} = %s")
    prepared = [[f.get_db_prep_save(v, connection) for f, v in zip(columns, row[:-1])] + [row[-1]] for row in rows]
    with connection.cursor() as cursor:
        cursor.executemany(sql, prepared)


def state_from_json(data: dict) -> ChannelState | None:
    """Last-known state back from the database; ignores anything that no longer fits."""
    if not isinstance(data, dict) or not isinstance(data.get("key"), str) or not isinstance(data.get("kind"), str):
        return None
    names = {f.name for f in dataclasses.fields(ChannelState)}
    values = {k: v for k, v in data.items() if k in names}
    for tuple_field in ("colour", "errors"):
        if isinstance(values.get(tuple_field), list):
            values[tuple_field] = tuple(values[tuple_field])
    values.pop("phases", None)  # nested dataclasses are not worth restoring for a stale view
    try:
        return ChannelState(**values)
    except TypeError:
        return None


# One sequence for the process: a runtime started again continues it, so a number a page
# read before never looks newer than the new publisher's changes.
_SEQUENCE = [0]


class Publisher:
    def __init__(self, store: StateStore, catalogue: Catalogue, render, send, listening=None) -> None:
        """`render(device_pk, keys, presence) -> str` makes the HTML once;
        `send(groups, html, seq)` hands it to the channel layer; `listening(group) -> bool`,
        when given, says whether any page follows a group: cards nobody would receive
        are not rendered (pages and snapshots render what they need themselves)."""
        self.store = store
        self.catalogue = catalogue
        self.render = render
        self.send = send
        self.listening = listening
        self.unwatched = 0         # flushes with nobody to show them to
        self._pending: dict[int, set[str]] = defaultdict(set)
        self._presence: set[int] = set()
        self._last_sent: dict[int, float] = {}
        self._scheduled: dict[int, asyncio.TimerHandle | asyncio.Handle] = {}
        self.sent = 0
        # Per device, the number of its newest change (the sequence itself is _SEQUENCE).
        self._seq_of: dict[int, int] = {}
        store.subscribe(self.on_change)

    def on_change(self, change: Change) -> None:
        if not (change.channels or change.presence or change.events):
            return
        pk = change.pk
        # Numbered when heard, i.e. right after the store applied it: whatever reads the
        # state after reading `seq` sees this change.
        _SEQUENCE[0] += 1
        self._seq_of[pk] = _SEQUENCE[0]
        self._pending[pk] |= change.channels
        if change.presence:
            self._presence.add(pk)
        if change.events:
            # Events are shown on the input/button card: re-render those channels.
            self._pending[pk] |= {event.channel for event in change.events}
        if pk in self._scheduled:
            return
        loop = asyncio.get_running_loop()
        quiet_for = time.monotonic() - self._last_sent.get(pk, 0.0)
        if quiet_for >= COALESCE:
            # call_soon, not a direct send: changes applied in the same loop iteration
            # (several channels of one poll) still leave as one message.
            self._scheduled[pk] = loop.call_soon(self._flush, pk)
        else:
            self._scheduled[pk] = loop.call_later(COALESCE - quiet_for, self._flush, pk)

    @property
    def seq(self) -> int:
        """The number of the newest change heard (by any publisher of this process)."""
        return _SEQUENCE[0]

    def _flush(self, pk: int) -> None:
        self._scheduled.pop(pk, None)
        keys = self._pending.pop(pk, set())
        presence = pk in self._presence
        self._presence.discard(pk)
        live = self.store.get(pk)
        if live is None:
            return
        if presence:
            keys |= set(live.channels)
        if self.listening is not None:
            keys = self._watched(pk, keys, live.channels.keys())
            if not keys:
                self.unwatched += 1
                return
        try:
            html = self.render(pk, keys, presence)
        except Exception:
            log.exception("rendering the update of device %s failed", pk)
            return
        if not html:
            return
        groups = {device_group(pk)} | {room_group(room) for room in self.catalogue.rooms_of(pk, keys)}
        self._last_sent[pk] = time.monotonic()
        self.sent += 1
        # Drawn just now from the store, so it shows every change of the device numbered up
        # to its newest one.
        seq = self._seq_of.get(pk, self.seq)
        asyncio.get_running_loop().create_task(self.send(sorted(groups), html, seq))

    def _watched(self, pk: int, keys: set[str], siblings) -> set[str]:
        """The keys some open page shows: all of them when a device page is open, else
        those on the home page of a room someone follows."""
        if self.listening(device_group(pk)):
            return keys
        return {key for key in keys
                if (meta := self.catalogue.channels.get((pk, key))) is not None
                and self.listening(room_group(self.catalogue.room_of(meta)))
                and self.catalogue.on_home(pk, key, siblings)}

    def forget(self, pk: int) -> None:
        handle = self._scheduled.pop(pk, None)
        if handle is not None:
            handle.cancel()
        self._pending.pop(pk, None)
        self._last_sent.pop(pk, None)
        self._seq_of.pop(pk, None)


class Persister:
    """Collects changes and writes them in batches from a worker thread."""

    def __init__(self, store: StateStore, catalogue: Catalogue) -> None:
        self.store = store
        self.catalogue = catalogue
        self._dirty: dict[int, set[str]] = defaultdict(set)
        self._presence: set[int] = set()
        self._events: list[tuple[int, object]] = []
        self._last_reading: dict[tuple[int, str, str], float] = {}
        self._last_status: dict[int, float] = {}
        self._last_presence: dict[int, bool] = {}
        store.subscribe(self.on_change)

    def on_change(self, change: Change) -> None:
        if change.channels:
            self._dirty[change.pk] |= change.channels
        if change.presence:
            self._presence.add(change.pk)
            live = self.store.get(change.pk)
            # Coming online and going offline are events the household looks up later
            # ("when did the fridge plug drop off?"); a stale-to-fresh flip is not.
            if live is not None and self._last_presence.get(change.pk) is not live.online:
                self._last_presence[change.pk] = live.online
                self._events.append((change.pk, Event(device=live.mac, channel="", kind="online" if live.online else "offline")))
        for event in change.events:
            self._events.append((change.pk, event))
        # Readings are due by time, not by change: note the device so flush() looks at it.
        self._dirty.setdefault(change.pk, set())

    def take_batch(self, now: float | None = None) -> dict:
        """Everything to write now, as plain data (no ORM), so the write can happen in a
        thread while the loop goes on."""
        now = time.time() if now is None else now
        batch = {"channels": [], "devices": [], "readings": [], "events": []}
        dirty, self._dirty = self._dirty, defaultdict(set)
        presence, self._presence = self._presence, set()
        events, self._events = self._events, []
        for pk in set(dirty) | presence:
            live = self.store.get(pk)
            if live is None:
                continue
            raw = None
            if now - self._last_status.get(pk, 0.0) >= STATUS_PERIOD and live.raw_status:
                raw = live.raw_status
                self._last_status[pk] = now
            batch["devices"].append((pk, live.online, live.updated_at, raw))
            for key in dirty.get(pk, ()):
                state = live.channels.get(key)
                if state is not None:
                    batch["channels"].append((pk, key, state.kind, state_to_json(state), live.updated_at))
            for key, state in live.channels.items():
                for attr, metric in READING_FIELDS.items():
                    value = getattr(state, attr)
                    if value is None:
                        continue
                    slot = (pk, key, metric)
                    if now - self._last_reading.get(slot, 0.0) >= READING_PERIOD:
                        self._last_reading[slot] = now
                        batch["readings"].append((pk, key, state.kind, metric, float(value), now))
        for pk, event in events:
            batch["events"].append((pk, event.channel, event.kind, event.value, event.ts))
        return batch

    @staticmethod
    def write_batch(batch: dict) -> dict[tuple[int, str], int]:
        """Runs in a thread. Returns pks of channels it had to create."""
        from datetime import datetime, timezone as tz

        from django.db import transaction

        from devices.models import Channel, Device, DeviceEvent, Reading

        def when(ts):
            return datetime.fromtimestamp(ts, tz.utc) if ts else None

        created: dict[tuple[int, str], int] = {}
        with transaction.atomic():
            channel_pks: dict[tuple[int, str], int] = {}
            wanted = {(pk, key, kind) for pk, key, kind, *_ in batch["channels"]} | {
                (pk, key, kind) for pk, key, kind, *_ in batch["readings"]}
            device_pks = {pk for pk, *_ in wanted} | {pk for pk, *_ in batch["events"]}
            if device_pks:
                for row in Channel.objects.filter(device_id__in=device_pks).values("pk", "device_id", "key"):
                    channel_pks[(row["device_id"], row["key"])] = row["pk"]
            # A device deleted meanwhile takes its pending writes with it.
            existing_devices = set(Device.objects.filter(pk__in=device_pks).values_list("pk", flat=True))
            new, seen = [], set()
            for pk, key, kind in sorted(wanted):
                if (pk, key) not in channel_pks and pk in existing_devices and (pk, key) not in seen:
                    seen.add((pk, key))
                    kind = kind if kind in Channel.Kind.values else (
                        "sensor" if kind in ("pir", "motion") else "input" if kind == "button" else Channel.Kind.UNKNOWN)
                    new.append(Channel(device_id=pk, key=key, kind=kind, order=len(channel_pks) + len(new)))
            # bulk_create sends no signals: the runtime refreshes its own catalogue after this.
            for channel in Channel.objects.bulk_create(new):
                channel_pks[(channel.device_id, channel.key)] = created[(channel.device_id, channel.key)] = channel.pk
            # Plain executemany, not one ORM query per row (nor bulk_update's CASE WHEN, which
            # is no cheaper): this runs in a thread, and the ORM's Python work per row holds
            # the GIL the event loop needs. Per-row updates of 100 channels and 50 devices
            # took ~100 ms of CPU and stalled every open page that long every FLUSH_PERIOD
            # (bench/ item 1, p99).
            _update_rows(Channel, ("last_state", "last_state_at"),
                         [(data, when(at), channel_pks[(pk, key)])
                          for pk, key, _kind, data, at in batch["channels"] if (pk, key) in channel_pks])
            devices: dict[tuple[str, ...], list[tuple]] = defaultdict(list)
            for pk, online, at, raw in batch["devices"]:
                fields, values = ["online"], [online]
                if at:
                    fields.append("last_seen")
                    values.append(when(at))
                if raw is not None:
                    fields.append("raw_status")
                    values.append(raw)
                devices[tuple(fields)].append((*values, pk))
            for fields, rows in devices.items():
                _update_rows(Device, fields, rows)
            Reading.objects.bulk_create(
                Reading(channel_id=channel_pks[(pk, key)], metric=metric, value=value, ts=when(ts))
                for pk, key, _kind, metric, value, ts in batch["readings"] if (pk, key) in channel_pks
            )
            DeviceEvent.objects.bulk_create(
                DeviceEvent(device_id=pk, channel_id=channel_pks.get((pk, channel)), kind=str(kind)[:40],
                            detail="" if value is None else str(value)[:300], ts=when(ts))
                for pk, channel, kind, value, ts in batch["events"] if pk in existing_devices
            )
        return created
