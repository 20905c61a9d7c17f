"""One request at a time per device, from every part of homedash in this process.

Real devices punish parallel requests: a myStrom's ESP8266 web server is tiny, and Shelly
firmware 2.x counts nonce slots and failed authentications. Discovery's probe, the
runtime's session, a user's command, the debug-log start/stop and a staff member's
credential check all build drivers of their own; before this module each driver had its
own lock, so they overlapped on the wire (seen with a device answering in 300 ms: a probe
in the middle of the runtime's poll and a user's command).

A *gate* is that one turn per device. ``gate_for(mac=..., host=..., port=...)`` returns it:

* keyed by the normalised MAC - the device's identity, whatever its address;
* and by the address (``host:port``) as a second key: whoever talks to an address without
  knowing which MAC answers there (a discovery probe, an "add by address") waits for the
  same turn as the session that follows the device at that address. A gate of a MAC and
  an address takes the MAC's turn first, then the address's; a gate of an address alone
  takes only that one. Nobody holds an address turn while waiting for a MAC turn, so the
  fixed order cannot deadlock.

Where a driver takes its gate: inside the driver, around each request (or each exchange
that belongs together, like a 404 and the probe that explains it). Callers hand the gate
to the driver and never take it themselves around a driver call - ``asyncio.Lock`` is not
reentrant, and a caller holding the gate while the driver waits for it would wait forever.

Registry: weakly held (a gate lives as long as some driver holds it), so a subnet scan or
a flood of forged announcements costs nothing once the probes are over. Safe across
event loops: each loop gets its own ``asyncio.Lock`` per key (``asyncio.Lock`` binds to the
loop that first waits on it; tests run many loops). All device traffic of a process runs
on one loop (daphne's, under ``serve``); the counters are shared across loops, so a second
loop that ever overlaps with the first shows up in ``max_in_flight``.

Scaled mode (runtime processes split the devices between them): the gate lives in the
worker that owns the device - every request to a device, discovery's probe included, must
then be sent to that worker rather than made where it is needed. Today the web process
and the runtime share one process, so this registry is that owner.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any

from .types import normalise_mac

__all__ = ["DeviceGate", "address_key", "gate_for", "stats"]


def address_key(host: str, port: int | None = None) -> str:
    """``host:port`` in one spelling: lower case, no IPv6 brackets, port 80 by default."""
    text = str(host or "").strip().lower()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return f"{text}:{int(port) if port else 80}"


class _Turn:
    """One key's turn (a MAC or an address): a lock per event loop and shared counters."""

    __slots__ = ("key", "in_flight", "max_in_flight", "taken", "_locks", "_owners", "_guard", "__weakref__")

    def __init__(self, key: str) -> None:
        self.key = key
        self.in_flight = 0
        self.max_in_flight = 0
        self.taken = 0
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()
        # Who holds the turn on each loop: taking it twice in one task is a bug that would
        # otherwise hang that device forever, so it raises instead.
        self._owners: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task] = weakref.WeakKeyDictionary()
        self._guard = threading.Lock()

    def _lock(self, loop: asyncio.AbstractEventLoop) -> asyncio.Lock:
        with self._guard:
            lock = self._locks.get(loop)
            if lock is None:
                lock = self._locks[loop] = asyncio.Lock()
            return lock

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is not None and self._owners.get(loop) is task:
            raise RuntimeError(f"device gate {self.key} taken twice by one task (it is not reentrant)")
        await self._lock(loop).acquire()
        if task is not None:
            self._owners[loop] = task
        self.in_flight += 1
        self.taken += 1
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight

    def release(self) -> None:
        loop = asyncio.get_running_loop()
        self.in_flight -= 1
        self._owners.pop(loop, None)
        self._lock(loop).release()

    def busy(self) -> bool:
        return self.in_flight > 0


class DeviceGate:
    """The turn of one device: ``async with gate:`` around one request (or one exchange).

    ``max_in_flight`` is the most holders the gate ever had at once (1 unless something
    is wrong), ``taken`` how many turns were taken - for tests and diagnostics.
    """

    __slots__ = ("mac", "address", "_turns", "__weakref__")

    def __init__(self, turns: tuple[_Turn, ...], mac: str | None = None, address: str | None = None) -> None:
        self.mac = mac
        self.address = address
        self._turns = turns

    async def __aenter__(self) -> DeviceGate:
        taken: list[_Turn] = []
        try:
            for turn in self._turns:
                await turn.acquire()
                taken.append(turn)
        except BaseException:
            for turn in reversed(taken):
                turn.release()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Exit runs in the task (and so on the loop) that entered: the same locks.
        for turn in reversed(self._turns):
            turn.release()

    @property
    def in_flight(self) -> int:
        return max(t.in_flight for t in self._turns)

    @property
    def max_in_flight(self) -> int:
        return max(t.max_in_flight for t in self._turns)

    @property
    def taken(self) -> int:
        return self._turns[0].taken

    def busy(self) -> bool:
        return any(t.busy() for t in self._turns)

    def __repr__(self) -> str:
        return f"<DeviceGate mac={self.mac} address={self.address} in_flight={self.in_flight}>"


_registry_guard = threading.Lock()
_turns: weakref.WeakValueDictionary[str, _Turn] = weakref.WeakValueDictionary()
_gates: weakref.WeakValueDictionary[tuple[str | None, str | None], DeviceGate] = weakref.WeakValueDictionary()


def _turn(key: str) -> _Turn:
    turn = _turns.get(key)
    if turn is None:
        turn = _turns[key] = _Turn(key)
    return turn


def gate_for(mac: Any = None, host: str | None = None, port: int | None = None) -> DeviceGate:
    """The gate of the device with this MAC (when known) at this address (when known).

    Give the MAC whenever the caller knows it from the database (the runtime, debug logs,
    views); a probe of an address gives only the address and so shares the turn of
    whatever device homedash follows there. Raises ValueError when given neither.
    """
    mac_key = normalise_mac(mac) if mac else None
    addr_key = address_key(host, port) if host else None
    if mac_key is None and addr_key is None:
        raise ValueError("a device gate needs a MAC or an address")
    with _registry_guard:
        gate = _gates.get((mac_key, addr_key))
        if gate is None:
            turns = tuple(_turn(k) for k in (f"mac:{mac_key}" if mac_key else None,
                                             f"addr:{addr_key}" if addr_key else None) if k)
            gate = _gates[(mac_key, addr_key)] = DeviceGate(turns, mac_key, addr_key)
        return gate


def stats() -> dict[str, dict[str, int]]:
    """Every live turn: ``{"mac:AABB..": {"in_flight": 0, "max_in_flight": 1, "taken": 12}}``."""
    with _registry_guard:
        items = list(_turns.items())
    return {key: {"in_flight": t.in_flight, "max_in_flight": t.max_in_flight, "taken": t.taken} for key, t in items}
