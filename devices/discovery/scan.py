"""Finding devices that do not announce themselves where we can hear them: other VLANs,
containers without host networking, myStrom Switch v1 (never broadcasts).

"Scan this subnet" probes every address of a small private range with ``/shelly`` and the
myStrom info, a bounded number at a time with short timeouts. "Add by address" probes one
host the household typed in. Both return candidates; the caller records them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass, field

import httpx

from devices.drivers.errors import AuthRequired, DeviceError, WrongCredentials

from .identify import (
    AddressRefused,
    Candidate,
    check_device_address,
    check_port,
    describe_error,
    identify,
    identify_mystrom,
    is_lan_ip,
)

log = logging.getLogger(__name__)

# A /22 is 1022 hosts: at 32 at a time and ~1.5 s per silent address, about 50 s. Anything
# larger is not a household network (or is one we should not be sweeping).
MIN_PREFIX_V4 = 22
MIN_PREFIX_V6 = 118
SCAN_CONCURRENCY = 32


class SubnetRefused(ValueError):
    """The range is too large, public, or loopback without permission."""


def check_subnet(cidr: str, *, allow_loopback: bool) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """Parse and validate a range to scan: at most a /22, private ranges only (loopback
    only when HOMEDASH_ALLOW_LOOPBACK_DEVICES is set)."""
    if not isinstance(cidr, str) or not cidr.strip() or len(cidr) > 64:
        raise SubnetRefused("give a range such as 192.168.1.0/24")
    try:
        # strict=False: "192.168.1.17/24" is how people copy it from their router page.
        network = ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError:
        raise SubnetRefused(f"{cidr!r} is not an address range such as 192.168.1.0/24") from None
    limit = MIN_PREFIX_V4 if network.version == 4 else MIN_PREFIX_V6
    if network.prefixlen < limit:
        raise SubnetRefused(f"{network} is too large to scan; at most a /{limit}")
    first, last = network.network_address, network.broadcast_address
    if first.is_loopback and last.is_loopback:
        if not allow_loopback:
            raise SubnetRefused("loopback ranges are only allowed with HOMEDASH_ALLOW_LOOPBACK_DEVICES")
        return network
    if not (is_lan_ip(first) and is_lan_ip(last)):
        raise SubnetRefused(f"{network} is not a private local network range")
    return network


def scan_targets(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> list[str]:
    """Every host address (network and broadcast addresses excluded for IPv4 ranges)."""
    return [str(ip) for ip in network.hosts()]


@dataclass(slots=True)
class ScanReport:
    network: str
    probed: int = 0
    found: list[Candidate] = field(default_factory=list)
    needs_token: list[str] = field(default_factory=list)  # answered like a token-protected myStrom
    peak_in_flight: int = 0


async def scan_subnet(
    client: httpx.AsyncClient,
    cidr: str,
    *,
    port: int = 80,
    concurrency: int = SCAN_CONCURRENCY,
    allow_loopback: bool = False,
) -> ScanReport:
    """Probe every address of ``cidr``; return what answered as a Shelly or myStrom."""
    network = check_subnet(cidr, allow_loopback=allow_loopback)
    port = check_port(port)
    targets = scan_targets(network)
    report = ScanReport(network=str(network))
    limit = asyncio.Semaphore(max(1, min(concurrency, 128)))
    in_flight = 0

    async def probe(host: str) -> None:
        nonlocal in_flight
        async with limit:
            in_flight += 1
            report.peak_in_flight = max(report.peak_in_flight, in_flight)
            try:
                info = await identify(client, host, port)
            except AuthRequired:
                # 404 on /shelly and on both myStrom paths: a myStrom with a token, or
                # any web server. Without an announcement we cannot tell; say so.
                report.needs_token.append(host)
                return
            except (DeviceError, TimeoutError):
                return
            finally:
                in_flight -= 1
                report.probed += 1
            if info is not None and info.mac is not None:
                report.found.append(Candidate(info, host, port, "scan", confirmed=True))

    await asyncio.gather(*(probe(host) for host in targets))
    report.found.sort(key=lambda c: ipaddress.ip_address(c.host))
    report.needs_token.sort(key=ipaddress.ip_address)
    log.info("scan of %s: %d device(s) in %d address(es)", network, len(report.found), report.probed)
    return report


class NotADevice(Exception):
    """Something answered (or nothing did), but not a Shelly or myStrom we can identify.
    The message is meant for the household."""


async def add_by_address(
    client: httpx.AsyncClient,
    host: str,
    port: int = 80,
    *,
    token: str | None = None,
    allow_loopback: bool = False,
) -> Candidate:
    """Identify the device at an address the household typed in.

    Raises AddressRefused for addresses we will not talk to, NotADevice when nothing usable
    answers there.
    """
    port = check_port(port)
    # A LAN address, or a name resolving only to LAN addresses: "add by address" must not
    # make homedash talk to the internet (or, by a name, to itself).
    host = await check_device_address(host, port, allow_loopback=allow_loopback)
    try:
        try:
            info = await identify(client, host, port)
        except AuthRequired:
            if not token:
                raise NotADevice(
                    f"{host} answers, but not as a Shelly; if it is a myStrom device with a token, give the token too"
                ) from None
            try:
                info = await identify_mystrom(client, host, port, token=token)
            except (AuthRequired, WrongCredentials):
                raise NotADevice(f"{host} refused the token (or its REST API is switched off)") from None
            info.auth_enabled = True  # it answered only with the token
    except (DeviceError, TimeoutError) as exc:
        raise NotADevice(f"nothing usable answers at {host}: {describe_error(exc)}") from None
    if info is None:
        raise NotADevice(f"{host} is neither a Shelly nor a myStrom device")
    if info.mac is None:
        raise NotADevice(f"{host} did not report a MAC address, so it cannot be told apart from others")
    return Candidate(info, host, port, "manual", confirmed=True)


__all__ = [
    "AddressRefused",
    "NotADevice",
    "ScanReport",
    "SubnetRefused",
    "add_by_address",
    "check_subnet",
    "scan_subnet",
    "scan_targets",
]
