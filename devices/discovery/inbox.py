"""Where discovered devices land: the inbox (``adopted=False``) for new MACs, an address
update for known ones.

The MAC is the identity, but only a claimed one: anyone on the LAN can announce any MAC
from any address, and answer ``/shelly`` or ``/api/v1/info`` with it. So:

* A known device *without* credentials answering at a new address is the DHCP lease that
  changed overnight — the failure every other dashboard reports as "device unavailable" —
  so the address is updated, an ``address_changed`` event says from where to where and the
  audit trail records it. Nothing secret follows it there.
* A known device *with* credentials (a password or a token) never moves on such a claim:
  homedash would send its secrets to whoever claimed it. The new address becomes a
  *pending move* (``Device.pending_*``), shown to staff in the inbox as "seems to have
  moved — confirm / dismiss" (``confirm_move`` / ``dismiss_move``). See docs/security.md.

The household's own decisions are never undone here: an ignored device stays ignored, a
name given in homedash is kept, an adopted device stays adopted.

Synchronous Django code; async callers go through ``asgiref.sync.sync_to_async``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from devices.credentials import Credentials
from devices.drivers.types import DeviceInfo
from devices.models import AuditEntry, Device, DeviceEvent, normalise_mac

from .identify import AddressRefused, Candidate, check_host, check_port

log = logging.getLogger(__name__)

CREATED = "created"
MOVED = "moved"
UNCHANGED = "unchanged"
PENDING = "pending"  # a protected device seems to have moved; staff decides

# A pending move is replaced by a claim from yet another address at most this often, so a
# LAN flooding claims for one MAC from many addresses writes one event a minute, not one per
# packet (and the address staff look at does not change under their eyes every second).
PENDING_REPLACE_AFTER = 60.0

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
    pending_host: str | None = None  # kind == "pending": where the device seems to be now
    pending_port: int | None = None

    @property
    def address(self) -> str:
        return _address(self.host, self.port)

    @property
    def old_address(self) -> str | None:
        return None if self.old_host is None else _address(self.old_host, self.old_port or 80)

    @property
    def pending_address(self) -> str | None:
        return None if self.pending_host is None else _address(self.pending_host, self.pending_port or 80)


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
        host = check_host(host, allow_loopback=settings.ALLOW_LOOPBACK_DEVICES, allow_public=False)
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

    ``confirmed``: something answered at ``host:port`` with this MAC. That is still no proof
    (an impostor answers with any MAC), so it moves only a device without credentials; a
    device with credentials gets a pending move instead, confirmed or not. An unconfirmed
    candidate (a myStrom announcement we could not verify because of a token, an mDNS
    record of a sleeper that went back to sleep) may create an inbox entry or a pending
    move but never moves a known device.
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
        if not same_place and device.has_credentials:
            # A claim is no proof, and following it would send the device's password or
            # token to whoever made it: staff decide.
            return _note_pending_move(device, host, port, found_by, confirmed, request, now)
        if same_place and device.pending_host and (device.pending_host, device.pending_port) == (host, port):
            # Staff (or the admin) already put the device where it claimed to be.
            updates.update(_NO_PENDING)
        if not same_place and not confirmed:
            log.info("%s claimed to be at %s but could not prove it; keeping %s", mac, _address(host, port), device.address)
            return _outcome(UNCHANGED, device, found_by)
        if not same_place:
            kind = MOVED
            updates.update(host=host, port=port)
            if device.pending_host:
                updates.update(_NO_PENDING)  # credentials removed since: the claim is moot
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
            AuditEntry.record(request=request, action="device.moved", device=device,
                              detail=f"{old} → {new} ({found_by}; no credentials, so followed automatically)")
            log.info("%s moved from %s to %s (%s)", mac, old, new, found_by)
        return _outcome(kind, device, found_by, old_host if kind == MOVED else None, old_port if kind == MOVED else None)


_NO_PENDING: dict[str, Any] = {
    "pending_host": "", "pending_port": None, "pending_found_by": "", "pending_since": None, "pending_answered": False,
}


def _note_pending_move(
    device: Device, host: str, port: int, found_by: str, answered: bool, request: Any, now
) -> Outcome:
    """A device with credentials is claimed at a new address: remember it for staff, write
    nothing else. Not even ``last_seen`` or firmware: what answered there may not be it."""
    current = (device.pending_host, device.pending_port)
    if current == (host, port):
        if answered and not device.pending_answered:
            Device.objects.filter(pk=device.pk).update(pending_answered=True)
            device.pending_answered = True
        return _pending_outcome(device, found_by)
    if device.pending_host and device.pending_since is not None:
        if (now - device.pending_since).total_seconds() < PENDING_REPLACE_AFTER:
            log.debug("%s claimed again from %s; keeping the pending move to %s for now",
                      device.mac, _address(host, port), device.pending_address)
            return _pending_outcome(device, found_by)
    pending = {"pending_host": host, "pending_port": port, "pending_found_by": found_by,
               "pending_since": now, "pending_answered": bool(answered)}
    # A plain UPDATE: nothing the runtime follows has changed, so it must not reload.
    Device.objects.filter(pk=device.pk).update(**pending)
    for key, value in pending.items():
        setattr(device, key, value)
    old, new = device.address, _address(host, port)
    how = dict(Device.FoundBy.choices).get(found_by, found_by)
    said = "answered there with its MAC" if answered else "only claimed its MAC"
    DeviceEvent.objects.create(
        device=device,
        kind="move_pending",
        detail=f"seems to have moved to {new} ({how}; {said}); staff must confirm"[:300],
        data={"host": device.host, "port": device.port, "pending_host": host, "pending_port": port,
              "found_by": found_by, "answered": bool(answered)},
    )
    AuditEntry.record(request=request, action="device.move_pending", device=device, result=AuditEntry.Result.DENIED,
                      detail=f"{old} → {new} claimed ({found_by}, {said}); not followed: the device has credentials")
    log.warning("%s (with credentials) claimed at %s, known at %s: pending until staff confirm",
                device.mac, new, old)
    return _pending_outcome(device, found_by)


def _pending_outcome(device: Device, found_by: str) -> Outcome:
    outcome = _outcome(PENDING, device, found_by)
    return dataclasses.replace(outcome, pending_host=device.pending_host or None, pending_port=device.pending_port)


class MoveChanged(ValueError):
    """The pending move staff answered is not the one stored any more (gone, or replaced
    by a claim from another address since the page was drawn)."""


def _pending_device(device_pk: int, host: str, port: int) -> Device:
    device = Device.objects.select_for_update().filter(pk=device_pk).first()
    if device is None or not device.pending_host:
        raise MoveChanged("there is no pending move for this device any more")
    if (device.pending_host, device.pending_port) != (host, port):
        raise MoveChanged(f"{device} now seems to be at {device.pending_address}; look at it again before deciding")
    return device


def confirm_move(device_pk: int, host: str, port: int, *, request: Any) -> Device:
    """Staff confirmed that the device is at ``host:port`` now: follow it there. ``host``
    and ``port`` are what the page showed, so a claim that changed since is not what gets
    approved. Saved through save() so the runtime re-reads the device at once."""
    with transaction.atomic():
        device = _pending_device(device_pk, host, port)
        try:
            host = check_host(host, allow_loopback=settings.ALLOW_LOOPBACK_DEVICES, allow_public=False)
        except AddressRefused as exc:
            raise MoveChanged(str(exc)) from None
        old_host, old_port = device.host, device.port
        old, new = device.address, _address(host, port)
        found_by = device.pending_found_by
        device.host, device.port = host, port
        for key, value in _NO_PENDING.items():
            setattr(device, key, value)
        device.save(update_fields=["host", "port", *_NO_PENDING, "updated"])
        DeviceEvent.objects.create(
            device=device,
            kind="address_changed",
            detail=f"{old} → {new} (confirmed by staff)"[:300],
            data={"old_host": old_host, "old_port": old_port, "host": host, "port": port, "found_by": found_by,
                  "confirmed_by": getattr(getattr(request, "user", None), "username", "")},
        )
        AuditEntry.record(request=request, action="device.move_confirm", device=device, detail=f"{old} → {new}")
    log.info("%s moved from %s to %s, confirmed by staff", device.mac, old, new)
    return device


def dismiss_move(device_pk: int, host: str, port: int, *, request: Any) -> Device:
    """Staff say the device did not move: forget the claim. The device stays where it was."""
    with transaction.atomic():
        device = _pending_device(device_pk, host, port)
        claimed = device.pending_address
        Device.objects.filter(pk=device.pk).update(**_NO_PENDING)
        for key, value in _NO_PENDING.items():
            setattr(device, key, value)
        DeviceEvent.objects.create(device=device, kind="move_dismissed",
                                   detail=f"claim to be at {claimed} dismissed by staff"[:300],
                                   data={"pending_host": host, "pending_port": port})
        AuditEntry.record(request=request, action="device.move_dismiss", device=device,
                          detail=f"stays at {device.address}; claim at {claimed} dismissed")
    return device


def _create(
    info: DeviceInfo, mac: str, host: str, port: int, found_by: str, confirmed: bool, request: Any, now
) -> Outcome:
    # An announcement nobody could verify (a token hid the device's answer) waits for the
    # household even with HOMEDASH_AUTO_ADOPT: anyone on the LAN can send one.
    auto = bool(getattr(settings, "AUTO_ADOPT", False)) and confirmed
    if not auto:
        make_room(now)
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


@dataclass(frozen=True, slots=True)
class KnownDevice:
    """What discovery may know about a MAC before it probes a claimed address: where staff
    approved the device to be, and whether it has secrets. ``token`` is the stored myStrom
    token, for a probe at ``host:port`` and nowhere else; it is left out of repr()."""

    host: str
    port: int
    protected: bool
    token: str | None = dataclasses.field(default=None, repr=False)

    def at(self, host: str) -> bool:
        """Is ``host`` the approved address? Exactly the stored one: a name staff typed is
        not compared with the address it resolves to today (the LAN's DNS is no more
        trusted than its announcements), so such a device asks for a confirmation once."""
        return host == self.host


def known_device(mac: str) -> KnownDevice | None:
    """The approved address (and myStrom token) of a known MAC, for discovery's probes."""
    device = (
        Device.objects.filter(mac=mac).only("host", "port", "vendor", "credentials").first()
    )
    if device is None:
        return None
    creds = device.credentials
    token = creds.token if device.vendor == Device.Vendor.MYSTROM and isinstance(creds, Credentials) else ""
    return KnownDevice(host=device.host, port=device.port, protected=device.has_credentials, token=token or None)


# ----------------------------------------------------------------------------- bounds
# Anyone on the LAN can announce any number of MACs, so what waits in the inbox is bounded
# in count and in time. Only rows discovery itself made are ever removed: never an adopted
# or ignored device, nor one the household already gave a room, or that was followed once
# (it has channels).

INBOX_LIMIT = 200  # devices waiting in the inbox; a household has a few dozen
INBOX_EXPIRY_DAYS = 14  # a waiting device not seen for this long is forgotten


class InboxFull(InboxRefused):
    """The inbox holds INBOX_LIMIT waiting devices and none of them may be removed."""


def inbox_limit() -> int:
    return max(1, int(getattr(settings, "INBOX_LIMIT", INBOX_LIMIT)))


def _waiting():
    return Device.objects.filter(adopted=False, ignored=False)


def _removable():
    """Waiting devices discovery may forget: nothing of the household's is attached."""
    return _waiting().filter(room__isnull=True, channels__isnull=True)


def prune_inbox(now=None) -> int:
    """Forget waiting devices not seen for INBOX_EXPIRY_DAYS. Returns how many."""
    now = now or timezone.now()
    days = float(getattr(settings, "INBOX_EXPIRY_DAYS", INBOX_EXPIRY_DAYS))
    cutoff = now - timezone.timedelta(days=days)
    stale = list(_removable().filter(models.Q(last_seen__lt=cutoff) | models.Q(last_seen__isnull=True, created__lt=cutoff))
                 .values_list("pk", flat=True)[:1000])
    if stale:
        Device.objects.filter(pk__in=stale).delete()
        log.info("inbox: forgot %d device(s) not seen for %g days", len(stale), days)
    return len(stale)


def make_room(now=None) -> None:
    """Before a new device enters the inbox: keep at most ``inbox_limit()`` waiting. The
    least recently seen removable ones make way (a real device announces itself again
    within minutes and comes back; a flood cannot keep anything out for long). When
    nothing may be removed, the newcomer is refused (InboxFull)."""
    limit = inbox_limit()
    waiting = _waiting().count()
    if waiting < limit:
        return
    waiting -= prune_inbox(now)
    excess = waiting - limit + 1
    if excess <= 0:
        return
    oldest = list(_removable().order_by(models.F("last_seen").asc(nulls_first=True), "pk")
                  .values_list("pk", flat=True)[:excess])
    if oldest:
        Device.objects.filter(pk__in=oldest).delete()
        log.info("inbox full (%d waiting): forgot the %d least recently seen", waiting, len(oldest))
    if len(oldest) < excess:
        raise InboxFull(f"the inbox already holds {limit} devices waiting for the household")


__all__ = [
    "CREATED",
    "InboxFull",
    "InboxRefused",
    "KnownDevice",
    "MOVED",
    "MoveChanged",
    "Outcome",
    "PENDING",
    "UNCHANGED",
    "bounded_raw",
    "clean_text",
    "confirm_move",
    "dismiss_move",
    "known_device",
    "record",
    "record_candidate",
]
