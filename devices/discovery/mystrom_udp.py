"""myStrom devices announce themselves on UDP port 7979 every ~5 s: 8-byte records of
6-byte MAC, type byte, flags byte (reference mystrom.md §1.2). The packet carries no IP;
the datagram's source address is the device.

An announcement is only a claim. Each MAC is probed over HTTP (``/api/v1/info``, falling
back to ``/info.json``) to learn whether something answers there with that MAC, and its
firmware — at most once per MAC per probe window, a bounded number at a time, and again
only when the address changes or the last answer has grown old. Forged packets therefore
cost a bounded table entry and, at worst, one small GET per window.

A stored token goes only to the device's approved address (the one in the database), and
there it goes with the first request: a token-protected device refuses a tokenless one
anyway. Announced from anywhere else, a known MAC is probed without any token, and for a
device with credentials the inbox turns whatever comes back into a pending move for staff
to confirm (see inbox.py and docs/security.md): an answer from a new address proves nothing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from devices.drivers.errors import AuthRequired, DeviceError, WrongCredentials
from devices.drivers.mystrom import MYSTROM_TYPES
from devices.drivers.types import DeviceInfo

from .identify import Candidate, ProbeSlots, address_allowed, describe_error, identify, identify_mystrom

if TYPE_CHECKING:
    from .inbox import KnownDevice

log = logging.getLogger(__name__)

RECORD_SIZE = 8
# Buttons put one record in a packet, gateways/mesh parents a few; 32 is far beyond any
# real packet and keeps a hostile one from costing more than a glance.
MAX_RECORDS = 32

FLAG_MESH_CHILD = 0x01
FLAG_REGISTERED = 0x02
FLAG_CLOUD = 0x04
FLAG_RESTARTED = 0x08  # pymystrom's reading; not in the official picture

# Defaults; the Discovery service passes its own.
PROBE_WINDOW = 60.0  # seconds between two probes of one MAC
REFRESH_AFTER = 30 * 60.0  # re-probe a device that stayed put, to keep firmware/last seen fresh
MAX_PROBES = 8  # probes in flight at once
MAX_DEVICES = 1024  # MACs remembered; least recently heard forgotten first


@dataclass(frozen=True, slots=True)
class Announcement:
    mac: str  # 12 upper-case hex digits
    type_code: int
    flags: int

    @property
    def mesh_child(self) -> bool:
        return bool(self.flags & FLAG_MESH_CHILD)

    @property
    def registered(self) -> bool:
        return bool(self.flags & FLAG_REGISTERED)

    @property
    def cloud_connected(self) -> bool:
        return bool(self.flags & FLAG_CLOUD)

    @property
    def restarted(self) -> bool:
        return bool(self.flags & FLAG_RESTARTED)

    @property
    def model(self) -> str:
        known = MYSTROM_TYPES.get(self.type_code)
        return known[0] if known else str(self.type_code)

    def as_dict(self) -> dict[str, object]:
        return {
            "mac": self.mac,
            "type": self.type_code,
            "flags": self.flags,
            "mesh_child": self.mesh_child,
            "registered": self.registered,
            "cloud_connected": self.cloud_connected,
            "restarted": self.restarted,
        }


def _usable_mac(raw: bytes) -> bool:
    # All-zero and all-ones are placeholders, and a set multicast bit (bit 0 of the first
    # octet) never names a single network card.
    return raw != b"\x00" * 6 and raw != b"\xff" * 6 and not raw[0] & 0x01


def parse_announcement(data: bytes) -> list[Announcement]:
    """Decode a 7979 datagram into its records, the sender's first. Anything that is not a
    whole number of 8-byte records (or is absurdly long) is an empty list, never an error.
    Records with placeholder/multicast MACs are skipped; if the sender's own record is one
    of them the whole packet is dropped, because the rest cannot be attributed."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        return []
    data = bytes(data)
    if not data or len(data) % RECORD_SIZE or len(data) > RECORD_SIZE * MAX_RECORDS:
        return []
    records: list[Announcement] = []
    for offset in range(0, len(data), RECORD_SIZE):
        chunk = data[offset : offset + RECORD_SIZE]
        mac = chunk[:6]
        if not _usable_mac(mac):
            if offset == 0:
                return []
            continue
        records.append(Announcement(mac=mac.hex().upper(), type_code=chunk[6], flags=chunk[7]))
    return records


def info_from_announcement(ann: Announcement, *, auth_required: bool) -> DeviceInfo:
    """What the announcement alone says, for a device whose HTTP API will not tell us more
    (a token is set). The runtime fills in the rest once the household gives the token."""
    code, name, kind = MYSTROM_TYPES.get(ann.type_code, (str(ann.type_code), f"myStrom device ({ann.type_code})", "generic"))
    return DeviceInfo(
        vendor="mystrom",
        mac=ann.mac,
        generation=0,
        model=code,
        model_name=name,
        firmware="",
        auth_enabled=auth_required,
        type_code=ann.type_code,
        kind=kind,
        sleeping=kind in ("button", "button_plus"),
        raw={"announcement": ann.as_dict()},
    )


def open_announcement_socket(bind: str, port: int) -> socket.socket:
    """A UDP socket on (bind, port) that coexists with Home Assistant, node-red, Homey and
    friends: they all bind 0.0.0.0:7979, and without SO_REUSEADDR + SO_REUSEPORT the second
    one to start fails with EADDRINUSE. (asyncio refuses ``reuse_address`` for UDP, so the
    socket is made here and handed over.)"""
    family = socket.AF_INET6 if ipaddress.ip_address(bind).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((bind, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class _AnnouncementProtocol(asyncio.DatagramProtocol):
    def __init__(self, handle: Callable[[bytes, str], None]) -> None:
        self.handle = handle
        self.closed = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        try:
            self.handle(data, str(addr[0]))
        except Exception:  # one bad packet must not close the listener
            log.exception("myStrom announcement from %s could not be handled", addr[0])

    def error_received(self, exc: Exception) -> None:
        log.debug("myStrom announcement socket: %s", exc)


@dataclass(slots=True)
class _Heard:
    host: str
    last_heard: float
    last_probe: float | None = None
    answered_host: str | None = None  # where the last probe got an answer
    answered_at: float | None = None


Found = Callable[[Candidate], Awaitable[None]]
KnownLookup = Callable[[str], Awaitable["KnownDevice | None"]]


class MyStromListener:
    """Listens for announcements and hands each confirmed device to ``on_found``."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        on_found: Found,
        *,
        bind: str = "0.0.0.0",
        port: int = 7979,
        device_port: int = 80,
        allow_loopback: bool = False,
        probe_window: float = PROBE_WINDOW,
        refresh_after: float = REFRESH_AFTER,
        max_probes: int = MAX_PROBES,
        max_devices: int = MAX_DEVICES,
        known: KnownLookup | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.on_found = on_found
        self.bind = bind
        self.requested_port = port
        self.device_port = device_port  # myStrom serves HTTP on 80; tests move it
        self.allow_loopback = allow_loopback
        self.probe_window = probe_window
        self.refresh_after = refresh_after
        self.max_devices = max_devices
        self.known = known  # MAC -> approved address and token (inbox.known_device)
        self.clock = clock
        self.slots = ProbeSlots(max_probes)
        self._heard: collections.OrderedDict[str, _Heard] = collections.OrderedDict()
        self._probing: dict[str, asyncio.Task] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._protocol: _AnnouncementProtocol | None = None
        self.port: int | None = None
        # Counters for the status page and the tests.
        self.packets = 0
        self.rejected = 0
        self.probes = 0
        self.dropped = 0

    @property
    def running(self) -> bool:
        return self._transport is not None

    async def start(self) -> None:
        if self._transport is not None:
            return
        sock = open_announcement_socket(self.bind, self.requested_port)
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await loop.create_datagram_endpoint(lambda: _AnnouncementProtocol(self.handle), sock=sock)
        except BaseException:
            sock.close()
            raise
        self._transport = transport
        self._protocol = protocol
        self.port = sock.getsockname()[1]
        log.info("listening for myStrom announcements on %s:%s", self.bind, self.port)

    async def stop(self) -> None:
        transport, self._transport = self._transport, None
        protocol, self._protocol = self._protocol, None
        if transport is not None:
            transport.close()
            if protocol is not None:
                # The socket is really closed one loop turn later; callers (a restart, a
                # test) expect the port to be free when stop() returns.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(protocol.closed), 1.0)
        tasks = list(self._probing.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        self._probing.clear()

    # ------------------------------------------------------------------ packets

    def handle(self, data: bytes, host: str) -> None:
        """One datagram from ``host``. Synchronous and cheap: decide, maybe start a probe."""
        self.packets += 1
        if host.startswith("::ffff:"):
            host = host[7:]  # an IPv4 sender seen through a dual-stack socket
        records = parse_announcement(data)
        if not records or not address_allowed(host, allow_loopback=self.allow_loopback):
            self.rejected += 1
            return
        # Only the first record is the sender; others (mesh children) have addresses the
        # packet does not tell, and they announce themselves anyway.
        ann = records[0]
        now = self.clock()
        heard = self._heard.get(ann.mac)
        if heard is None:
            heard = self._heard[ann.mac] = _Heard(host=host, last_heard=now)
            while len(self._heard) > self.max_devices:
                old_mac, _ = self._heard.popitem(last=False)
                log.debug("forgetting announcements of %s (table full)", old_mac)
        else:
            self._heard.move_to_end(ann.mac)
            heard.host, heard.last_heard = host, now
        if not self._wants_probe(heard, host, now) or ann.mac in self._probing:
            return
        if not self.slots.try_take():
            self.dropped += 1  # it announces again in ~5 s
            return
        heard.last_probe = now
        self.probes += 1
        task = asyncio.get_running_loop().create_task(self._probe(ann, host), name=f"mystrom-probe-{ann.mac}")
        self._probing[ann.mac] = task

    def _wants_probe(self, heard: _Heard, host: str, now: float) -> bool:
        if heard.last_probe is not None and now - heard.last_probe < self.probe_window:
            return False
        if heard.answered_host != host or heard.answered_at is None:
            return True
        return now - heard.answered_at >= self.refresh_after

    async def _probe(self, ann: Announcement, host: str) -> None:
        try:
            candidate = await self._identify(ann, host)
            if candidate is None:
                return
            heard = self._heard.get(ann.mac)
            if heard is not None:
                heard.answered_host, heard.answered_at = host, self.clock()
            await self.on_found(candidate)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("handling myStrom %s at %s failed", ann.mac, host)
        finally:
            self.slots.give_back()
            self._probing.pop(ann.mac, None)

    async def _identify(self, ann: Announcement, host: str) -> Candidate | None:
        known = await self.known(ann.mac) if self.known is not None else None
        if known is not None and known.token and known.at(host):
            return await self._identify_at_home(ann, known)
        # Unknown, without a token, or announced from an address staff never approved:
        # nothing secret is sent. (For a device with credentials the inbox makes whatever
        # this finds a pending move, never a move.)
        port = self.device_port
        try:
            info = await identify(self.client, host, port, vendor="mystrom")
        except AuthRequired:
            # 404 everywhere: a token is set (or REST is off). The announcement is all
            # we know; the inbox shows it as needing credentials.
            return Candidate(info_from_announcement(ann, auth_required=True), host, port, "udp", confirmed=False)
        except DeviceError as exc:
            log.debug("myStrom %s announced from %s but did not answer: %s", ann.mac, host, describe_error(exc))
            return None
        return self._candidate(ann, info, host, port)

    async def _identify_at_home(self, ann: Announcement, known: KnownDevice) -> Candidate | None:
        """The device at its approved address, asked with its token from the first request
        (a tokenless one is refused by a protected device and only costs it two 404s)."""
        try:
            info = await identify_mystrom(self.client, known.host, known.port, token=known.token)
        except (AuthRequired, WrongCredentials) as exc:
            # The token was changed on the device: the runtime, which talks to it with the
            # same token, says so on the device page. The announcement still came from here.
            log.debug("myStrom %s at its address %s refused its token: %s", ann.mac, known.host, describe_error(exc))
            return Candidate(info_from_announcement(ann, auth_required=True), known.host, known.port, "udp",
                             confirmed=False)
        except (DeviceError, TimeoutError) as exc:
            log.debug("myStrom %s announced from its address %s but did not answer: %s",
                      ann.mac, known.host, describe_error(exc))
            return None
        info.auth_enabled = True  # it answers with the token
        return self._candidate(ann, info, known.host, known.port)

    def _candidate(self, ann: Announcement, info: DeviceInfo | None, host: str, port: int) -> Candidate | None:
        if info is None:
            log.debug("%s announced myStrom %s but is no myStrom device", host, ann.mac)
            return None
        if info.mac is None:
            info.mac = ann.mac
            return Candidate(info, host, port, "udp", confirmed=False)
        if info.mac != ann.mac:
            log.warning("%s announced MAC %s but its info says %s; ignored", host, ann.mac, info.mac)
            return None
        return Candidate(info, host, port, "udp", confirmed=True)

    def heard(self) -> dict[str, str]:
        """MAC -> last sender address (bounded by ``max_devices``)."""
        return {mac: entry.host for mac, entry in self._heard.items()}


__all__ = [
    "Announcement",
    "MyStromListener",
    "info_from_announcement",
    "open_announcement_socket",
    "parse_announcement",
]
