"""Shelly devices over mDNS / DNS-SD (reference shelly.md §1.3).

Gen1 publishes ``_http._tcp`` only; Gen2+ publish ``_shelly._tcp`` and ``_http._tcp``,
each **twice**: once named after the device id (``shellyplus1pm-441793d69718``) and once
after the name the household gave it (``1PM Plus``) — same address, and the second
carries no MAC at all. So instance names are hints, never identity: each address is probed
once with ``GET /shelly`` (unauthenticated on every generation), the MAC it answers with
is the device. Duplicates are folded by address before the probe (one GET per device per
window) and by MAC + address after it (one report per device per window).

The pure part (TXT + addresses -> ``Sighting``) is separate from the zeroconf plumbing so
it can be tested with constructed ``ServiceInfo`` objects and the real captures.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from zeroconf import InterfaceChoice, IPVersion, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from devices.drivers.errors import DeviceError
from devices.drivers.types import DeviceInfo, mac_from_shelly_id, normalise_mac

from .identify import Candidate, ProbeLimiter, address_allowed, describe_error, identify_shelly

log = logging.getLogger(__name__)

SHELLY_SERVICE = "_shelly._tcp.local."
HTTP_SERVICE = "_http._tcp.local."
SERVICE_TYPES = (SHELLY_SERVICE, HTTP_SERVICE)

# TXT records are tiny on every Shelly; bound what we read from strangers.
MAX_TXT_KEYS = 32
MAX_TXT_KEY = 32
MAX_TXT_VALUE = 128
MAX_NAME = 128
MAX_ADDRESSES = 8

RESOLVE_TIMEOUT_MS = 3000
PROBE_WINDOW = 60.0
MAX_PROBES = 8
QUEUE_SIZE = 256

# "shelly1-34945472A643", "shellyplus1pm-441793d69718", "ShellyPro4PM-34987A67D7D0" ...
_ID_RE = re.compile(r"^(shelly[a-z0-9]*)-([0-9a-f]{6,12})$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Sighting:
    """One resolved mDNS instance, reduced to what matters. ``mac`` is a hint taken from
    the instance/host name or TXT id: only ``GET /shelly`` confirms it."""

    service_type: str
    instance: str
    server: str | None
    addresses: tuple[str, ...]
    port: int
    mac: str | None
    device_id: str | None
    generation: int | None
    app: str | None
    firmware: str | None
    shelly_evidence: bool  # TXT/name suggest a Shelly; worth a probe
    txt: Mapping[str, str] = field(default_factory=dict)

    def host(self, *, allow_loopback: bool) -> str | None:
        """The address to probe: an allowed IPv4 first (what every Shelly has), else an
        allowed IPv6 without a scope."""
        # Sorted, so a device with two addresses (a Pro on Ethernet and Wi-Fi) is always
        # probed at the same one instead of "moving" between them.
        ordered = sorted((ipaddress.ip_address(a) for a in self.addresses), key=lambda ip: (ip.version, ip))
        for ip in ordered:
            if ip.version == 6 and ip.is_link_local:
                continue  # useless without the scope, which is per receiving host
            if address_allowed(str(ip), allow_loopback=allow_loopback):
                return str(ip)
        return None


def _text(value: Any, limit: int) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = "".join(ch for ch in value if ch.isprintable())[:limit]
    return value or None


def decode_txt(properties: Mapping[Any, Any] | Iterable[str] | None) -> dict[str, str]:
    """TXT as a bounded ``{lower-case key: value}``. Accepts zeroconf's ``{bytes: bytes}``
    or a list of ``"key=value"`` strings (the captures' form). Valueless keys become ""."""
    out: dict[str, str] = {}
    if properties is None:
        return out
    if isinstance(properties, Mapping):
        items: Iterable[tuple[Any, Any]] = properties.items()
    else:
        items = []
        for entry in properties:
            text = _text(entry, MAX_TXT_KEY + MAX_TXT_VALUE + 1)
            if text:
                key, _, value = text.partition("=")
                items.append((key, value))  # type: ignore[union-attr]
    for raw_key, raw_value in items:
        if len(out) >= MAX_TXT_KEYS:
            break
        key = _text(raw_key, MAX_TXT_KEY)
        if not key:
            continue
        out.setdefault(key.lower(), _text(raw_value, MAX_TXT_VALUE) or "")
    return out


def _first_label(name: str | None) -> str:
    """``shellyplus1pm-441793d69718._http._tcp.local.`` -> ``shellyplus1pm-441793d69718``;
    ``ShellyPlus1PM-441793D69718.local.`` -> ``ShellyPlus1PM-441793D69718``."""
    if not name:
        return ""
    for suffix in (SHELLY_SERVICE, HTTP_SERVICE, SHELLY_SERVICE[:-1], HTTP_SERVICE[:-1], ".local.", ".local"):
        if name.lower().endswith(suffix.lower()):
            return name[: -len(suffix)].rstrip(".")
    return name.split(".", 1)[0]


def _id_from(label: str) -> tuple[str | None, str | None]:
    """(device id, MAC) when ``label`` looks like a Shelly id with a whole MAC."""
    match = _ID_RE.match(label or "")
    if not match:
        return None, None
    return label.lower(), mac_from_shelly_id(label)


def sighting_from_records(
    service_type: str,
    name: str,
    *,
    txt: Mapping[Any, Any] | Iterable[str] | None,
    addresses: Iterable[str],
    port: int | None,
    server: str | None,
) -> Sighting | None:
    """The pure core: one instance's SRV/TXT/A data -> Sighting, or None when it is
    unusable (no port)."""
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        return None
    props = decode_txt(txt)
    instance = _first_label(_text(name, MAX_NAME) or "")
    server_name = _text(server, MAX_NAME)
    clean_addresses: list[str] = []
    for address in addresses:
        text = _text(address, 64)
        if not text:
            continue
        try:
            parsed = str(ipaddress.ip_address(text.split("%", 1)[0]))
        except ValueError:
            continue
        if parsed not in clean_addresses:
            clean_addresses.append(parsed)
        if len(clean_addresses) >= MAX_ADDRESSES:
            break

    device_id = mac = None
    # Gen1 carries its id in TXT; Gen2+ only in the instance and host names.
    for source in (props.get("id", ""), instance, _first_label(server_name)):
        found_id, found_mac = _id_from(source)
        if found_id and device_id is None:
            device_id = found_id
        if found_mac:
            mac = found_mac
            device_id = found_id
            break
    if mac is None:
        mac = normalise_mac(props.get("mac"))

    gen_text = props.get("gen", "")
    generation = int(gen_text) if gen_text.isdigit() and 1 <= len(gen_text) <= 2 else None
    if generation is None and device_id and ("arch" in props or "fw_id" in props or "id" in props):
        generation = 1  # Gen1 TXT: id/arch/app/fw_id, never gen
    app = props.get("app") or None
    firmware = props.get("ver") or props.get("fw_id") or None
    evidence = (
        service_type.lower().startswith("_shelly._tcp")
        or generation is not None
        or device_id is not None
        or instance.lower().startswith("shelly")
        or (server_name or "").lower().startswith("shelly")
    )
    return Sighting(
        service_type=service_type,
        instance=instance,
        server=server_name,
        addresses=tuple(clean_addresses),
        port=port,
        mac=mac,
        device_id=device_id,
        generation=generation,
        app=app,
        firmware=firmware,
        shelly_evidence=evidence,
        txt=props,
    )


def sighting_from_service_info(info: Any) -> Sighting | None:
    """Same, from a zeroconf ``ServiceInfo`` (constructed in tests, resolved live)."""
    try:
        addresses = info.parsed_scoped_addresses()
    except Exception:  # a half-populated info must not break the browser
        addresses = []
    return sighting_from_records(
        info.type, info.name, txt=info.properties, addresses=addresses, port=info.port, server=info.server
    )


def info_from_sighting(sighting: Sighting) -> DeviceInfo | None:
    """What mDNS alone says, for a device that vanished before the probe (sleeping
    battery devices are awake only for seconds). Needs a MAC hint."""
    if sighting.mac is None or not sighting.shelly_evidence:
        return None
    app = sighting.app or ""
    model = app or (sighting.device_id or "").split("-", 1)[0] or "unknown"
    return DeviceInfo(
        vendor="shelly",
        mac=sighting.mac,
        generation=sighting.generation or 1,
        model=model[:32],
        model_name=f"Shelly {app}" if app else "Shelly",
        firmware=sighting.firmware or "",
        device_id=sighting.device_id,
        raw={"mdns": dict(sighting.txt), "instance": sighting.instance},
    )


Found = Callable[[Candidate], Awaitable[None]]


class ShellyBrowser:
    """Browses both service types, resolves, probes each device once per window and hands
    every confirmed Shelly to ``on_found`` — once per MAC per window however many instances
    it publishes."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        on_found: Found,
        *,
        interfaces: list[str] | None = None,
        allow_loopback: bool = False,
        probe_window: float = PROBE_WINDOW,
        max_probes: int = MAX_PROBES,
        queue_size: int = QUEUE_SIZE,
        resolve_timeout_ms: int = RESOLVE_TIMEOUT_MS,
        max_keys: int = 2048,
        zeroconf: AsyncZeroconf | None = None,
    ) -> None:
        self.client = client
        self.on_found = on_found
        self.interfaces = list(interfaces or [])
        self.allow_loopback = allow_loopback
        self.max_probes = max(1, max_probes)
        self.resolve_timeout_ms = resolve_timeout_ms
        self.limiter = ProbeLimiter(window=probe_window, max_keys=max_keys)
        self.reported = ProbeLimiter(window=probe_window, max_keys=max_keys)
        self._queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue(maxsize=queue_size)
        self._queued: set[tuple[str, str]] = set()
        self._own_zeroconf = zeroconf is None
        self._aiozc = zeroconf
        self._browser: AsyncServiceBrowser | None = None
        self._workers: list[asyncio.Task] = []
        self.sightings = 0
        self.probes = 0
        self.dropped = 0

    @property
    def running(self) -> bool:
        return self._browser is not None

    async def start(self) -> None:
        if self._browser is not None:
            return
        if self._aiozc is None:
            interfaces: Any = self.interfaces or InterfaceChoice.All
            ip_version = None if self.interfaces else IPVersion.V4Only
            self._aiozc = AsyncZeroconf(interfaces=interfaces, ip_version=ip_version)
        self._workers = [
            asyncio.get_running_loop().create_task(self._work(), name=f"mdns-worker-{i}")
            for i in range(self.max_probes)
        ]
        self._browser = AsyncServiceBrowser(self._aiozc.zeroconf, list(SERVICE_TYPES), handlers=[self._on_change])
        log.info("browsing mDNS for Shelly devices on %s", ", ".join(self.interfaces) or "all interfaces")

    async def stop(self) -> None:
        browser, self._browser = self._browser, None
        if browser is not None:
            with contextlib.suppress(Exception):
                await browser.async_cancel()
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(BaseException):
                await task
        self._workers = []
        if self._aiozc is not None and self._own_zeroconf:
            with contextlib.suppress(Exception):
                await self._aiozc.async_close()
            self._aiozc = None
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queued.clear()

    # ------------------------------------------------------------------ zeroconf side

    def _on_change(self, zeroconf: Any, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change not in (ServiceStateChange.Added, ServiceStateChange.Updated):
            return
        item = (service_type, name)
        if item in self._queued:
            return
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1  # bounded: a flood of instances must not grow memory
            return
        self._queued.add(item)

    async def _work(self) -> None:
        while True:
            service_type, name = await self._queue.get()
            self._queued.discard((service_type, name))
            try:
                sighting = await self._resolve(service_type, name)
                if sighting is not None:
                    await self.handle_sighting(sighting)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("mDNS instance %r could not be handled", name[:MAX_NAME])

    async def _resolve(self, service_type: str, name: str) -> Sighting | None:
        assert self._aiozc is not None
        info = AsyncServiceInfo(service_type, name)
        if not await info.async_request(self._aiozc.zeroconf, self.resolve_timeout_ms):
            # Some responders leave out the A record (micropython-mdns#34): what we did get
            # may still name the host, which we then resolve on its own.
            if info.port is None or not info.server:
                return None
        sighting = sighting_from_service_info(info)
        if sighting is None or sighting.addresses or not sighting.server:
            return sighting
        resolver = _address_resolver(sighting.server)
        if resolver is not None and await resolver.async_request(self._aiozc.zeroconf, self.resolve_timeout_ms):
            return sighting_from_service_info(_with_addresses(info, resolver.parsed_scoped_addresses()))
        return sighting

    # ------------------------------------------------------------------ our side

    async def handle_sighting(self, sighting: Sighting) -> Candidate | None:
        """Fold duplicates, probe, report. Public so tests can feed sightings directly."""
        self.sightings += 1
        if not sighting.shelly_evidence:
            return None
        host = sighting.host(allow_loopback=self.allow_loopback)
        if host is None:
            return None
        address = f"{host}:{sighting.port}"
        # Every instance of one device (a Gen2+ publishes four) points at one address:
        # whichever arrives first is probed, the others find the address already counted.
        # Keyed by address, not by the MAC in a name, so a device that just moved is
        # probed at its new address at once.
        if not self.limiter.allow(address):
            return None
        self.probes += 1
        candidate = await self._probe(sighting, host)
        if candidate is None or candidate.mac is None:
            return None
        if not self.reported.allow(f"{candidate.mac}@{address}"):
            return None
        await self.on_found(candidate)
        return candidate

    async def _probe(self, sighting: Sighting, host: str) -> Candidate | None:
        try:
            info = await identify_shelly(self.client, host, sighting.port)
        except (DeviceError, TimeoutError) as exc:
            log.debug("mDNS %s at %s did not answer /shelly: %s", sighting.instance, host, describe_error(exc))
            fallback = info_from_sighting(sighting)
            if fallback is None:
                return None
            return Candidate(fallback, host, sighting.port, "mdns", confirmed=False)
        if info is None:
            log.debug("mDNS %s at %s is not a Shelly", sighting.instance, host)
            return None
        if info.mac is None:
            return None
        if sighting.mac and sighting.mac != info.mac:
            # Names are only hints: the device's own answer wins.
            log.info("mDNS %s suggested MAC %s, %s answers as %s", sighting.instance, sighting.mac, host, info.mac)
        return Candidate(info, host, sighting.port, "mdns", confirmed=True)


def _address_resolver(server: str) -> Any:
    from zeroconf import AddressResolver

    try:
        return AddressResolver(server if server.endswith(".") else server + ".")
    except Exception:
        return None


def _with_addresses(info: AsyncServiceInfo, addresses: list[str]) -> Any:
    """A copy of ``info`` carrying separately resolved addresses."""
    from zeroconf import ServiceInfo

    clean = [a.split("%", 1)[0] for a in addresses][:MAX_ADDRESSES]
    return ServiceInfo(
        info.type, info.name, port=info.port, properties=info.properties, server=info.server, parsed_addresses=clean
    )


__all__ = [
    "HTTP_SERVICE",
    "SERVICE_TYPES",
    "SHELLY_SERVICE",
    "ShellyBrowser",
    "Sighting",
    "decode_txt",
    "info_from_sighting",
    "sighting_from_records",
    "sighting_from_service_info",
]
