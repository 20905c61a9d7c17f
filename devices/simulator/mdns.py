"""mDNS / DNS-SD announcements of simulated Shelly devices, as real ones publish them
(shelly.md §1.3, real packets in ../shared/payloads/shelly/mdns__*.json).

* Gen2+ devices: ``_shelly._tcp`` and ``_http._tcp``, each with two instances — one named after
  the device id (``shellyplus1pm-441793d69718``, SRV target ``ShellyPlus1PM-441793D69718.local``)
  and one named after the user's device name (``1PM Plus`` → target ``1-PM-Plus.local``).
  TXT ``gen``, ``app``, ``ver`` (the id-named ``_http`` instance only carries ``gen``).
* Gen1 devices: ``_http._tcp`` only, instance and host ``shelly1-34945472A643``, TXT ``id``,
  ``arch``, ``app``, ``fw_version``, ``fw_id``, ``discoverable``.

Multicast must never reach a real LAN, so :func:`advertise` only runs inside our private
network namespace (``HOMEDASH_PRIVATE_NETNS=1``, a sealed loopback) or on a 127.x interface
when the caller explicitly allows loopback multicast.
"""

from __future__ import annotations

import ipaddress
import asyncio
import re
from dataclasses import dataclass, field
from typing import Any

from zeroconf import IPVersion, ServiceInfo
from zeroconf.asyncio import AsyncZeroconf

from .base import in_private_namespace

SHELLY_TYPE = "_shelly._tcp.local."
HTTP_TYPE = "_http._tcp.local."

# Gen1 id prefixes and TXT "app" values. Only the H&T (and other old battery devices) use the
# short 6-hex-digit id; the rest use the whole MAC.
_GEN1 = {
    "SHSW-1": ("shelly1", "switch1", False),
    "SHSW-PM": ("shelly1pm", "switch1pm", False),
    "SHSW-L": ("shelly1l", "switch1l", False),
    "SHSW-25": ("shellyswitch25", "switch25", False),
    "SHPLG-S": ("shellyplug-s", "plug-s", False),
    "SHPLG-1": ("shellyplug", "plug", False),
    "SHDM-1": ("shellydimmer", "dimmer", False),
    "SHDM-2": ("shellydimmer2", "dimmer2", False),
    "SHRGBW2": ("shellyrgbw2", "rgbw2", False),
    "SHEM": ("shellyem", "em", False),
    "SHEM-3": ("shellyem3", "em3", False),
    "SHIX3-1": ("shellyix3", "ix3", False),
    "SHVIN-1": ("shellyvintage", "vintage", False),
    "SHBDUO-1": ("shellybulbduo", "bulbduo", False),
    "SHGS-1": ("shellygas", "gas", False),
    "SHHT-1": ("shellyht", "ht", True),
    "SHWT-1": ("shellyflood", "flood", True),
    "SHDW-2": ("shellydw2", "dw2", True),
}


class MulticastRefused(RuntimeError):
    """advertise() outside a sealed network."""


@dataclass
class Advertisement:
    """Handle of running announcements; ``await close()`` withdraws them (goodbye packets)."""

    zeroconf: AsyncZeroconf
    services: list[ServiceInfo] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [info.name for info in self.services]

    async def close(self) -> None:
        try:
            await self.zeroconf.async_unregister_all_services()
        finally:
            await self.zeroconf.async_close()


def _host_label(text: str) -> str:
    """User device name → DNS host label, as the firmware does ("1PM Plus" → "1-PM-Plus")."""
    label = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")
    return label[:63] or "shelly"


def _addresses(device: Any, interface_ip: str) -> list[bytes]:
    host = getattr(device, "host", None) or interface_ip
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = ipaddress.ip_address(interface_ip)
    return [ip.packed]


def _is_rpc(device: Any) -> bool:
    gen = getattr(device, "gen", None)
    if isinstance(gen, int):
        return gen >= 2
    # No gen attribute: Gen1 model codes start with "SH" (shelly.md §1.2).
    return not str(getattr(device, "model", "")).upper().startswith("SH")


def service_infos(device: Any, interface_ip: str) -> list[ServiceInfo]:
    """The ServiceInfo records one device publishes (empty for non-Shelly devices)."""
    if getattr(device, "vendor", "") != "shelly":
        return []
    addresses = _addresses(device, interface_ip)
    port = int(device.port)
    mac = str(device.mac).upper()
    infos: list[ServiceInfo] = []
    if _is_rpc(device):
        device_id = getattr(device, "device_id", None)
        if not isinstance(device_id, str):
            device_id = f"shelly-{mac.lower()}"
        prefix = device_id.rsplit("-", 1)[0]
        host_label = getattr(getattr(device, "spec", None), "host_label", None) or prefix.capitalize()
        gen = str(getattr(device, "gen", 2))
        app = str(getattr(device, "app", ""))
        ver = str(getattr(device, "ver", ""))
        full_txt = {"gen": gen, "app": app, "ver": ver}
        id_host = f"{host_label}-{mac}.local."
        infos.append(ServiceInfo(SHELLY_TYPE, f"{device_id}.{SHELLY_TYPE}", port=port,
                                 properties=full_txt, server=id_host, addresses=addresses))
        infos.append(ServiceInfo(HTTP_TYPE, f"{device_id}.{HTTP_TYPE}", port=port,
                                 properties={"gen": gen}, server=id_host, addresses=addresses))
        name = getattr(device, "name", None)
        if name:
            user_host = f"{_host_label(name)}.local."
            for type_ in (SHELLY_TYPE, HTTP_TYPE):
                infos.append(ServiceInfo(type_, f"{name}.{type_}", port=port, properties=full_txt,
                                         server=user_host, addresses=addresses))
        return infos
    model = str(getattr(device, "model", "")).upper()
    prefix, app, short_id = _GEN1.get(model, (f"shelly{model.lower().replace('-', '')}", model.lower(), False))
    # The Gen1 simulator names its host like the firmware does; fall back to our table.
    hostname = getattr(device, "hostname", None)
    gen1_id = hostname if isinstance(hostname, str) and hostname else f"{prefix}-{mac[-6:] if short_id else mac}"
    fw_id = getattr(device, "fw", None) or getattr(device, "fw_id", None) or "20230913-112003/v1.14.0-gsim"
    txt = {"id": gen1_id, "arch": "esp8266", "app": app, "fw_version": "1.0", "fw_id": str(fw_id),
           "discoverable": "false"}
    infos.append(ServiceInfo(HTTP_TYPE, f"{gen1_id}.{HTTP_TYPE}", port=port, properties=txt,
                             server=f"{gen1_id}.local.", addresses=addresses))
    return infos


async def advertise(devices: list[Any], interface_ip: str, *,
                    allow_loopback_multicast: bool = False) -> Advertisement:
    """Announce ``devices`` on ``interface_ip`` only. Refused unless inside the private
    network namespace, or ``interface_ip`` is 127.x and the caller allows loopback multicast."""
    ip = ipaddress.ip_address(interface_ip)
    if not in_private_namespace():
        if not (ip.version == 4 and ip.is_loopback and allow_loopback_multicast):
            raise MulticastRefused(
                f"refusing to send mDNS on {interface_ip}: only inside the private network "
                "namespace (HOMEDASH_PRIVATE_NETNS=1) or on 127.x with allow_loopback_multicast=True")
    zc = AsyncZeroconf(interfaces=[interface_ip], ip_version=IPVersion.V4Only)
    ad = Advertisement(zc)
    async def register(info: ServiceInfo) -> None:
        # Two devices may carry the same user name; the second one gets renamed by the
        # usual DNS-SD conflict rule instead of failing the whole announcement.
        announced = await zc.async_register_service(info, allow_name_change=True)
        await announced
        ad.services.append(info)

    try:
        # Probing takes ~1 s per record; do all records at once.
        await asyncio.gather(*(register(info) for device in devices
                               for info in service_infos(device, interface_ip)))
    except BaseException:
        await ad.close()
        raise
    return ad
