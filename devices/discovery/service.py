"""The discovery service: the myStrom announcement listener, the Shelly mDNS browser, the
subnet scan and manual add, all ending in the inbox, with a hook for whoever wants to know
(the runtime, to follow a device that moved; the publisher, to show a new one).

Lifecycle: ``start()`` opens the sockets, ``stop()`` closes every one of them and cancels
every probe. ``serve(runtime)`` is the runtime-service form: start, keep retrying a part
that could not start (the network may come up after homedash does), stop when the
runtime stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ipaddress
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpx
from asgiref.sync import sync_to_async
from django.core.exceptions import ValidationError

from . import inbox
from .identify import Candidate, ProbeLimiter, make_probe_client, parse_ip
from .inbox import Outcome
from .mdns import ShellyBrowser
from .mystrom_udp import MyStromListener
from .scan import SCAN_CONCURRENCY, ScanReport, add_by_address, scan_subnet

log = logging.getLogger(__name__)

Callback = Callable[[Outcome], Any]  # may return an awaitable
RETRY_FAILED_PARTS = 60.0  # seconds between attempts to start a listener that failed
# New devices heard about from the LAN (announcements, mDNS), per source address: one per
# window. A real device has an address of its own; a flood of invented MACs from one
# machine becomes one inbox entry per window instead of one per packet. Staff's scans and
# manual adds are not limited.
NEW_PER_SOURCE_WINDOW = 300.0
NEW_SOURCES_REMEMBERED = 4096
LAN_PATHS = frozenset({"udp", "mdns"})
PRUNE_EVERY = 3600.0  # seconds between sweeps of inbox entries not seen for days

_current: Discovery | None = None


def current() -> Discovery | None:
    """The discovery service running in this process, if any (views use it to scan or
    add a device so the runtime hears about it at once)."""
    return _current


def _setting(source: Any, name: str, default: Any) -> Any:
    if isinstance(source, dict):
        return source.get(name, default)
    return getattr(source, name, default)


class Discovery:
    """Ties the listeners to the inbox. Construct with ``Discovery.from_settings()``."""

    def __init__(
        self,
        *,
        udp: bool = True,
        mdns: bool = True,
        bind: str = "0.0.0.0",
        port: int = 7979,
        device_port: int = 80,
        mdns_interfaces: Iterable[str] = (),
        allow_loopback: bool = False,
        probe_window: float = 60.0,
        refresh_after: float = 30 * 60.0,
        max_probes: int = 8,
        client: httpx.AsyncClient | None = None,
        zeroconf: Any = None,
    ) -> None:
        self.allow_loopback = allow_loopback
        self._own_client = client is None
        self.client = client or make_probe_client()
        self._callbacks: list[tuple[Callback, frozenset[str] | None]] = []
        self.udp: MyStromListener | None = None
        self.mdns: ShellyBrowser | None = None
        if udp:
            self.udp = MyStromListener(
                self.client,
                self.found,
                bind=bind,
                port=port,
                device_port=device_port,
                allow_loopback=allow_loopback,
                probe_window=probe_window,
                refresh_after=refresh_after,
                max_probes=max_probes,
                known=sync_to_async(inbox.known_device),
            )
        if mdns:
            self.mdns = ShellyBrowser(
                self.client,
                self.found,
                interfaces=_valid_interfaces(mdns_interfaces),
                allow_loopback=allow_loopback,
                probe_window=probe_window,
                max_probes=max_probes,
                zeroconf=zeroconf,
            )
        self.errors: dict[str, str] = {}
        self.new_per_source = ProbeLimiter(window=NEW_PER_SOURCE_WINDOW, max_keys=NEW_SOURCES_REMEMBERED)
        self._limit_lock = threading.Lock()  # record runs in a worker thread
        self.limited = 0  # new candidates refused by the per-source limit
        self._pruned_at: float | None = None

    @classmethod
    def from_settings(cls, source: Any = None, **overrides: Any) -> Discovery:
        """From Django settings (or any object/dict with the same names)."""
        if source is None:
            from django.conf import settings as source  # noqa: N813 - it is the settings object
        options: dict[str, Any] = {
            "bind": _setting(source, "DISCOVERY_BIND", "0.0.0.0"),
            "port": _setting(source, "DISCOVERY_PORT", 7979),
            "mdns_interfaces": _setting(source, "MDNS_INTERFACES", []),
            "allow_loopback": _setting(source, "ALLOW_LOOPBACK_DEVICES", False),
        }
        options.update(overrides)
        return cls(**options)

    # ------------------------------------------------------------------ hooks

    def subscribe(self, callback: Callback, kinds: Iterable[str] | None = None) -> Callable[[], None]:
        """Call ``callback(outcome)`` after each recorded device (``kinds`` filters:
        "created", "moved", "unchanged"). Sync or async; its errors are logged, never
        raised into discovery. Returns a function that unsubscribes."""
        entry = (callback, frozenset(kinds) if kinds is not None else None)
        self._callbacks.append(entry)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._callbacks.remove(entry)

        return unsubscribe

    async def _notify(self, outcome: Outcome) -> None:
        for callback, kinds in list(self._callbacks):
            if kinds is not None and outcome.kind not in kinds:
                continue
            try:
                result = callback(outcome)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("discovery subscriber %r failed on %s", callback, outcome.mac)

    async def found(self, candidate: Candidate) -> Outcome | None:
        """Record one candidate and tell the subscribers. The listeners call this."""
        try:
            outcome = await sync_to_async(self._record)(candidate)
        except (TooManyNew, inbox.InboxFull) as exc:
            # A flood: one line per refused packet would be a flood of its own.
            log.debug("discovered device not stored: %s", exc)
            return None
        except inbox.InboxRefused as exc:
            log.info("discovered device not stored: %s", exc)
            return None
        await self._notify(outcome)
        return outcome

    def _record(self, candidate: Candidate) -> Outcome:
        if candidate.found_by in LAN_PATHS and not self._admit_new(candidate):
            self.limited += 1
            raise TooManyNew(f"{candidate.host} already brought a new device in the last {NEW_PER_SOURCE_WINDOW:.0f} s")
        return inbox.record_candidate(candidate)

    def _admit_new(self, candidate: Candidate) -> bool:
        """Known MACs always pass (a known device is updated, never created); a new one
        counts against its source address."""
        from devices.models import Device, normalise_mac

        try:
            mac = normalise_mac(candidate.mac or "")
        except ValidationError:
            return True  # inbox.record refuses it with the reason
        if Device.objects.filter(mac=mac).exists():
            return True
        key = candidate.host
        if self.allow_loopback and (ip := parse_ip(candidate.host)) is not None and ip.is_loopback:
            # Simulators (tests, the demo) share one loopback address on many ports.
            key = f"{candidate.host}:{candidate.port}"
        with self._limit_lock:
            return self.new_per_source.allow(key)

    async def prune(self) -> int:
        """Forget inbox entries not seen for days (inbox.prune_inbox); run hourly by serve."""
        self._pruned_at = time.monotonic()
        try:
            return await sync_to_async(inbox.prune_inbox)()
        except Exception:
            log.exception("pruning the inbox failed")
            return 0

    # ------------------------------------------------------------------ lifecycle

    @property
    def udp_port(self) -> int | None:
        return self.udp.port if self.udp is not None else None

    async def start(self) -> None:
        """Open what is enabled. A part that cannot start is logged and retried by
        ``serve``; if nothing at all could start, the error is raised."""
        global _current
        if self._own_client and self.client.is_closed:
            # Started again after a stop: the old client is gone with the old sockets.
            self.client = make_probe_client()
            for part in (self.udp, self.mdns):
                if part is not None:
                    part.client = self.client
        await self._start_parts()
        enabled = [p for p in (self.udp, self.mdns) if p is not None]
        if enabled and not any(p.running for p in enabled):
            errors = "; ".join(f"{k}: {v}" for k, v in self.errors.items())
            await self.stop()
            raise OSError(f"discovery could not start ({errors})")
        _current = self

    async def _start_parts(self) -> None:
        for name, part in (("udp", self.udp), ("mdns", self.mdns)):
            if part is None or part.running:
                continue
            try:
                await part.start()
                self.errors.pop(name, None)
            except (OSError, RuntimeError, ValueError) as exc:
                # EADDRINUSE from a tool without SO_REUSEPORT, no multicast interface yet...
                self.errors[name] = str(exc)[:200]
                log.warning("discovery: %s could not start: %s", name, exc)
                with contextlib.suppress(Exception):
                    await part.stop()

    async def stop(self) -> None:
        global _current
        if _current is self:
            _current = None
        for part in (self.mdns, self.udp):
            if part is not None:
                with contextlib.suppress(Exception):
                    await part.stop()
        if self._own_client:
            with contextlib.suppress(Exception):
                await self.client.aclose()

    async def serve(self, runtime: Any) -> None:
        """Runtime service: run until ``runtime.stopping`` (or an Event) is set."""
        stopping: asyncio.Event = getattr(runtime, "stopping", runtime)
        await self.start()
        try:
            await self.prune()
            while not stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), RETRY_FAILED_PARTS)
                if self.errors and not stopping.is_set():
                    await self._start_parts()
                if not stopping.is_set() and time.monotonic() - (self._pruned_at or 0.0) >= PRUNE_EVERY:
                    await self.prune()
        finally:
            await self.stop()

    async def __aenter__(self) -> Discovery:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def status(self) -> dict[str, Any]:
        """For a status page: what runs, what failed, what it has seen."""
        return {
            "udp": None if self.udp is None else {
                "running": self.udp.running, "port": self.udp.port, "packets": self.udp.packets,
                "rejected": self.udp.rejected, "probes": self.udp.probes, "dropped": self.udp.dropped,
                "devices_heard": len(self.udp.heard()),
            },
            "mdns": None if self.mdns is None else {
                "running": self.mdns.running, "sightings": self.mdns.sightings,
                "probes": self.mdns.probes, "dropped": self.mdns.dropped,
            },
            "errors": dict(self.errors),
            "new_devices_limited": self.limited,
        }

    # ------------------------------------------------------------------ on request

    async def scan(self, cidr: str, *, port: int = 80, concurrency: int = SCAN_CONCURRENCY) -> tuple[ScanReport, list[Outcome]]:
        report = await scan_subnet(self.client, cidr, port=port, concurrency=concurrency, allow_loopback=self.allow_loopback)
        outcomes = [o for o in [await self.found(c) for c in report.found] if o is not None]
        return report, outcomes

    async def add(self, host: str, port: int = 80, *, token: str | None = None, request: Any = None) -> Outcome:
        candidate = await add_by_address(self.client, host, port, token=token, allow_loopback=self.allow_loopback)
        outcome = await sync_to_async(inbox.record_candidate)(candidate, request=request)
        await self._notify(outcome)
        return outcome


class TooManyNew(inbox.InboxRefused):
    """A source address brought more new devices than the per-source limit allows."""


def _valid_interfaces(values: Iterable[str]) -> list[str]:
    """HOMEDASH_MDNS_INTERFACES: interface IP addresses; empty means all interfaces."""
    out = []
    for value in values or ():
        try:
            out.append(str(ipaddress.ip_address(str(value).strip())))
        except ValueError:
            log.warning("HOMEDASH_MDNS_INTERFACES: %r is not an IP address; ignored", value)
    return out


# ---------------------------------------------------------------------- without a service


async def scan_and_record(cidr: str, *, port: int = 80, concurrency: int = SCAN_CONCURRENCY) -> tuple[ScanReport, list[Outcome]]:
    """Scan from any process: through the running service if there is one (so its
    subscribers hear about it), else with a client of its own."""
    running = current()
    if running is not None:
        return await running.scan(cidr, port=port, concurrency=concurrency)
    from django.conf import settings

    async with make_probe_client() as client:
        report = await scan_subnet(client, cidr, port=port, concurrency=concurrency, allow_loopback=settings.ALLOW_LOOPBACK_DEVICES)
    record = sync_to_async(inbox.record_candidate)
    outcomes = []
    for candidate in report.found:
        with contextlib.suppress(inbox.InboxRefused):
            outcomes.append(await record(candidate))
    return report, outcomes


async def add_device(host: str, port: int = 80, *, token: str | None = None, request: Any = None) -> Outcome:
    """Manual add from any process. Raises AddressRefused / NotADevice with a message for
    the household."""
    running = current()
    if running is not None:
        return await running.add(host, port, token=token, request=request)
    from django.conf import settings

    async with make_probe_client() as client:
        candidate = await add_by_address(client, host, port, token=token, allow_loopback=settings.ALLOW_LOOPBACK_DEVICES)
    return await sync_to_async(inbox.record_candidate)(candidate, request=request)


def services(
    runtime_settings: Any = None,
    *,
    subscribers: Iterable[Callback] = (),
    **overrides: Any,
) -> list[tuple[str, Callable[[Any], Awaitable[None]]]]:
    """What the runtime registers: ``for name, fn in services(settings):
    runtime.add_service(name, fn)``. Empty when HOMEDASH_DISCOVERY is off.

    Each start builds a fresh ``Discovery`` (the runtime restarts a crashed service), and
    ``subscribers`` are attached to it; the running instance is ``current()``.
    ``overrides`` go to ``Discovery`` (e.g. ``mdns=False``, ``probe_window=30``).
    """
    if runtime_settings is None:
        from django.conf import settings as runtime_settings  # noqa: N813
    if not _setting(runtime_settings, "DISCOVERY", True):
        return []
    callbacks = list(subscribers)

    async def discovery_service(runtime: Any) -> None:
        discovery = Discovery.from_settings(runtime_settings, **overrides)
        for callback in callbacks:
            discovery.subscribe(callback)
        await discovery.serve(runtime)

    return [("discovery", discovery_service)]


__all__ = ["Discovery", "add_device", "current", "scan_and_record", "services"]
