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
