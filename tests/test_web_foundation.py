"""Onboarding (only while nobody exists), login, the admin for every model, /healthz."""

from __future__ import annotations

import json

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.urls import reverse

from devices.credentials import Credentials
from devices.models import AuditEntry, Channel, Device, Room
from tests.support.dns import household_dns

pytestmark = pytest.mark.django_db
STRONG = "correct-horse-battery-42"


def test_fresh_install_leads_to_onboarding(client):
    response = client.get("/")
    assert response.status_code == 302 and response["Location"] == "/onboarding/"
    assert client.get("/login/")["Location"] == "/onboarding/"
    page = client.get("/onboarding/")
    assert page.status_code == 200 and b"Create administrator" in page.content


def test_onboarding_creates_the_first_administrator_then_disappears(client):
    response = client.post("/onboarding/", {"username": "anna", "password": STRONG, "password_again": STRONG})
    assert response.status_code == 302 and response["Location"] == "/"
    user = get_user_model().objects.get()
    assert user.username == "anna" and user.is_staff and user.is_superuser
    assert client.get("/").status_code == 200  # logged in straight away
    assert AuditEntry.objects.filter(action="onboarding.admin_created").exists()
    # Once someone exists, nobody can use onboarding to make another administrator.
    assert client.get("/onboarding/").status_code == 404
    assert client.post("/onboarding/", {"username": "eve", "password": STRONG, "password_again": STRONG}).status_code == 404
    assert get_user_model().objects.count() == 1


@pytest.mark.parametrize(
    ("password", "again", "message"),
    [("short", "short", b"too short"), ("12345678901", "12345678901", b"entirely numeric"),
     (STRONG, STRONG + "x", b"differ")],
)
def test_onboarding_refuses_weak_or_mismatched_passwords(client, password, again, message):
    response = client.post("/onboarding/", {"username": "anna", "password": password, "password_again": again})
    assert response.status_code == 200 and message in response.content
    assert not get_user_model().objects.exists()


def test_pages_need_login_once_set_up(client, django_user_model):
    django_user_model.objects.create_user("bob", password=STRONG)
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_login_page_logs_in(client, django_user_model):
    django_user_model.objects.create_user("bob", password=STRONG)
    response = client.post("/login/", {"username": "bob", "password": STRONG})
    assert response.status_code == 302
    assert client.get("/").status_code == 200


def test_security_headers(client, django_user_model):
    django_user_model.objects.create_user("bob", password=STRONG)
    response = client.get("/login/")
    csp = response["Content-Security-Policy"]
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "frame-ancestors 'none'" in csp
    assert response["X-Frame-Options"] == "DENY"


def test_healthz(client):
    Device.objects.create(mac="AABBCC000001", vendor="shelly", host="192.0.2.1", adopted=True, online=True)
    Device.objects.create(mac="AABBCC000002", vendor="mystrom", host="192.0.2.2")
    response = client.get("/healthz")
    assert response.status_code == 200
    body = json.loads(response.content)
    assert body["status"] == "ok" and body["database"] == "ok"
    assert body["devices"] == {"adopted": 1, "inbox": 1, "online": 1}
    assert body["runtime"] in ("running", "stopped")


def test_manifest(client):
    body = json.loads(client.get("/manifest.webmanifest").content)
    assert body["display"] == "standalone" and len(body["icons"]) == 2


@pytest.fixture
def staff_client(client, django_user_model):
    user = django_user_model.objects.create_superuser("admin", password=STRONG)
    client.force_login(user)
    return client


def test_every_admin_page_renders(staff_client):
    room = Room.objects.create(name="Kitchen")
    device = Device.objects.create(mac="AABBCC000003", vendor="shelly", generation=2, host="192.0.2.3",
                                   room=room, credentials=Credentials(password="Never-Shown-9921"))
    Channel.objects.create(device=device, key="switch:0", kind="switch")
    for model, model_admin in admin.site._registry.items():
        meta = model._meta
        changelist = reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist")
        assert staff_client.get(changelist).status_code == 200, changelist
        if model_admin.has_add_permission(None if False else _request(staff_client)):
            add = reverse(f"admin:{meta.app_label}_{meta.model_name}_add")
            assert staff_client.get(add).status_code == 200, add
    page = staff_client.get(reverse("admin:devices_device_change", args=[device.pk]))
    assert page.status_code == 200
    assert b"Never-Shown-9921" not in page.content


def _request(client):
    from django.test import RequestFactory

    request = RequestFactory().get("/admin/")
    request.user = get_user_model().objects.get(username="admin")
    return request


def test_admin_sets_credentials_write_only(staff_client):
    device = Device.objects.create(mac="AABBCC000004", vendor="shelly", generation=2, host="192.0.2.4")
    url = reverse("admin:devices_device_change", args=[device.pk])
    form = {
        "name": "Boiler", "vendor": "shelly", "generation": "2", "model_code": "SNSW-001P16EU",
        "model_name": "Plus 1PM", "mac": "aa:bb:cc:00:00:04", "host": "10.20.30.4", "port": "80",
        "poll_interval": "5", "found_by": "manual", "auth_required": "on", "password": "Typed-Once-5521",
        "adopted": "on",
        "channels-TOTAL_FORMS": "0", "channels-INITIAL_FORMS": "0", "channels-MIN_NUM_FORMS": "0",
        "channels-MAX_NUM_FORMS": "1000",
    }
    response = staff_client.post(url, form)
    assert response.status_code == 302, response.content[:2000]
    device.refresh_from_db()
    assert device.credentials.password == "Typed-Once-5521" and device.name == "Boiler"
    # Saving again with the password field empty keeps it.
    form.pop("password")
    form["name"] = "Boiler room"
    assert staff_client.post(url, form).status_code == 302
    device.refresh_from_db()
    assert device.credentials.password == "Typed-Once-5521"
    assert b"Typed-Once-5521" not in staff_client.get(url).content
    assert AuditEntry.objects.filter(action="device.credentials", device=device).count() == 1


@pytest.mark.parametrize(("host", "allowed"), [
    ("10.20.30.5", True), ("shelly-kitchen.lan", True), ("http://10.20.30.5/", False),
    ("admin:pw@10.20.30.5", False), ("10.20.30.5:8080", False), ("169.254.169.254", False),
    ("127.0.0.1", False), ("localhost", False), ("", False), ("<script>", False),
])
def test_admin_refuses_addresses_that_are_not_a_lan_device(staff_client, settings, monkeypatch, host, allowed):
    settings.ALLOW_LOOPBACK_DEVICES = False
    household_dns(monkeypatch)["shelly-kitchen.lan"] = "10.20.30.7"  # the one name the household resolver knows
    device = Device.objects.create(mac="AABBCC000005", vendor="shelly", generation=2, host="10.20.30.5")
    form = {
        "name": "Pump", "vendor": "shelly", "generation": "2", "mac": "AABBCC000005", "host": host,
        "port": "80", "poll_interval": "5", "found_by": "manual",
        "channels-TOTAL_FORMS": "0", "channels-INITIAL_FORMS": "0", "channels-MIN_NUM_FORMS": "0",
        "channels-MAX_NUM_FORMS": "1000",
    }
    response = staff_client.post(reverse("admin:devices_device_change", args=[device.pk]), form)
    assert (response.status_code == 302) is allowed, host
    device.refresh_from_db()
    assert (device.host == host) is allowed or host == "10.20.30.5"
