"""Live state: what every device and channel looks like right now, in memory.

The store is the single place state changes are applied. It compares each new reading with
what it already has, keeps only real changes, and tells its listeners (the publisher, the
persister) which channels changed — so a poll that finds nothing new costs one comparison
per channel and sends nothing anywhere.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from devices.drivers.types import ChannelState, Event, SystemState

# Values that change continuously and are not worth a browser update on their own at full
# precision: compare them rounded, so a 0.01 W wobble is not a "change".
_ROUNDING = {
    "power_w": 1, "energy_wh": 0, "returned_energy_wh": 0, "voltage_v": 0, "current_a": 2,
    "temperature_c": 1, "humidity_pct": 0, "battery_pct": 0, "illuminance_lux": 0,
    "power_factor": 2, "frequency_hz": 1, "battery_v": 2, "position_pct": 0, "brightness_pct": 0,
}
EVENT_HISTORY = 50  # recent events kept per device for the device page


def _rounded(state: ChannelState) -> tuple:
    values = []
    for f in dataclasses.fields(state):
        value = getattr(state, f.name)
        digits = _ROUNDING.get(f.name)
        if digits is not None and isinstance(value, float):
            value = round(value, digits)
        values.append(value)
    return tuple(values)


@dataclass
class Health:
    """How homedash is reaching the device; shown on the device page."""

    mode: str = "poll"  # poll | push | sleeping
    connected: bool = False
    last_poll: float | None = None
    last_push: float | None = None
    last_ok: float | None = None
    reconnects: int = 0
    failures_in_row: int = 0
    last_error: str = ""
    last_error_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class DeviceLive:
    pk: int
    mac: str
    channels: dict[str, ChannelState] = field(default_factory=dict)
    system: SystemState = field(default_factory=SystemState)
    online: bool = False
    # Last-known values loaded from the database after a restart are "stale" until the
    # device answers again.
    stale: bool = True
    updated_at: float | None = None
    health: Health = field(default_factory=Health)
    raw_status: dict[str, Any] = field(default_factory=dict)
    events: deque[Event] = field(default_factory=lambda: deque(maxlen=EVENT_HISTORY))


@dataclass(frozen=True)
class Change:
    """What one apply() changed: channel keys, plus whether online/stale flipped."""

    pk: int
    channels: frozenset[str]
    presence: bool = False
    events: tuple[Event, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.channels or self.presence or self.events)


Listener = Callable[[Change], None]


class StateStore:
    def __init__(self) -> None:
        self.devices: dict[int, DeviceLive] = {}
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _emit(self, change: Change) -> None:
        if change:
            for listener in self._listeners:
                listener(change)

    def ensure(self, pk: int, mac: str) -> DeviceLive:
        live = self.devices.get(pk)
        if live is None:
            live = self.devices[pk] = DeviceLive(pk=pk, mac=mac)
        return live

    def forget(self, pk: int) -> None:
        self.devices.pop(pk, None)

    def get(self, pk: int) -> DeviceLive | None:
        return self.devices.get(pk)

    def load_last_known(self, pk: int, mac: str, channels: Iterable[ChannelState], at: float | None,
                        events: Iterable[Event] = (), online: bool = False) -> None:
        """Seed from the database at start: shown at once, marked stale; `events` are the
        last stored presses, so input cards keep showing them; `online` is how the device
        was when last seen (a stale online device shows as "last known", not "offline",
        until it answers or fails twice)."""
        live = self.ensure(pk, mac)
        live.online = online
        for state in channels:
            live.channels.setdefault(state.key, state)
        if not live.events:
            live.events.extend(events)
        live.updated_at = at
        live.stale = True

    def apply(
        self,
        pk: int,
        channels: Iterable[ChannelState] = (),
        *,
        system: SystemState | None = None,
        raw_status: dict[str, Any] | None = None,
        events: Iterable[Event] = (),
        source: str = "poll",
        now: float | None = None,
    ) -> Change:
        """A fresh reading from the device: it is online and nothing about it is stale."""
        live = self.devices[pk]
        now = time.time() if now is None else now
        changed = set()
        for state in channels:
            old = live.channels.get(state.key)
            if old is None or _rounded(old) != _rounded(state):
                changed.add(state.key)
            live.channels[state.key] = state
        if system is not None:
            live.system = system
        if raw_status is not None:
            live.raw_status = raw_status
        presence = not live.online or live.stale
        live.online, live.stale, live.updated_at = True, False, now
        health = live.health
        health.failures_in_row = 0
        health.last_ok = now
        if source == "push":
            health.last_push = now
        else:
            health.last_poll = now
        new_events = tuple(events)
        live.events.extend(new_events)
        change = Change(pk, frozenset(changed), presence, new_events)
        self._emit(change)
        return change

    def record_events(self, pk: int, events: Iterable[Event]) -> Change:
        live = self.devices[pk]
        new_events = tuple(events)
        live.events.extend(new_events)
        change = Change(pk, frozenset(), False, new_events)
        self._emit(change)
        return change

    def failure(self, pk: int, error: str, *, offline_after: int = 2, now: float | None = None) -> Change:
        """A failed poll or a dropped connection. One failure is a hiccup; the device is
        declared offline only after `offline_after` in a row (hysteresis), so a single lost
        packet does not make the card flicker."""
        live = self.devices[pk]
        now = time.time() if now is None else now
        health = live.health
        health.failures_in_row += 1
        health.last_error, health.last_error_at = error[:300], now
        if live.online and health.failures_in_row >= offline_after:
            live.online = False
            change = Change(pk, frozenset(), True)
            self._emit(change)
            return change
        return Change(pk, frozenset())

    def set_presence(self, pk: int, *, online: bool) -> Change:
        live = self.devices[pk]
        if live.online == online:
            return Change(pk, frozenset())
        live.online = online
        change = Change(pk, frozenset(), True)
        self._emit(change)
        return change
