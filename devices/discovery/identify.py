"""Who is at this address? The one HTTP probe every discovery path ends in, the rules for
which addresses we are willing to talk to, and the rate limiter that keeps discovery from
flooding the household's network.

Everything that arrives here came from the LAN and is untrusted: an announcement's MAC, an
mDNS instance name, a host typed by a user. A candidate is *confirmed* when something
answers at that address with the MAC we expected; unconfirmed candidates may fill the
inbox but never move a known device (see ``inbox.record``). Confirmed is not proven:
anything on the LAN can answer with any MAC, so no probe here carries a device's stored
credentials to an address the household did not approve (docs/security.md).
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import httpx

from devices.drivers import http, probe
from devices.drivers.errors import DeviceError, DeviceTimeout, ProtocolError, Unsupported
from devices.drivers.gate import DeviceGate, gate_for
from devices.drivers.mystrom import MyStrom
from devices.drivers.shelly_gen1 import parse_shelly_info
from devices.drivers.types import DeviceInfo

log = logging.getLogger(__name__)

# A probe is one or two small GETs to a device on the same LAN: a second is generous. A
# subnet scan hits mostly empty addresses, where the connect timeout is what we wait for.
PROBE_CONNECT_TIMEOUT = 1.5
PROBE_READ_TIMEOUT = 3.0
PROBE_DEADLINE = 6.0
# /shelly and /api/v1/info are a few hundred bytes; anything near this is not a device.
PROBE_BODY_CAP = 32 * 1024

PROBE_TIMEOUT = httpx.Timeout(
    connect=PROBE_CONNECT_TIMEOUT, read=PROBE_READ_TIMEOUT, write=PROBE_READ_TIMEOUT, pool=PROBE_READ_TIMEOUT
)

# Where household devices live: RFC 1918, IPv6 unique-local, and RFC 6598 shared space
# (carrier-grade NAT, also Tailscale and some mesh routers). Spelled out because Python's
# is_private also covers documentation and benchmark ranges, which never hold a device.
_LAN_NETWORKS = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)
_HOSTNAME_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def make_probe_client() -> httpx.AsyncClient:
    """The driver client with probe timeouts. Discovery owns and closes it."""
    return http.make_client(timeout=PROBE_TIMEOUT, max_connections=64, max_keepalive=0)


@dataclass(slots=True)
class Candidate:
    """A device found somewhere on the LAN: who it says it is and where it answered.

    ``confirmed`` means something answered at ``host:port`` with ``info.mac``; only then
    may it move a known device without credentials to this address (one with credentials
    gets a pending move for staff to confirm).
    """

    info: DeviceInfo
    host: str
    port: int
    found_by: str
    confirmed: bool = True

    @property
    def mac(self) -> str | None:
        return self.info.mac


# ----------------------------------------------------------------------------- addresses


class AddressRefused(ValueError):
    """The address is not one homedash may talk to (wrong syntax, loopback, public...)."""


def parse_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address ``host`` is, None for a name (or anything else)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_lan_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """RFC 1918 / ULA / CGNAT space (loopback and link-local are asked separately)."""
    return any(ip.version == net.version and ip in net for net in _LAN_NETWORKS)


def check_ip(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
    *,
    allow_loopback: bool,
    allow_public: bool,
) -> None:
    """Raise AddressRefused unless a device may live at ``ip``."""
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified or ip.is_multicast or (ip.version == 4 and ip == ipaddress.IPv4Address("255.255.255.255")):
        raise AddressRefused(f"{ip} is not the address of a single device")
    if ip.is_loopback or ip.is_link_local:
        if allow_loopback:
            return
        kind = "loopback" if ip.is_loopback else "link-local"
        raise AddressRefused(
            f"{ip} is a {kind} address; devices there are only allowed with HOMEDASH_ALLOW_LOOPBACK_DEVICES"
        )
    if is_lan_ip(ip):
        return
    if not ip.is_global:
        # 0.0.0.0/8, documentation and benchmark ranges, 240/4...: never a device.
        raise AddressRefused(f"{ip} is a reserved address")
    if not allow_public:
        raise AddressRefused(f"{ip} is not a local network address")


def check_host(host: Any, *, allow_loopback: bool, allow_public: bool = True) -> str:
    """Validate a device address typed by a user: an IP address or a host name, nothing
    else (no scheme, path, port, credentials). Returns the normalised host.

    Host names are checked for syntax here; ``resolve_and_check`` checks where they point.
    """
    if not isinstance(host, str):
        raise AddressRefused("the address must be text")
    value = host.strip()
    if not value:
        raise AddressRefused("an address is required")
    if len(value) > 253:
        raise AddressRefused("that address is too long")
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    if "://" in value or any(c in value for c in "/@?#\\ \t\r\n%"):
        raise AddressRefused("give only an IP address or a host name, without http://, paths or passwords")
    ip = parse_ip(value)
    if ip is not None:
        check_ip(ip, allow_loopback=allow_loopback, allow_public=allow_public)
        return str(ip)
    if ":" in value:
        raise AddressRefused("give the port separately, not as host:port")
    name = value.rstrip(".").lower()
    labels = name.split(".")
    if not all(_HOSTNAME_LABEL.match(label) for label in labels) or labels[-1].isdigit():
        raise AddressRefused(f"{value!r} is neither an IP address nor a host name")
    if (name == "localhost" or name.endswith(".localhost")) and not allow_loopback:
        raise AddressRefused("localhost is only allowed with HOMEDASH_ALLOW_LOOPBACK_DEVICES")
    return name


async def resolve_and_check(host: str, port: int, *, allow_loopback: bool, allow_public: bool = True) -> None:
    """A host name must not be a detour to an address ``check_host`` would refuse."""
    if parse_ip(host) is not None:
        return
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(PROBE_CONNECT_TIMEOUT * 2):
            infos = await loop.getaddrinfo(host, port, type=0, proto=6)
    except (OSError, TimeoutError) as exc:
        raise AddressRefused(f"{host!r} does not resolve: {getattr(exc, 'strerror', None) or exc}") from None
    for *_, sockaddr in infos:
        ip = parse_ip(str(sockaddr[0]).split("%", 1)[0])
        if ip is not None:
            check_ip(ip, allow_loopback=allow_loopback, allow_public=allow_public)


async def check_device_address(host: Any, port: int, *, allow_loopback: bool) -> str:
    """Where a device may be: a LAN address, or a name that resolves only to LAN addresses
    (loopback too with HOMEDASH_ALLOW_LOOPBACK_DEVICES). Never a public address: homedash
    sends a device its password or token, and a name pointing outside would send them there.
    Returns the normalised host; raises AddressRefused."""
    host = check_host(host, allow_loopback=allow_loopback, allow_public=False)
    await resolve_and_check(host, port, allow_loopback=allow_loopback, allow_public=False)
    return host


def check_device_address_sync(host: Any, port: int, *, allow_loopback: bool) -> str:
    """``check_device_address`` for forms and other synchronous code."""
    from asgiref.sync import async_to_sync

    return async_to_sync(check_device_address)(host, port, allow_loopback=allow_loopback)


def check_port(port: Any) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise AddressRefused("a port is a number from 1 to 65535")
    return port


def address_allowed(host: str, *, allow_loopback: bool) -> bool:
    """For addresses the network told us (announcement sources, mDNS A records)."""
    ip = parse_ip(host)
    if ip is None:
        return False
    try:
        check_ip(ip, allow_loopback=allow_loopback, allow_public=False)
    except AddressRefused:
        return False
    return True


# ----------------------------------------------------------------------------- probing


def probe_gate(host: str, port: int = 80) -> DeviceGate:
    """The turn a probe of ``host:port`` takes: the address's, which is also the turn of
    the device homedash follows there (gate.py). Not the MAC an announcement or an mDNS
    name claims: that is a hint from the LAN, and what must not see two requests at once
    is whatever answers at this address."""
    return gate_for(host=host, port=port)


async def identify_shelly(
    client: httpx.AsyncClient, host: str, port: int = 80, *, gate: DeviceGate | None = None
) -> DeviceInfo | None:
    """``GET /shelly`` (never needs auth, every generation). None: not a Shelly."""
    async with gate if gate is not None else probe_gate(host, port):
        reply = await http.request(
            client, "GET", http.base_url(host, port) + "/shelly", host=host, cap=PROBE_BODY_CAP, deadline=PROBE_DEADLINE
        )
    if reply.status != 200:
        return None
    try:
        return parse_shelly_info(reply.json())
    except ProtocolError:
        return None


async def identify_mystrom(
    client: httpx.AsyncClient, host: str, port: int = 80, *, token: str | None = None, gate: DeviceGate | None = None
) -> DeviceInfo:
    """``/api/v1/info`` with the ``/info.json`` fallback (the driver's rules).

    Raises AuthRequired when the device answers 404 everywhere (a token is set, or its REST
    API is off), Unsupported/ProtocolError when it is not a myStrom device.
    """
    device = MyStrom(client, host, port, token=token, gate=gate if gate is not None else probe_gate(host, port))
    async with asyncio.timeout(PROBE_DEADLINE):
        return await device.info()


async def identify(
    client: httpx.AsyncClient,
    host: str,
    port: int = 80,
    *,
    vendor: str | None = None,
    token: str | None = None,
    gate: DeviceGate | None = None,
) -> DeviceInfo | None:
    """Any Shelly or myStrom at ``host:port``: the drivers' ``probe`` (/shelly first,
    unauthenticated on every generation, then the myStrom info). ``vendor`` skips the
    other vendor's probe when a hint already says who it is; ``token`` is a myStrom token.
    None when nothing we know answers.

    Raises Unreachable/DeviceTimeout when nothing answers at all, AuthRequired when the
    only thing missing may be a myStrom token. Every request takes ``gate`` (default: the
    address's turn, ``probe_gate``), one request at a time, never around the whole probe.
    """
    gate = gate if gate is not None else probe_gate(host, port)
    try:
        async with asyncio.timeout(PROBE_DEADLINE * 2):
            if vendor == "shelly":
                return await identify_shelly(client, host, port, gate=gate)
            if vendor == "mystrom" or token:
                if vendor is None:
                    info = await identify_shelly(client, host, port, gate=gate)
                    if info is not None:
                        return info
                return await identify_mystrom(client, host, port, token=token, gate=gate)
            return await probe(client, host, port, gate=gate)
    except TimeoutError as exc:
        raise DeviceTimeout("no complete answer to the identity probe", host=host) from exc
    except (Unsupported, ProtocolError):
        return None


# ----------------------------------------------------------------------------- rate limit


class ProbeLimiter:
    """At most one probe per key (a MAC, or an address) per ``window`` seconds, and a
    bounded table: the least recently used key is forgotten first, so a flood of forged
    MACs costs memory for ``max_keys`` entries and nothing more."""

    def __init__(self, window: float = 60.0, max_keys: int = 1024, clock=time.monotonic) -> None:
        self.window = window
        self.max_keys = max_keys
        self.clock = clock
        self._last: collections.OrderedDict[str, float] = collections.OrderedDict()

    def allow(self, key: str) -> bool:
        """True (and the probe is counted now) when ``key`` may be probed."""
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.window:
            self._last.move_to_end(key)
            return False
        self._last[key] = now
        self._last.move_to_end(key)
        while len(self._last) > self.max_keys:
            self._last.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._last)


class ProbeSlots:
    """A fixed number of probes in flight. Never queues: a caller that finds no free slot
    drops its work (announcements repeat every few seconds; mDNS keeps its own bounded
    queue), so memory stays bounded however fast packets arrive."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self.busy = 0
        self.peak = 0

    def try_take(self) -> bool:
        if self.busy >= self.size:
            return False
        self.busy += 1
        self.peak = max(self.peak, self.busy)
        return True

    def give_back(self) -> None:
        self.busy = max(0, self.busy - 1)


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, DeviceError):
        return f"{type(exc).__name__}: {exc.message}"[:200]
    return f"{type(exc).__name__}: {exc}"[:200]


__all__ = [
    "AddressRefused",
    "Candidate",
    "PROBE_TIMEOUT",
    "ProbeLimiter",
    "ProbeSlots",
    "address_allowed",
    "check_device_address",
    "check_device_address_sync",
    "check_host",
    "check_ip",
    "check_port",
    "describe_error",
    "identify",
    "identify_mystrom",
    "identify_shelly",
    "is_lan_ip",
    "make_probe_client",
    "probe_gate",
    "resolve_and_check",
]
