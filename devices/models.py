"""The household's configuration and history: rooms, devices and their channels, who may
do what where, readings over time, and the audit trail.

Live device state is not here: the runtime keeps it in memory and writes last-known values
and readings back in batches. A device is identified by its MAC; its address is just where
it was last seen.
"""

from __future__ import annotations

import re
import secrets

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from devices.credentials import EncryptedCredentialsField, LockedCredentials

MAC_RE = re.compile(r"^[0-9A-F]{12}$")


def normalise_mac(value: str) -> str:
    """Accept 'aa:bb:cc:dd:ee:ff', 'AA-BB-...' or 'aabbccddeeff'; store 12 upper-case hex
    digits, the form both vendors use in their APIs."""
    cleaned = re.sub(r"[^0-9A-Fa-f]", "", value or "").upper()
    if not MAC_RE.match(cleaned) or len(re.sub(r"[\s:.-]", "", value or "")) != 12:
        raise ValidationError(f"{value!r} is not a MAC address (12 hexadecimal digits)")
    return cleaned


def validate_mac(value: str) -> None:
    normalise_mac(value)


def new_webhook_secret() -> str:
    return secrets.token_urlsafe(24)


class Room(models.Model):
    ICONS = [
        ("home", "Home"), ("sofa", "Living room"), ("kitchen", "Kitchen"), ("bed", "Bedroom"),
        ("bath", "Bathroom"), ("desk", "Office"), ("child", "Kids' room"), ("garden", "Garden"),
        ("garage", "Garage"), ("cellar", "Cellar"), ("hall", "Hallway"), ("bolt", "Utility"),
    ]

    name = models.CharField(max_length=80, unique=True)
    order = models.PositiveIntegerField(default=0, help_text="Rooms are shown in this order.")
    icon = models.CharField(max_length=20, choices=ICONS, default="home")

    class Meta:
        ordering = ["order", "name"]

    def __str__(self) -> str:
        return self.name


class Device(models.Model):
    class Vendor(models.TextChoices):
        MYSTROM = "mystrom", "myStrom"
        SHELLY = "shelly", "Shelly"

    class FoundBy(models.TextChoices):
        UDP = "udp", "myStrom announcement (UDP)"
        MDNS = "mdns", "mDNS"
        MANUAL = "manual", "Added by address"
        SCAN = "scan", "Subnet scan"

    mac = models.CharField("MAC", max_length=12, unique=True, validators=[validate_mac])
    vendor = models.CharField(max_length=10, choices=Vendor.choices)
    generation = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Shelly generation (1-4); empty for myStrom."
    )
    model_code = models.CharField(max_length=40, blank=True)
    model_name = models.CharField(max_length=80, blank=True)
    host = models.CharField(max_length=253, help_text="IP address or host name on the LAN.")
    port = models.PositiveIntegerField(default=80)
    name = models.CharField(max_length=80, blank=True)
    room = models.ForeignKey(Room, null=True, blank=True, on_delete=models.SET_NULL, related_name="devices")
    firmware = models.CharField(max_length=80, blank=True)
    auth_required = models.BooleanField(default=False, help_text="The device asks for a password or token.")
    credentials = EncryptedCredentialsField(blank=True, default="")
    found_by = models.CharField(max_length=10, choices=FoundBy.choices, default=FoundBy.MANUAL)
    adopted = models.BooleanField(default=False, help_text="Adopted devices are followed; the others wait in the inbox.")
    ignored = models.BooleanField(default=False, help_text="Hidden from the inbox.")
    poll_interval = models.FloatField(default=5.0, help_text="Seconds between polls where the device cannot push.")
    online = models.BooleanField(default=False)
    last_seen = models.DateTimeField(null=True, blank=True)
    raw_info = models.JSONField(default=dict, blank=True)
    raw_status = models.JSONField(default=dict, blank=True)
    webhook_secret = models.CharField(max_length=64, default=new_webhook_secret, unique=True, editable=False)
    # Where discovery says a device with credentials now is. Anyone on the LAN can claim a
    # MAC from any address, so for such a device this is a question for staff ("seems to
    # have moved — confirm"), never a move: its secrets go only to an approved address.
    pending_host = models.CharField(max_length=253, blank=True, editable=False)
    pending_port = models.PositiveIntegerField(null=True, blank=True, editable=False)
    pending_found_by = models.CharField(max_length=10, choices=FoundBy.choices, blank=True, editable=False)
    pending_since = models.DateTimeField(null=True, blank=True, editable=False)
    pending_answered = models.BooleanField(
        default=False, editable=False,
        help_text="The new address answered with this MAC (without credentials); otherwise it only claimed it.",
    )
    created = models.DateTimeField(default=timezone.now, editable=False)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "mac"]
        indexes = [models.Index(fields=["adopted", "ignored"])]
        permissions = [("read_debug_logs", "May read device debug logs")]

    def __str__(self) -> str:
        return self.name or f"{self.model_name or self.model_code or self.vendor} {self.mac}"

    def clean(self) -> None:
        from devices.discovery.identify import AddressRefused, check_host

        if self.mac:
            self.mac = normalise_mac(self.mac)
        try:
            # Only staff edit addresses, and only to something that can be a device on the
            # LAN: no URLs, credentials or paths; no loopback or cloud-metadata link-local
            # addresses unless the simulator/demo setting allows them; never a public
            # address (its password or token would go there). Names are resolved by the
            # forms that save them and again by the runtime before it connects.
            self.host = check_host(self.host, allow_loopback=settings.ALLOW_LOOPBACK_DEVICES, allow_public=False)
        except AddressRefused as exc:
            raise ValidationError({"host": str(exc)}) from None
        if not 1 <= (self.port or 0) <= 65535:
            raise ValidationError({"port": "A port is a number from 1 to 65535."})
        if self.poll_interval is not None and not 1 <= self.poll_interval <= 3600:
            raise ValidationError({"poll_interval": "Poll between every 1 second and every hour."})

    def save(self, *args, **kwargs):
        if self.mac:
            self.mac = normalise_mac(self.mac)
        super().save(*args, **kwargs)

    @property
    def has_credentials(self) -> bool:
        # Unreadable (locked) credentials are still credentials the device has.
        return bool(self.credentials) or isinstance(self.credentials, LockedCredentials)

    @property
    def address(self) -> str:
        return self.host if self.port == 80 else f"{self.host}:{self.port}"

    @property
    def pending_address(self) -> str:
        if not self.pending_host:
            return ""
        shown = f"[{self.pending_host}]" if ":" in self.pending_host else self.pending_host
        return shown if self.pending_port in (None, 80) else f"{shown}:{self.pending_port}"


class Channel(models.Model):
    """One controllable or observable part of a device: a relay, a cover, a light, an input,
    a sensor. Multi-channel devices often feed loads in different rooms, so a channel has
    its own room and falls back to the device's."""

    class Kind(models.TextChoices):
        SWITCH = "switch", "Switch / plug"
        COVER = "cover", "Cover / roller"
        LIGHT = "light", "Light / dimmer"
        METER = "meter", "Energy meter"
        SENSOR = "sensor", "Sensor"
        INPUT = "input", "Input / button"
        UNKNOWN = "unknown", "Unknown"

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="channels")
    key = models.CharField(max_length=40, help_text="The device's own name for it, e.g. switch:0 or relay.")
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.UNKNOWN)
    name = models.CharField(max_length=80, blank=True)
    room = models.ForeignKey(Room, null=True, blank=True, on_delete=models.SET_NULL, related_name="channels")
    order = models.PositiveIntegerField(default=0)
    visible = models.BooleanField(default=True)
    last_state = models.JSONField(default=dict, blank=True, help_text="Last known state, shown as stale after a restart.")
    last_state_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["order", "id"]
        constraints = [models.UniqueConstraint(fields=["device", "key"], name="channel_unique_key_per_device")]

    def __str__(self) -> str:
        return self.name or f"{self.device} {self.key}"

    @property
    def effective_room(self) -> Room | None:
        return self.room or self.device.room


class RoomAccess(models.Model):
    """What a household member or a group may do in a room. Staff see and control
    everything without an entry here."""

    class Level(models.TextChoices):
        VIEW = "view", "View"
        CONTROL = "control", "Control"

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="access")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="room_access")
    group = models.ForeignKey(Group, null=True, blank=True, on_delete=models.CASCADE, related_name="room_access")
    level = models.CharField(max_length=10, choices=Level.choices, default=Level.VIEW)

    class Meta:
        verbose_name = "room access"
        verbose_name_plural = "room access"
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(user__isnull=False, group__isnull=True) | models.Q(user__isnull=True, group__isnull=False)),
                name="roomaccess_user_xor_group",
            ),
            models.UniqueConstraint(fields=["room", "user"], condition=models.Q(user__isnull=False), name="roomaccess_one_per_user"),
            models.UniqueConstraint(fields=["room", "group"], condition=models.Q(group__isnull=False), name="roomaccess_one_per_group"),
        ]

    def __str__(self) -> str:
        who = self.user or self.group
        return f"{who}: {self.get_level_display()} in {self.room}"

    def clean(self) -> None:
        if bool(self.user_id) == bool(self.group_id):
            raise ValidationError("Give access to either a user or a group.")


class Reading(models.Model):
    """A time series point. `resolution` is 0 for raw points; downsampled rows (kept longer)
    carry the seconds they summarise, so retention can thin old data without a new table."""

    class Metric(models.TextChoices):
        POWER = "power_w", "Power (W)"
        ENERGY = "energy_wh", "Energy (Wh)"
        TEMPERATURE = "temperature_c", "Temperature (°C)"
        HUMIDITY = "humidity_pct", "Humidity (%)"
        BATTERY = "battery_pct", "Battery (%)"
        VOLTAGE = "voltage_v", "Voltage (V)"
        CURRENT = "current_a", "Current (A)"
        ILLUMINANCE = "illuminance_lux", "Illuminance (lx)"
        POSITION = "position_pct", "Position (%)"

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="readings")
    metric = models.CharField(max_length=20, choices=Metric.choices)
    ts = models.DateTimeField(db_index=True)
    value = models.FloatField()
    resolution = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["ts"]
        indexes = [models.Index(fields=["channel", "metric", "ts"], name="reading_range")]

    def __str__(self) -> str:
        return f"{self.channel} {self.metric}={self.value} @ {self.ts:%Y-%m-%d %H:%M}"


class DeviceEvent(models.Model):
    """Things that happened to or on a device: button presses, online/offline, address
    changes, firmware updates."""

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="events")
    channel = models.ForeignKey(Channel, null=True, blank=True, on_delete=models.SET_NULL, related_name="events")
    ts = models.DateTimeField(default=timezone.now, db_index=True)
    kind = models.CharField(max_length=40)
    detail = models.CharField(max_length=300, blank=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-ts"]
        indexes = [models.Index(fields=["device", "-ts"], name="event_device_ts")]

    def __str__(self) -> str:
        return f"{self.ts:%Y-%m-%d %H:%M:%S} {self.device} {self.kind}"


class AuditEntry(models.Model):
    """Who did what, to what, from where, with what result. Commands and every change of
    access, credentials or device settings land here."""

    class Result(models.TextChoices):
        OK = "ok", "OK"
        DENIED = "denied", "Denied"
        FAILED = "failed", "Failed"

    ts = models.DateTimeField(default=timezone.now, db_index=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    username = models.CharField(max_length=150, blank=True, help_text="Kept when the user is deleted.")
    action = models.CharField(max_length=60)
    device = models.ForeignKey(Device, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit")
    channel = models.ForeignKey(Channel, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit")
    source_address = models.GenericIPAddressField(null=True, blank=True)
    result = models.CharField(max_length=10, choices=Result.choices, default=Result.OK)
    detail = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-ts"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.ts:%Y-%m-%d %H:%M:%S} {self.username or '-'} {self.action} {self.result}"

    @classmethod
    def record(cls, *, request=None, user=None, action: str, device=None, channel=None,
               result: str = "ok", detail: str = "") -> "AuditEntry":
        if request is not None and user is None:
            user = getattr(request, "user", None)
        if user is not None and not getattr(user, "is_authenticated", False):
            user = None
        address = request.META.get("REMOTE_ADDR") if request is not None else None
        return cls.objects.create(
            user=user,
            username=user.get_username() if user else "",
            action=action,
            device=device,
            channel=channel,
            source_address=address or None,
            result=result,
            detail=detail[:500],
        )
