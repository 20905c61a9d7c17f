"""Where discovered devices land: the inbox (``adopted=False``) for new MACs, an address
update for known ones.

The MAC is the identity. A known MAC answering at a new address is the DHCP lease that
changed overnight — the failure every other dashboard reports as "device unavailable" — so
the address is updated and an ``address_changed`` event says from where to where. The
household's own decisions are never undone here: an ignored device stays ignored, a name
given in homedash is kept, an adopted device stays adopted.

Synchronous Django code; async callers go through ``asgiref.sync.sync_to_async``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from devices.credentials import Credentials
from devices.drivers.types import DeviceInfo
from devices.models import AuditEntry, Device, DeviceEvent, normalise_mac

from .identify import AddressRefused, Candidate, check_host, check_port

log = logging.getLogger(__name__)

CREATED = "created"
MOVED = "moved"
UNCHANGED = "unchanged"

# raw_info is shown on the device page as "what the device said"; a real /shelly or
# /api/v1/info is well under 1 KiB.
RAW_INFO_CAP = 8 * 1024
RAW_KEYS_CAP = 64
RAW_VALUE_CAP = 256


class InboxRefused(ValueError):
    """The candidate cannot be stored (no MAC, unknown vendor, bad address)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What recording a candidate did. ``kind`` is created / moved / unchanged."""

    kind: str
    device_id: int
    mac: str
    vendor: str
    host: str
    port: int
    found_by: str
    adopted: bool
    ignored: bool
    old_host: str | None = None
    old_port: int | None = None
    auth_required: bool = False

    @property
    def address(self) -> str:
        return _address(self.host, self.port)

    @property
    def old_address(self) -> str | None:
        return None if self.old_host is None else _address(self.old_host, self.old_port or 80)


def _address(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port == 80 else f"{shown}:{port}"


def _field_max(name: str) -> int:
    return Device._meta.get_field(name).max_length  # type: ignore[return-value]


def clean_text(value: Any, limit: int) -> str:
    """Printable characters only (no NULs, newlines or terminal escapes from a device
    name), trimmed to the column's length. Escaping for HTML is the template's job."""
    if not isinstance(value, str):
        return ""
    return "".join(ch for ch in value if ch.isprintable()).strip()[:limit]


def bounded_raw(raw: Any) -> dict[str, Any]:
    """A JSON-safe, size-capped copy of what the device sent."""
    if not isinstance(raw, dict):
        return {}
    try:
        text = json.dumps(raw, default=str, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        text = None
    if text is not None and len(text) <= RAW_INFO_CAP:
        return json.loads(text)
    # Too big (or unencodable): keep the top-level scalars, which is where identity lives.
    kept: dict[str, Any] = {}
    for key, value in list(raw.items())[:RAW_KEYS_CAP]:
        if not isinstance(key, str):
            continue
        if isinstance(value, str):
            kept[key[:64]] = value[:RAW_VALUE_CAP]
        elif isinstance(value, (bool, int, float)) or value is None:
            kept[key[:64]] = value if not isinstance(value, float) or value == value else None
    kept["_truncated"] = True
    return kept


def _validated(info: DeviceInfo, host: str, port: int, found_by: str) -> tuple[str, str, int]:
    try:
        mac = normalise_mac(info.mac or "")
    except ValidationError:
        raise InboxRefused(f"{info.mac!r} is not a MAC address") from None
    if info.vendor not in Device.Vendor.values:
        raise InboxRefused(f"unknown vendor {info.vendor!r}")
    if found_by not in Device.FoundBy.values:
        raise InboxRefused(f"unknown discovery path {found_by!r}")
    try:
        host = check_host(host, allow_loopback=settings.ALLOW_LOOPBACK_DEVICES)
        port = check_port(port)
    except AddressRefused as exc:
        raise InboxRefused(str(exc)) from None
    return mac, host, port


def _generation(info: DeviceInfo) -> int | None:
    # Device.generation is "Shelly generation (1-4); empty for myStrom".
    if info.vendor != "shelly" or not isinstance(info.generation, int) or not 1 <= info.generation <= 9:
        return None
    return info.generation


def _identity_fields(info: DeviceInfo) -> dict[str, Any]:
    """What the device says about itself, cleaned for storage."""
    return {
        "generation": _generation(info),
        "model_code": clean_text(info.model, _field_max("model_code")),
        "model_name": clean_text(info.model_name, _field_max("model_name")),
        "firmware": clean_text(info.firmware, _field_max("firmware")),
        "raw_info": bounded_raw(info.raw),
    }


def record(
    info: DeviceInfo,
    host: str,
    port: int,
    found_by: str,
    *,
    confirmed: bool = True,
    request: Any = None,
) -> Outcome:
    """Store a discovered device. See the module docstring for the rules.

    ``confirmed``: the device answered at ``host:port`` with this MAC. An unconfirmed
    candidate (a myStrom announcement we could not verify because of a token, an mDNS
    record of a sleeper that went back to sleep) may create an inbox entry but never moves
    a known device: a forged packet must not redirect the household's devices.
    ``request``: the web request of a manual add, for the audit trail.
    """
    mac, host, port = _validated(info, host, port, found_by)
    try:
        return _record(info, mac, host, port, found_by, confirmed, request)
    except IntegrityError:
        # Two discovery paths found the same new MAC at the same moment; the other won the
        # insert, so this one is now an update.
        return _record(info, mac, host, port, found_by, confirmed, request)


def record_candidate(candidate: Candidate, *, request: Any = None) -> Outcome:
    return record(
        candidate.info, candidate.host, candidate.port, candidate.found_by,
        confirmed=candidate.confirmed, request=request,
    )


def _record(
    info: DeviceInfo, mac: str, host: str, port: int, found_by: str, confirmed: bool, request: Any
) -> Outcome:
    now = timezone.now()
    with transaction.atomic():
        device = Device.objects.select_for_update().filter(mac=mac).first()
        if device is None:
            return _create(info, mac, host, port, found_by, confirmed, request, now)

        updates: dict[str, Any] = {"last_seen": now}
        kind = UNCHANGED
        old_host, old_port = device.host, device.port
        same_place = (device.host, device.port) == (host, port)
        if device.vendor != info.vendor:
            log.warning("%s answers as %s but is known as %s; not updated", mac, info.vendor, device.vendor)
            return _outcome(UNCHANGED, device, found_by)
        if not same_place and not confirmed:
            log.info("%s claimed to be at %s but could not prove it; keeping %s", mac, _address(host, port), device.address)
            return _outcome(UNCHANGED, device, found_by)
        if not same_place:
            kind = MOVED
            updates.update(host=host, port=port)
        if confirmed:
            for key, value in _identity_fields(info).items():
                # Never blank out what we knew because one answer left a field out.
                if value not in ("", None, {}) and getattr(device, key) != value:
                    updates[key] = value
            updates["auth_required"] = bool(info.auth_enabled)
            if not device.name and info.name:
                updates["name"] = clean_text(info.name, _field_max("name"))
        elif info.auth_enabled and not device.auth_required:
            updates["auth_required"] = True
        # Only the columns discovery owns are written: the runtime may be writing this
        # row's live fields (online, raw_status) at the same moment. A new address or a
        # new need for credentials goes through save() so post_save tells the runtime
        # (which follows the database by that signal) to re-read the device at once; a
        # mere "seen again" is a plain UPDATE that wakes nobody.
        tells_runtime = kind == MOVED or updates.get("auth_required", device.auth_required) != device.auth_required
        for key, value in updates.items():
            setattr(device, key, value)
        if tells_runtime:
            device.save(update_fields=[*updates, "updated"])
        else:
            Device.objects.filter(pk=device.pk).update(**updates)
        if kind == MOVED:
            old, new = _address(old_host, old_port), _address(host, port)
            DeviceEvent.objects.create(
                device=device,
                kind="address_changed",
                detail=f"{old} → {new}",
                data={"old_host": old_host, "old_port": old_port, "host": host, "port": port, "found_by": found_by},
            )
            log.info("%s moved from %s to %s (%s)", mac, old, new, found_by)
        return _outcome(kind, device, found_by, old_host if kind == MOVED else None, old_port if kind == MOVED else None)


def _create(
    info: DeviceInfo, mac: str, host: str, port: int, found_by: str, confirmed: bool, request: Any, now
) -> Outcome:
    auto = bool(getattr(settings, "AUTO_ADOPT", False))
    fields = _identity_fields(info)
    device = Device.objects.create(
        mac=mac,
        vendor=info.vendor,
        host=host,
        port=port,
        name=clean_text(info.name, _field_max("name")),
        auth_required=bool(info.auth_enabled),
        found_by=found_by,
        adopted=auto,
        last_seen=now,
        **fields,
    )
    how = dict(Device.FoundBy.choices).get(found_by, found_by)
    DeviceEvent.objects.create(
        device=device,
        kind="discovered",
        detail=f"found at {_address(host, port)} ({how})"[:300],
        data={"found_by": found_by, "confirmed": confirmed},
    )
    if found_by == Device.FoundBy.MANUAL or request is not None:
        AuditEntry.record(request=request, action="device.add", device=device, detail=f"{mac} at {_address(host, port)}")
    if auto:
        AuditEntry.record(action="device.auto_adopt", device=device, detail="adopted automatically (HOMEDASH_AUTO_ADOPT)")
    log.info("new %s device %s at %s (%s)%s", info.vendor, mac, _address(host, port), found_by, " adopted" if auto else "")
    return _outcome(CREATED, device, found_by)


def _outcome(kind: str, device: Device, found_by: str, old_host: str | None = None, old_port: int | None = None) -> Outcome:
    return Outcome(
        kind=kind,
        device_id=device.pk,
        mac=device.mac,
        vendor=device.vendor,
        host=device.host,
        port=device.port,
        found_by=found_by,
        adopted=device.adopted,
        ignored=device.ignored,
        old_host=old_host,
        old_port=old_port,
        auth_required=device.auth_required,
    )


def token_for(mac: str) -> str | None:
    """The stored myStrom token of a known device, so discovery can confirm a
    token-protected device that moved. Never logged, never returned anywhere else."""
    device = Device.objects.filter(mac=mac, vendor=Device.Vendor.MYSTROM).only("credentials").first()
    creds = device.credentials if device is not None else None
    if isinstance(creds, Credentials) and creds.token:
        return creds.token
    return None


__all__ = [
    "CREATED",
    "InboxRefused",
    "MOVED",
    "Outcome",
    "UNCHANGED",
    "bounded_raw",
    "clean_text",
    "record",
    "record_candidate",
    "token_for",
]
