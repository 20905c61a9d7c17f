"""Hostile text from devices and people (names, firmware strings, room names, event
details, debug-log lines) is escaped on every page and in every fragment."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from devices import cards, logviews
from devices.debuglogs import LogHub
from devices.drivers.types import LogLine
from devices.models import AuditEntry, Channel, Device, DeviceEvent
from tests.security.secfixtures import build_secure_house
from tests.security.test_sec_matrix import ws_connect

PAYLOADS = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "'onmouseover='"]
HOSTILE = "".join(PAYLOADS)  # 69 characters: fits every name field
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


def assert_escaped(where: str, text: str, *, expect_escaped: bool = True) -> None:
    for payload in PAYLOADS:
        assert payload not in text, f"{where}: raw {payload!r}"
    if expect_escaped:
        assert ESCAPED in text, f"{where}: the hostile text is not shown at all (test would prove nothing)"


def hostile_house():
    house = build_secure_house()
    house.kitchen.name = HOSTILE + "K"
    house.kitchen.save()
    house.garden.name = HOSTILE + "G"
    house.garden.save()
    for device in (house.plug, house.lamp, house.shutter, house.waiting):
        device.name = HOSTILE
        device.firmware = HOSTILE
        device.model_name = HOSTILE
        device.save()
    Channel.objects.filter(pk__in=[house.plug_ch.pk, house.cover_ch.pk]).update(name=HOSTILE)
    DeviceEvent.objects.create(device=house.plug, channel=house.plug_ch, kind=HOSTILE[:40], detail=HOSTILE)
    AuditEntry.record(user=house.ben, action="channel.command", device=house.plug, channel=house.plug_ch,
                      detail=HOSTILE, result="failed")
    AuditEntry.record(user=house.anna, action="access.change", detail=HOSTILE)
    Group.objects.create(name=HOSTILE)
    return house


@pytest.mark.django_db
def test_pages_escape_hostile_text(monkeypatch):
    house = hostile_house()

    async def fake_file(device):
        return {"enabled": True, "text": HOSTILE + "\n" + HOSTILE}

    monkeypatch.setattr(logviews, "fetch_gen1_debug_file", fake_file)
    staff, viewer = Client(), Client()
    staff.force_login(house.anna)
    viewer.force_login(house.cara)
    pages = {
        "home (staff)": (staff, reverse("home")),
        "home (viewer)": (viewer, reverse("home")),
        "device page": (staff, reverse("device", kwargs={"pk": house.plug.pk})),
        "device page (viewer)": (viewer, reverse("device", kwargs={"pk": house.plug.pk})),
        "device health": (staff, reverse("device-health", kwargs={"pk": house.plug.pk})),
        "inbox": (staff, reverse("inbox")),
        "events": (staff, reverse("events")),
        "events (audit)": (staff, reverse("events") + "?show=audit"),
        "events (viewer)": (viewer, reverse("events")),
        "logs console": (staff, reverse("logs") + f"?devices={house.plug.pk}"),
        "device log panel": (staff, reverse("device-log-panel", kwargs={"pk": house.plug.pk})),
        "device log controls": (staff, reverse("device-log-controls", kwargs={"pk": house.plug.pk})),
        "gen1 debug file": (staff, reverse("device-log-file", kwargs={"pk": house.shutter.pk})),
        "household": (staff, reverse("household")),
    }
    house.anna.is_superuser = True
    house.anna.save()
    for model in ("device", "channel", "room", "roomaccess", "auditentry", "deviceevent"):
        pages[f"admin {model}"] = (staff, reverse(f"admin:devices_{model}_changelist"))
    pages["admin groups"] = (staff, reverse("admin:auth_group_changelist"))
    pages["admin device change"] = (staff, reverse("admin:devices_device_change", args=[house.plug.pk]))
    quiet = {"device health", "device log controls"}  # fragments that name nothing
    for where, (client, url) in pages.items():
        response = client.get(url)
        assert response.status_code == 200, f"{where}: {response.status_code}"
        assert_escaped(where, response.content.decode(), expect_escaped=where not in quiet)
    raw = staff.get(reverse("device-raw", kwargs={"pk": house.plug.pk}))
    assert raw["Content-Type"].startswith("application/json")  # JSON: never interpreted as HTML


@pytest.mark.django_db
def test_card_fragments_escape_hostile_text():
    house = hostile_house()
    for channel in Channel.objects.select_related("device", "room", "device__room"):
        html = cards.render_card(channel, oob=True, error=HOSTILE)
        assert_escaped(f"card {channel.key}", html)


@pytest.mark.django_db(transaction=True)
def test_websocket_snapshots_escape_hostile_text():
    house = hostile_house()

    async def snapshots():
        out = []
        for path in ("/ws/home/", f"/ws/devices/{house.plug.pk}/"):
            communicator, _ = await ws_connect(path, house.anna)
            out.append((path, await communicator.receive_from(timeout=3)))
            await communicator.disconnect()
        return out

    for path, text in async_to_sync(snapshots)():
        assert_escaped(path, text)


def test_debug_log_lines_are_escaped():
    hub = LogHub()
    entry = hub._log(7, HOSTILE)
    hub.ingest(7, LogLine(device="x", ts=12.0, level=2, fd=1, text=HOSTILE))
    hub.note(entry, HOSTILE)
    for item in entry.ring:
        assert_escaped("debug log line", item.html)
