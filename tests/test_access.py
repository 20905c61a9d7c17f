"""The access module: levels per room for users and groups, staff everywhere, channels in
their own room or their device's, debug logs a separate permission."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission

from devices import access
from devices.models import Channel, Device, Room, RoomAccess

pytestmark = pytest.mark.django_db


@pytest.fixture
def house(django_user_model):
    kitchen, kids, cellar = (Room.objects.create(name=n) for n in ("Kitchen", "Kids", "Cellar"))
    device = Device.objects.create(mac="AABBCC000010", vendor="shelly", generation=2, host="192.0.2.10",
                                   room=kitchen, adopted=True)
    lamp = Channel.objects.create(device=device, key="switch:0", kind="switch")               # kitchen (device room)
    boiler = Channel.objects.create(device=device, key="switch:1", kind="switch", room=cellar)
    nightlight = Channel.objects.create(device=device, key="switch:2", kind="switch", room=kids)
    users = {name: django_user_model.objects.create_user(name, password="x" * 12)
             for name in ("kid", "guest", "outsider", "parent")}
    users["staff"] = django_user_model.objects.create_user("staff", password="x" * 12, is_staff=True)
    family = Group.objects.create(name="family")
    users["parent"].groups.add(family)
    RoomAccess.objects.create(room=kids, user=users["kid"], level="control")
    RoomAccess.objects.create(room=kitchen, user=users["kid"], level="view")
    RoomAccess.objects.create(room=kitchen, user=users["guest"], level="view")
    RoomAccess.objects.create(room=kitchen, group=family, level="control")
    RoomAccess.objects.create(room=cellar, group=family, level="view")
    RoomAccess.objects.create(room=cellar, user=users["parent"], level="control")  # highest grant wins
    return {"rooms": (kitchen, kids, cellar), "device": device, "lamp": lamp, "boiler": boiler,
            "nightlight": nightlight, **users}


def test_levels(house):
    kid, guest, outsider, parent, staff = (house[n] for n in ("kid", "guest", "outsider", "parent", "staff"))
    lamp, boiler, nightlight = house["lamp"], house["boiler"], house["nightlight"]
    assert access.may_control_channel(kid, nightlight) and not access.may_control_channel(kid, lamp)
    assert access.may_view_channel(kid, lamp) and not access.may_view_channel(kid, boiler)
    assert access.may_view_channel(guest, lamp) and not access.may_control_channel(guest, lamp)
    assert not any(access.may_view_channel(outsider, c) for c in (lamp, boiler, nightlight))
    assert access.may_control_channel(parent, boiler) and access.may_control_channel(parent, lamp)
    assert not access.may_view_channel(parent, nightlight)
    assert all(access.may_control_channel(staff, c) for c in (lamp, boiler, nightlight))
    assert set(access.visible_channels(kid)) == {lamp, nightlight}
    assert set(access.visible_channels(outsider)) == set()
    assert [r.name for r in access.visible_rooms(guest)] == ["Kitchen"]


def test_anonymous_and_inactive_get_nothing(house):
    from django.contrib.auth.models import AnonymousUser

    house["kid"].is_active = False
    for user in (AnonymousUser(), None, house["kid"]):
        assert not access.may_view_channel(user, house["lamp"]) and not access.visible_rooms(user).exists()


def test_hidden_channels_are_staff_only(house):
    house["lamp"].visible = False
    house["lamp"].save()
    assert not access.may_view_channel(house["guest"], house["lamp"])
    assert access.may_view_channel(house["staff"], house["lamp"])


def test_debug_logs_need_their_own_permission(house):
    device, parent = house["device"], house["parent"]
    assert access.may_read_logs(house["staff"], device)
    assert not access.may_read_logs(parent, device)
    parent.user_permissions.add(Permission.objects.get(codename="read_debug_logs"))
    parent = type(parent).objects.get(pk=parent.pk)  # permission cache
    assert access.may_read_logs(parent, device)
    assert not access.may_read_logs(house["outsider"], device)


def test_events_and_raw_status_follow_the_channels(house):
    from devices.models import DeviceEvent

    device, lamp, boiler, nightlight = house["device"], house["lamp"], house["boiler"], house["nightlight"]
    for channel in (lamp, boiler, nightlight, None):
        DeviceEvent.objects.create(device=device, channel=channel, kind="press" if channel else "online")
    events = DeviceEvent.objects.filter(device=device)
    seen = {e.channel for e in access.visible_events(house["kid"], events)}
    assert seen == {lamp, nightlight, None}  # the cellar's boiler stays hidden, device-wide events show
    # Device-wide events go with the device page, which the outsider cannot open at all.
    assert [e.channel for e in access.visible_events(house["outsider"], events)] == [None]
    assert {e.channel for e in access.visible_events(house["staff"], events)} == {lamp, boiler, nightlight, None}
    assert not access.visible_events(None, events).exists()
    # Raw status: all or nothing. The kid misses the cellar, the parent the kids' room.
    assert not access.may_view_raw(house["kid"], device) and not access.may_view_raw(house["parent"], device)
    assert access.may_view_raw(house["staff"], device)
    RoomAccess.objects.create(room=house["rooms"][2], user=house["kid"], level="view")
    assert access.may_view_raw(house["kid"], device)


def test_only_superusers_change_administrators(house, django_user_model):
    staff, kid = house["staff"], house["kid"]
    root = django_user_model.objects.create_superuser("root", password="x" * 12)
    other_staff = django_user_model.objects.create_user("sam", password="x" * 12, is_staff=True)
    assert access.may_manage_member(staff, kid)
    assert not access.may_manage_member(staff, root) and not access.may_manage_member(staff, other_staff)
    assert not access.may_manage_member(staff, staff)  # no raising oneself either
    assert access.may_manage_member(root, staff) and access.may_manage_member(root, other_staff)
    assert not access.may_manage_member(kid, house["guest"])
    assert access.may_manage_privileges(root) and not access.may_manage_privileges(staff)
