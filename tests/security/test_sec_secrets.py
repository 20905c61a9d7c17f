"""Known secrets go in through every door (the admin form, the device page's credentials
form, the inbox's add-by-address, a failed login); then every page of the permission
matrix as staff, every admin page, the websocket messages (snapshots and a published
card), every log record and the SQLite database file (and its WAL) are searched for them.
None may appear in plaintext."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from django.db import connection
from django.test import Client
from django.urls import reverse

from devices import cards
from devices.models import AuditEntry, Channel, Device
from devices.runtime.publisher import room_group
from tests.security.secfixtures import build_secure_house, closed_port
from tests.security.test_sec_matrix import CASES, _url, admin_urls, ws_connect

SECRETS = {
    "admin_password": "adm1n-Secr3t-PW-7f3a",
    "admin_token": "TOKEN-admin-9c2e51x",
    "page_password": "page-Secr3t-PW-41bd",
    "checked_password": "checked-Secr3t-e19q",
    "page_token": "TOKEN-page-77aa31z",
    "inbox_token": "TOKEN-inboxadd-5dk",
    "login_password": "login-Secr3t-PW-0c0c",
}


class Capture(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record):
        text = record.getMessage()
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        self.texts.append(f"{record.name}: {text} {record.args!r}")


@pytest.fixture
def captured_logs():
    handler = Capture()
    root = logging.getLogger()
    loggers = [root] + [lg for lg in logging.Logger.manager.loggerDict.values()
                        if isinstance(lg, logging.Logger) and not lg.propagate]
    old_level = root.level
    root.setLevel(logging.DEBUG)
    for lg in loggers:
        lg.addHandler(handler)
    yield handler
    for lg in loggers:
        lg.removeHandler(handler)
    root.setLevel(old_level)


def admin_add_device(client, *, mac, vendor, generation, password="", token=""):
    data = {
        "name": f"Secret {vendor}", "room": "", "vendor": vendor, "generation": generation or "", "model_code": "X",
        "model_name": "", "mac": mac, "host": "127.0.0.1", "port": closed_port(), "poll_interval": "5",
        "found_by": "manual", "auth_required": "on", "username": "admin", "password": password, "token": token,
        "adopted": "on",
        "channels-TOTAL_FORMS": "0", "channels-INITIAL_FORMS": "0", "channels-MIN_NUM_FORMS": "0",
        "channels-MAX_NUM_FORMS": "1000",
    }
    response = client.post(reverse("admin:devices_device_add"), data)
    assert response.status_code == 302, response.content.decode()[:3000]
    return Device.objects.get(mac=mac)


def find_secrets(text: str) -> list[str]:
    return [name for name, value in SECRETS.items() if value in text]


@pytest.mark.django_db(transaction=True)
def test_no_secret_in_pages_sockets_logs_or_database(captured_logs):
    house = build_secure_house()
    staff = Client()
    staff.force_login(house.anna)
    seen: list[tuple[str, str]] = []  # (where, text)

    def keep(where, response):
        seen.append((where, response.content.decode("utf-8", "replace")
                     + "".join(f"{k}: {v}\n" for k, v in response.items())))

    # In through the admin form.
    shelly = admin_add_device(staff, mac="AABBCC0000A1", vendor="shelly", generation=1,
                              password=SECRETS["admin_password"])
    strom = admin_add_device(staff, mac="AABBCC0000A2", vendor="mystrom", generation=None,
                             token=SECRETS["admin_token"])
    assert shelly.credentials.password == SECRETS["admin_password"] and strom.credentials.token == SECRETS["admin_token"]
    # ...through the device page (saved unchecked; checked against a device that is not there)...
    url = reverse("device-credentials", kwargs={"pk": house.plug.pk})
    keep("credentials form", staff.post(url, {"password": SECRETS["page_password"], "skip_check": "on"}, follow=True))
    keep("credentials check", staff.post(url, {"password": SECRETS["checked_password"]}, follow=True))
    url = reverse("device-credentials", kwargs={"pk": house.lamp.pk})
    keep("token form", staff.post(url, {"token": SECRETS["page_token"], "skip_check": "on"}, follow=True))
    house.plug.refresh_from_db()
    assert house.plug.credentials.password == SECRETS["page_password"]
    assert AuditEntry.objects.filter(action="device.credentials", result="failed").exists()  # the check ran
    # ...through the inbox (nobody answers at that address) and a failed login.
    keep("inbox add", staff.post(reverse("inbox-add"), {"host": "127.0.0.1", "port": closed_port(),
                                                        "token": SECRETS["inbox_token"]}, follow=True))
    keep("failed login", Client().post(reverse("login"), {"username": "anna", "password": SECRETS["login_password"]}))

    # Every page of the matrix, as staff.
    for name, (method, kwargs, data, _) in sorted(CASES.items()):
        if name in ("logout", "household-set-active", "onboarding"):
            continue
        client = Client()
        client.force_login(house.anna)
        target = _url(house, name, kwargs)
        response = client.get(target, data(house) if data else None) if method == "get" else \
            client.post(target, data(house) if data else {})
        keep(name, response)
    for device in (shelly, strom, house.plug, house.lamp):
        for name in ("device", "device-raw", "device-health"):
            keep(f"{name} {device.pk}", staff.get(reverse(name, kwargs={"pk": device.pk})))
    # Every admin page; the device change pages hold the write-only credential fields.
    house.anna.is_superuser = True
    house.anna.save()
    admin = Client()
    admin.force_login(house.anna)
    for url in admin_urls(house) + [reverse("admin:devices_device_change", args=[d.pk]) for d in (shelly, strom, house.plug)]:
        keep(url, admin.get(url))

    # Websockets: the snapshots and a published card of a device with a password.
    Channel.objects.create(device=shelly, key="relay:0", kind="switch", room=house.kitchen)

    async def sockets():
        messages = []
        for path in ("/ws/home/", f"/ws/devices/{shelly.pk}/", f"/ws/devices/{house.plug.pk}/"):
            communicator, _ = await ws_connect(path, house.anna)
            messages.append(await communicator.receive_from(timeout=3))
            if path == "/ws/home/":
                html = await sync_to_async(cards.render_card)(
                    await Channel.objects.select_related("device", "room", "device__room").aget(key="relay:0"), oob=True)
                await get_channel_layer().group_send(room_group(house.kitchen.pk), {"type": "fragment", "html": html})
                messages.append(await communicator.receive_from(timeout=3))
            await communicator.disconnect()
        return messages

    for text in async_to_sync(sockets)():
        seen.append(("websocket", text))

    assert len(seen) > 60
    leaks = [(where, find_secrets(text)) for where, text in seen if find_secrets(text)]
    assert not leaks, f"secrets rendered: {leaks}"
    assert captured_logs.texts, "the log capture saw nothing at all"
    log_leaks = [t for t in captured_logs.texts if find_secrets(t)]
    assert not log_leaks, f"secrets logged: {log_leaks[:5]}"

    # The database file, as it lies on disk.
    connection.close()
    name = Path(connection.settings_dict["NAME"])
    files = [p for p in (name, Path(f"{name}-wal"), Path(f"{name}-shm")) if p.exists()]
    assert files and b"Secret shelly" in b"".join(p.read_bytes() for p in files)  # the data is really there
    for path in files:
        raw = path.read_bytes()
        for key, value in SECRETS.items():
            assert value.encode() not in raw, f"{key} in plaintext in {path.name}"
            assert value.encode("utf-16-le") not in raw
