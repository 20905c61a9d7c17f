"""Who may see and do what. Every view, htmx action, websocket consumer, export and admin
page asks here; nothing else decides.

Levels per room, for a user or any of their groups: none, view, control (the highest
grant wins). Staff see and control everything and manage devices. Reading a device's
debug log is a separate permission ("devices.read_debug_logs"), because logs can carry
things a room member should not see.
"""

from __future__ import annotations

from django.db.models import Q, QuerySet

from devices.models import Channel, Device, DeviceEvent, Room, RoomAccess

NONE, VIEW, CONTROL = 0, 1, 2
_LEVELS = {RoomAccess.Level.VIEW: VIEW, RoomAccess.Level.CONTROL: CONTROL}
DEBUG_LOG_PERMISSION = "devices.read_debug_logs"


def _active(user) -> bool:
    return bool(user is not None and getattr(user, "is_authenticated", False) and getattr(user, "is_active", False))


def room_levels(user) -> dict[int, int]:
    """{room pk: level} for every room the user has any access to (staff: all, control)."""
    if not _active(user):
        return {}
    if user.is_staff:
        return {pk: CONTROL for pk in Room.objects.values_list("pk", flat=True)}
    levels: dict[int, int] = {}
    grants = RoomAccess.objects.filter(Q(user=user) | Q(group__in=user.groups.all())).values_list("room_id", "level")
    for room_id, level in grants:
        levels[room_id] = max(levels.get(room_id, NONE), _LEVELS.get(level, NONE))
    return levels


def visible_rooms(user) -> QuerySet[Room]:
    if not _active(user):
        return Room.objects.none()
    if user.is_staff:
        return Room.objects.all()
    return Room.objects.filter(pk__in=[pk for pk, level in room_levels(user).items() if level >= VIEW])


def level_in_room(user, room: Room | int | None) -> int:
    if not _active(user):
        return NONE
    if user.is_staff:
        return CONTROL
    if room is None:
        return NONE  # channels without a room are for staff only
    room_pk = room if isinstance(room, int) else room.pk
    return room_levels(user).get(room_pk, NONE)


def channel_room_pk(channel: Channel) -> int | None:
    return channel.room_id if channel.room_id is not None else channel.device.room_id


def may_view_room(user, room) -> bool:
    return level_in_room(user, room) >= VIEW


def may_view_channel(user, channel: Channel) -> bool:
    if not _active(user):
        return False
    if user.is_staff:
        return True
    return channel.visible and level_in_room(user, channel_room_pk(channel)) >= VIEW


def may_control_channel(user, channel: Channel) -> bool:
    if not _active(user):
        return False
    if user.is_staff:
        return True
    return channel.visible and level_in_room(user, channel_room_pk(channel)) >= CONTROL


def may_view_device(user, device: Device) -> bool:
    """A device page is visible to whoever may see at least one of its channels."""
    if not _active(user):
        return False
    if user.is_staff:
        return True
    levels = room_levels(user)
    rooms = {c.room_id if c.room_id is not None else device.room_id for c in device.channels.all() if c.visible}
    if not rooms:
        rooms = {device.room_id}
    return any(levels.get(r, NONE) >= VIEW for r in rooms if r is not None)


def may_manage_devices(user) -> bool:
    """Adopt, rename, re-address, set credentials, scan: staff only."""
    return _active(user) and user.is_staff


def may_manage_member(user, member) -> bool:
    """Change a member's rights (room levels, debug logs, active, staff): staff may for
    ordinary members; only a superuser may for a member who is staff or superuser. So a
    staff account cannot lock out the superuser or another administrator, and — since it
    is staff itself — cannot change its own rights either."""
    if not may_manage_devices(user):
        return False
    if getattr(member, "is_staff", False) or getattr(member, "is_superuser", False):
        return bool(user.is_superuser)
    return True


def may_manage_privileges(user) -> bool:
    """Make someone staff or superuser, or hand out Django permissions and groups (which
    can carry permissions): superusers only."""
    return _active(user) and bool(user.is_superuser)


def may_read_logs(user, device: Device | None = None) -> bool:
    if not _active(user):
        return False
    if user.is_staff:
        return True
    if not user.has_perm(DEBUG_LOG_PERMISSION):
        return False
    return device is None or may_view_device(user, device)


def visible_channels(user) -> QuerySet[Channel]:
    """Channels on the user's home page, with device and rooms joined."""
    qs = Channel.objects.select_related("device", "room", "device__room").filter(device__adopted=True)
    if not _active(user):
        return qs.none()
    if user.is_staff:
        return qs
    rooms = [pk for pk, level in room_levels(user).items() if level >= VIEW]
    return qs.filter(visible=True).filter(Q(room_id__in=rooms) | Q(room__isnull=True, device__room_id__in=rooms))


def visible_events(user, events: QuerySet[DeviceEvent]) -> QuerySet[DeviceEvent]:
    """Narrow ``events`` to what the user may read: events of a channel the user cannot
    see stay hidden even on a device they share (a Bedroom button on the Kitchen plug's
    device). Device-wide events (online, address changes) go with the device."""
    if not _active(user):
        return events.none()
    if user.is_staff:
        return events
    return events.filter(Q(channel__isnull=True) | Q(channel__in=visible_channels(user)))


def may_view_raw(user, device: Device) -> bool:
    """The device's own words (raw status and info) only for whoever may see every one of
    its channels.

    Stricter than filtering the JSON on purpose: each firmware names its components its
    own way (Gen2 ``switch:0`` and also ``input:0``/``em1:0`` that feed it, Gen1
    ``relays[0]`` beside ``meters[0]`` and ``inputs[0]``, myStrom one flat object), a
    firmware update adds keys, and a filter that does not know a key would leak it. All or
    nothing cannot leak a component it does not understand."""
    if not _active(user):
        return False
    if user.is_staff:
        return True
    if not may_view_device(user, device):
        return False
    return all(may_view_channel(user, c) for c in device.channels.select_related("device", "room"))
