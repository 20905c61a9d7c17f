"""Household management for staff: members, room levels, the debug-log permission,
deactivation — each audited, each reaching the member's open sockets; the same in the
admin (RoomAccess inline on users and groups); the audit filter on the events page."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from devices import access
from devices.models import AuditEntry, RoomAccess
from tests.security.secfixtures import build_secure_house, client_for
from tests.security.test_sec_matrix import ws_connect


def staff_client(house):
    return client_for(house, "staff")


@pytest.mark.django_db
def test_household_page_lists_members_and_levels(shouse):
    page = staff_client(shouse).get(reverse("household")).content.decode()
    for name in ("anna", "ben", "cara", "dora", "Kitchen", "Garden"):
        assert name in page
    assert f'id="member-{shouse.ben.pk}"' in page
    assert 'value="control" selected' in page and 'value="view" selected' in page
    assert 'href="/household/"' in page  # the top-bar link, for staff
    assert 'href="/household/"' not in client_for(shouse, "controller").get(reverse("home")).content.decode()


@pytest.mark.django_db
def test_create_member_applies_the_password_validators(shouse):
    client = staff_client(shouse)
    url = reverse("household-add-member")
    for password in ("short", "password123", "1234567890123"):
        response = client.post(url, {"username": "fritz", "password": password, "password_again": password})
        assert response.status_code == 400, password
        assert not get_user_model().objects.filter(username="fritz").exists()
    response = client.post(url, {"username": "fritz", "password": "x", "password_again": "y"})
    assert response.status_code == 400
    response = client.post(url, {"username": "cara", "password": "Tr0ub4dor&3x", "password_again": "Tr0ub4dor&3x"})
    assert response.status_code == 400 and "already" in response.content.decode()
    response = client.post(url, {"username": "fritz", "password": "Tr0ub4dor&3x", "password_again": "Tr0ub4dor&3x"})
    assert response.status_code == 302
    fritz = get_user_model().objects.get(username="fritz")
    assert fritz.check_password("Tr0ub4dor&3x") and not fritz.is_staff and access.room_levels(fritz) == {}
    entry = AuditEntry.objects.filter(action="member.create", result="ok").get()
    assert entry.username == "anna" and entry.detail == "fritz" and entry.source_address == "127.0.0.1"
    assert not AuditEntry.objects.filter(detail__contains="Tr0ub4dor").exists()


@pytest.mark.django_db
def test_levels_for_users_and_groups(shouse):
    client = staff_client(shouse)
    url = reverse("household-set-level")
    assert client.post(url, {"who": f"user:{shouse.dora.pk}", "room": shouse.garden.pk, "level": "control"}).status_code == 302
    assert access.level_in_room(shouse.dora, shouse.garden) == access.CONTROL
    assert client.post(url, {"who": f"user:{shouse.dora.pk}", "room": shouse.garden.pk, "level": "view"}).status_code == 302
    assert access.level_in_room(shouse.dora, shouse.garden) == access.VIEW
    assert client.post(url, {"who": f"user:{shouse.dora.pk}", "room": shouse.garden.pk, "level": "none"}).status_code == 302
    assert access.level_in_room(shouse.dora, shouse.garden) == access.NONE
    family = Group.objects.create(name="family")
    family.user_set.add(shouse.dora)
    assert client.post(url, {"who": f"group:{family.pk}", "room": shouse.kitchen.pk, "level": "view"}).status_code == 302
    assert access.level_in_room(shouse.dora, shouse.kitchen) == access.VIEW
    assert RoomAccess.objects.filter(group=family, room=shouse.kitchen, level="view").exists()
    details = list(AuditEntry.objects.order_by("ts").values_list("action", "detail"))
    assert details == [
        ("access.change", "user dora: Garden: none -> control"),
        ("access.change", "user dora: Garden: control -> view"),
        ("access.remove", "user dora: Garden: view -> none"),
        ("access.change", "group family: Kitchen: none -> view"),
    ]
    for bad in ({"who": "user:x", "room": shouse.garden.pk, "level": "view"},
                {"who": f"user:{shouse.dora.pk}", "room": shouse.garden.pk, "level": "admin"},
                {"who": f"user:{shouse.dora.pk}", "room": 99999, "level": "view"},
                {"who": f"user:{shouse.dora.pk}", "room": shouse.garden.pk, "level": "view", "pad": "x" * 9000}):
        assert client.post(url, bad).status_code in (400, 413)
    assert client.post(url, {"who": "user:99999", "room": shouse.garden.pk, "level": "view"}).status_code == 404
    assert AuditEntry.objects.count() == 4


@pytest.mark.django_db
def test_debug_log_permission_and_deactivation(shouse):
    client = staff_client(shouse)
    client.post(reverse("household-set-logs", kwargs={"pk": shouse.cara.pk}), {"value": "1"})
    cara = get_user_model().objects.get(pk=shouse.cara.pk)
    assert access.may_read_logs(cara, shouse.plug) and not access.may_read_logs(cara, shouse.shutter)
    client.post(reverse("household-set-logs", kwargs={"pk": shouse.cara.pk}), {"value": "0"})
    assert not access.may_read_logs(get_user_model().objects.get(pk=shouse.cara.pk))
    client.post(reverse("household-set-active", kwargs={"pk": shouse.ben.pk}), {"value": "0"})
    shouse.ben.refresh_from_db()
    assert not shouse.ben.is_active
    refused = Client().post(reverse("login"), {"username": "ben", "password": "pw-ben-123456"})
    assert refused.status_code == 200 and "_auth_user_id" not in refused.wsgi_request.session
    response = client.post(reverse("household-set-active", kwargs={"pk": shouse.anna.pk}), {"value": "0"})
    assert response.status_code == 302
    shouse.anna.refresh_from_db()
    assert shouse.anna.is_active
    actions = list(AuditEntry.objects.order_by("ts").values_list("action", "result"))
    assert actions == [("access.logs", "ok"), ("access.logs", "ok"), ("member.deactivate", "ok"),
                       ("member.deactivate", "denied")]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("change", ["level", "logs", "deactivate", "group"])
async def test_changes_close_the_members_open_sockets(change):
    house = await sync_to_async(build_secure_house)()
    communicator, _ = await ws_connect("/ws/home/", house.cara)
    await communicator.receive_from(timeout=3)
    log_socket = None
    if change == "logs":  # a log socket is what the permission is about
        await sync_to_async(lambda: house.cara.user_permissions.add(
            __import__("devices.household", fromlist=["x"])._log_permission()))()
        log_socket, _ = await ws_connect(f"/ws/logs/?devices={house.plug.pk}", house.cara)
        assert await log_socket.receive_nothing(timeout=0.3)

    def act():
        client = client_for(house, "staff")
        if change == "level":
            return client.post(reverse("household-set-level"), {"who": f"user:{house.cara.pk}", "room": house.kitchen.pk,
                                                         "level": "none"})
        elif change == "logs":
            client.post(reverse("household-set-logs", kwargs={"pk": house.cara.pk}), {"value": "0"})
        elif change == "deactivate":
            client.post(reverse("household-set-active", kwargs={"pk": house.cara.pk}), {"value": "0"})
        else:
            group = Group.objects.create(name="garden-people")
            group.user_set.add(house.cara)
            client.post(reverse("household-set-level"), {"who": f"group:{group.pk}", "room": house.garden.pk,
                                                         "level": "view"})

    response = await sync_to_async(act)()
    assert response is None or response.status_code == 302, response.content.decode()[:500]
    watched = log_socket or communicator
    while True:
        message = await watched.receive_output(timeout=3)
        if message["type"] == "websocket.close":
            assert message["code"] == 4000
            break
    # Reconnecting decides anew.
    again, _ = await ws_connect("/ws/home/", house.cara)
    if change == "deactivate":
        assert (await again.receive_output(timeout=3)).get("code") == 4401
    else:
        snapshot = "" if await again.receive_nothing(timeout=0.5) else await again.receive_from(timeout=3)
        assert (f'id="channel-{house.plug_ch.pk}"' in snapshot) == (change in ("logs", "group"))
        assert (f'id="channel-{house.cover_ch.pk}"' in snapshot) == (change == "group")
        await again.disconnect()


@pytest.mark.django_db
def test_room_access_inline_in_the_user_admin_is_audited(shouse):
    shouse.anna.is_superuser = True
    shouse.anna.save()
    client = staff_client(shouse)
    url = reverse("admin:auth_user_change", args=[shouse.dora.pk])
    page = client.get(url).content.decode()
    assert "room_access-TOTAL_FORMS" in page
    dora = shouse.dora
    data = {
        "username": "dora", "first_name": "", "last_name": "", "email": "", "is_active": "on",
        "last_login_0": "", "last_login_1": "", "date_joined_0": dora.date_joined.strftime("%Y-%m-%d"),
        "date_joined_1": dora.date_joined.strftime("%H:%M:%S"),
        "room_access-TOTAL_FORMS": "1", "room_access-INITIAL_FORMS": "0", "room_access-MIN_NUM_FORMS": "0",
        "room_access-MAX_NUM_FORMS": "1000", "room_access-0-room": shouse.garden.pk, "room_access-0-level": "control",
        "room_access-0-user": dora.pk,
    }
    response = client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert access.level_in_room(dora, shouse.garden) == access.CONTROL
    entry = AuditEntry.objects.get(action="access.change")
    assert "user dora: added" in entry.detail and entry.username == "anna"
    assert "room_access-TOTAL_FORMS" in client.get(reverse("admin:auth_group_add")).content.decode()


@pytest.mark.django_db
def test_events_page_filters_the_audit_trail_for_staff(shouse):
    AuditEntry.record(user=shouse.ben, action="channel.command", device=shouse.plug, channel=shouse.plug_ch,
                      detail="on", result="ok")
    AuditEntry.record(user=shouse.cara, action="channel.command", device=shouse.plug, channel=shouse.plug_ch,
                      detail="refused-one", result="denied")
    AuditEntry.record(user=shouse.anna, action="access.change", detail="user dora: Garden: none -> view")
    client = staff_client(shouse)
    page = client.get(reverse("events"), {"result": "denied"}).content.decode()
    assert "refused-one" in page and "by ben" not in page and "Garden: none" not in page
    page = client.get(reverse("events"), {"action": "access.change"}).content.decode()
    assert "Garden: none -&gt; view" in page and "refused-one" not in page
    page = client.get(reverse("events"), {"user": "ben"}).content.decode()
    assert "by ben" in page and "refused-one" not in page
    assert 'name="result"' in page and 'name="action"' in page and 'name="user"' in page
    # Not for members: no audit filter, no audit trail, the parameters change nothing.
    page = client_for(shouse, "controller").get(reverse("events"), {"action": "access.change", "show": "audit"}).content.decode()
    assert "Garden: none" not in page and 'name="action"' not in page


@pytest.mark.django_db
def test_password_change_in_the_admin_is_audited(shouse):
    shouse.anna.is_superuser = True
    shouse.anna.save()
    client = staff_client(shouse)
    url = reverse("admin:auth_user_password_change", args=[shouse.dora.pk])
    response = client.post(url, {"password1": "N3w-passw0rd-dora", "password2": "N3w-passw0rd-dora",
                                 "usable_password": "true"})
    assert response.status_code == 302
    entry = AuditEntry.objects.get(action="member.password")
    assert entry.result == "ok" and entry.detail == "user dora (admin)" and "N3w" not in entry.detail
