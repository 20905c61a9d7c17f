"""The web side of issue 14: what a page shows to whom, who may change whom, where a device
may be pointed, and that an edit in the admin reaches the runtime at once.

The household is secfixtures' (Anna staff, Ben controls the kitchen, Cara views it, Dora has
no rooms); the kitchen plug gets a second channel feeding the bedroom, which Cara may not see.
"""

from __future__ import annotations

import asyncio
from html.parser import HTMLParser

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from devices import access
from devices import runtime as runtime_module
from devices.credentials import Credentials
from devices.models import AuditEntry, Channel, Device, DeviceEvent, Room, RoomAccess
from devices.runtime.setup import build_runtime
from devices.simulator.mystrom import MyStromSwitch
from tests.security.secfixtures import build_secure_house, client_for
from tests.support.dns import household_dns
from tests.waiting import until


def _login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


# ----------------------------------------------------------------------------- 2. channels


@pytest.fixture
def shared_plug(shouse):
    """The kitchen plug's second relay feeds the bedroom; each has an event, and the plug
    reports both in its raw status."""
    bedroom = Room.objects.create(name="Bedroom", order=3)
    bed = Channel.objects.create(device=shouse.plug, key="switch:1", kind="switch", room=bedroom, name="Bedside")
    DeviceEvent.objects.create(device=shouse.plug, channel=shouse.plug_ch, kind="single_push", detail="kitchen-press-7")
    DeviceEvent.objects.create(device=shouse.plug, channel=bed, kind="single_push", detail="bedroom-press-9")
    DeviceEvent.objects.create(device=shouse.plug, kind="online", detail="device-online-3")
    Device.objects.filter(pk=shouse.plug.pk).update(raw_status={
        "switch:0": {"output": True, "apower": 1200.5}, "switch:1": {"output": True, "apower": 33.25}})
    shouse.bedroom = bedroom
    return shouse


@pytest.mark.django_db
def test_device_page_shows_only_events_of_channels_the_user_may_see(shared_plug):
    house = shared_plug
    url = reverse("device", args=[house.plug.pk])
    page = client_for(house, "viewer").get(url).content.decode()
    assert "kitchen-press-7" in page and "device-online-3" in page
    assert "bedroom-press-9" not in page and "Bedside" not in page
    # /events/ and the device page follow the same rule (access.visible_events).
    events = client_for(house, "viewer").get(reverse("events") + f"?device={house.plug.pk}").content.decode()
    assert "kitchen-press-7" in events and "bedroom-press-9" not in events
    staff_page = client_for(house, "staff").get(url).content.decode()
    assert all(word in staff_page for word in ("kitchen-press-7", "bedroom-press-9", "device-online-3"))


@pytest.mark.django_db
def test_raw_status_only_for_whoever_sees_every_channel(shared_plug):
    house = shared_plug
    raw_url = reverse("device-raw", args=[house.plug.pk])
    page_url = reverse("device", args=[house.plug.pk])
    for role in ("viewer", "controller"):  # they see the kitchen relay, not the bedroom one
        client = client_for(house, role)
        assert client.get(raw_url).status_code == 403
        page = client.get(page_url).content.decode()
        assert "33.25" not in page and "switch:1" not in page and "What the device says" not in page
    # Given the bedroom too, Cara sees all of it.
    RoomAccess.objects.create(room=house.bedroom, user=house.cara, level=RoomAccess.Level.VIEW)
    full = client_for(house, "viewer").get(raw_url)
    assert full.status_code == 200 and full.json()["status"]["switch:1"]["apower"] == 33.25
    assert "What the device says" in client_for(house, "viewer").get(page_url).content.decode()
    assert client_for(house, "staff").get(raw_url).json()["status"]["switch:0"]["apower"] == 1200.5
    # A channel hidden from the dashboard hides the raw status from members too.
    Channel.objects.filter(pk=house.plug_ch.pk).update(visible=False)
    cara = get_user_model().objects.get(pk=house.cara.pk)
    assert not access.may_view_raw(cara, Device.objects.get(pk=house.plug.pk))


# ----------------------------------------------------------------------------- 4. household


@pytest.fixture
def admins(shouse):
    User = get_user_model()
    shouse.root = User.objects.create_superuser("root", password="pw-root-123456")
    shouse.sam = User.objects.create_user("sam", password="pw-sam-1234567", is_staff=True)
    return shouse


@pytest.mark.django_db
def test_staff_cannot_change_the_superuser_or_other_staff(admins):
    house = admins
    anna = _login(house.anna)
    for target in (house.root, house.sam):
        anna.post(reverse("household-set-active", kwargs={"pk": target.pk}), {"value": "0"})
        anna.post(reverse("household-set-level"), {"who": f"user:{target.pk}", "room": house.kitchen.pk,
                                                    "level": "view"})
        anna.post(reverse("household-set-logs", kwargs={"pk": target.pk}), {"value": "1"})
        target.refresh_from_db()
        assert target.is_active
        assert not RoomAccess.objects.filter(user=target).exists()
        assert not target.user_permissions.exists()
    denied = AuditEntry.objects.filter(result="denied", username="anna")
    assert denied.count() == 6 and all("only a superuser" in e.detail for e in denied)
    page = anna.get(reverse("household")).content.decode()
    assert "superuser only" in page

    # Ordinary members are still hers to manage: the action happens.
    anna.post(reverse("household-set-active", kwargs={"pk": house.ben.pk}), {"value": "0"})
    house.ben.refresh_from_db()
    assert not house.ben.is_active

    # The superuser may change staff.
    root = _login(house.root)
    root.post(reverse("household-set-active", kwargs={"pk": house.sam.pk}), {"value": "0"})
    root.post(reverse("household-set-level"), {"who": f"user:{house.anna.pk}", "room": house.kitchen.pk,
                                               "level": "view"})
    house.sam.refresh_from_db()
    assert not house.sam.is_active
    assert RoomAccess.objects.filter(user=house.anna, room=house.kitchen).exists()


class _FormFields(HTMLParser):
    """The values a browser would submit from the page's main form (inputs, selects,
    textareas), so an admin test posts exactly what the admin rendered."""

    def __init__(self) -> None:
        super().__init__()
        self.data: dict[str, list[str]] = {}
        self._select: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        name = a.get("name")
        if tag == "input" and name and a.get("type") not in ("submit", "button", "file"):
            if a.get("type") in ("checkbox", "radio") and "checked" not in a:
                return
            self.data.setdefault(name, []).append(a.get("value", "on" if a.get("type") == "checkbox" else ""))
        elif tag == "select" and name:
            self._select = name
            self.data.setdefault(name, [])
        elif tag == "option" and self._select and "selected" in a:
            self.data[self._select].append(a.get("value", ""))
        elif tag == "textarea" and name:
            self._textarea = name
            self.data[name] = [""]

    def handle_data(self, data):
        if self._textarea:
            self.data[self._textarea][-1] += data

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None


def admin_form(client: Client, url: str) -> dict[str, list[str]]:
    parser = _FormFields()
    page = client.get(url)
    assert page.status_code == 200, page.status_code
    parser.feed(page.content.decode())
    return parser.data


@pytest.mark.django_db
def test_staff_cannot_make_themselves_superuser_in_the_admin(admins):
    house = admins
    perms = Permission.objects.filter(content_type__app_label="auth", codename__in=["view_user", "change_user"])
    house.anna.user_permissions.add(*perms)
    anna = _login(house.anna)
    own = reverse("admin:auth_user_change", args=[house.anna.pk])
    data = admin_form(anna, own)
    assert "is_superuser" not in data  # shown read-only
    data.update(first_name=["Anna"], is_superuser=["on"], is_staff=["on"],
                user_permissions=[str(p.pk) for p in Permission.objects.all()[:5]])
    response = anna.post(own, data)
    assert response.status_code == 302, response.content.decode()[:2000]
    house.anna.refresh_from_db()
    assert house.anna.first_name == "Anna"  # the edit itself went through
    assert not house.anna.is_superuser and house.anna.user_permissions.count() == 2
    # The superuser's page is not hers to edit or delete.
    assert anna.post(reverse("admin:auth_user_change", args=[house.root.pk]), {"is_active": ""}).status_code == 403
    assert anna.post(reverse("admin:auth_user_delete", args=[house.root.pk]), {"post": "yes"}).status_code == 403
    house.root.refresh_from_db()
    assert house.root.is_active


# ----------------------------------------------------------------------------- 5. addresses


@pytest.fixture
def fake_dns(monkeypatch):
    """Names under .example resolve to what the test says; no other name resolves."""
    return household_dns(monkeypatch)


@pytest.mark.django_db
@pytest.mark.parametrize("host, refused", [
    ("sneaky.example", "loopback"),      # a name that points at this machine
    ("outside.example", "not a local"),  # a name that points to the internet
    ("93.184.215.14", "not a local"),    # a public address
    ("192.168.1.77", None),              # the LAN: saved
    ("lan-plug.example", None),          # a name on the LAN: saved
])
def test_admin_form_checks_where_a_device_address_points(shouse, settings, fake_dns, host, refused):
    settings.ALLOW_LOOPBACK_DEVICES = False
    fake_dns.update({"sneaky.example": "127.0.0.1", "outside.example": "93.184.215.14",
                     "lan-plug.example": "192.168.1.88"})
    anna = _login(shouse.anna)
    url = reverse("admin:devices_device_change", args=[shouse.plug.pk])
    data = admin_form(anna, url)
    data["host"] = [host]
    response = anna.post(url, data)
    shouse.plug.refresh_from_db()
    if refused:
        assert response.status_code == 200 and refused in response.content.decode()
        assert shouse.plug.host != host
    else:
        assert response.status_code == 302 and shouse.plug.host == host


@pytest.mark.django_db(transaction=True)
async def test_add_by_address_refuses_names_and_addresses_outside_the_lan(settings, fake_dns):
    settings.ALLOW_LOOPBACK_DEVICES = False
    fake_dns.update({"sneaky.example": "127.0.0.1", "outside.example": "93.184.215.14"})
    staff = await get_user_model().objects.acreate(username="anna", is_staff=True)
    client = Client()
    await sync_to_async(client.force_login)(staff)
    # Something listening on the public address would be contacted if it were allowed;
    # the refusal comes before any connection, so nothing needs to listen.
    for host, why in (("sneaky.example", "loopback"), ("outside.example", "not a local"),
                      ("93.184.215.14", "not a local")):
        page = await sync_to_async(client.post)(reverse("inbox-add"), {"host": host, "port": 80})
        assert page.status_code == 200 and why in page.content.decode(), host
    assert not await Device.objects.aexists()


@pytest.mark.django_db(transaction=True)
async def test_runtime_checks_the_address_before_it_sends_the_token(settings, fake_dns):
    """A device saved (by any path) with a name that now resolves to this machine: the
    runtime does not connect, so the token stays home; allowed, the same device is polled."""
    settings.ALLOW_LOOPBACK_DEVICES = False
    switch = MyStromSwitch("ch_v2", host="127.0.0.1", token="kitchen-token-1", relay=True)
    await switch.start()
    fake_dns["sneaky.example"] = "127.0.0.1"
    device = await Device.objects.acreate(mac=switch.mac, vendor="mystrom", model_code="106", host="sneaky.example",
                                          port=switch.port, adopted=True, poll_interval=0.3, raw_info={"type": 106},
                                          credentials=Credentials(token="kitchen-token-1"))
    rt = build_runtime(manager_options={"start_spread": 0.1, "flush_period": 0.2})
    await rt.start()
    try:
        store = rt.manager.store
        assert await until(lambda: store.get(device.pk) is not None
                           and "address refused" in (store.get(device.pk).health.last_error or ""), timeout=5)
        await asyncio.sleep(1.0)  # several poll intervals
        assert switch.requests_total == 0
        assert "loopback" in store.get(device.pk).health.last_error
    finally:
        await rt.stop()

    settings.ALLOW_LOOPBACK_DEVICES = True  # tests and the demo: loopback devices allowed
    rt = build_runtime(manager_options={"start_spread": 0.1, "flush_period": 0.2})
    await rt.start()
    try:
        store = rt.manager.store
        assert await until(lambda: store.get(device.pk) is not None and store.get(device.pk).online, timeout=5)
        assert switch.requests_total > 0 and store.get(device.pk).channels["relay"].on is True
    finally:
        await rt.stop()
        await switch.stop()


@pytest.mark.django_db(transaction=True)
async def test_runtime_stops_when_a_device_name_is_pointed_elsewhere(settings, fake_dns, monkeypatch):
    """Followed by host name, the device's name is looked up again while it runs: pointed
    outside the LAN, the session stops talking to it and says why."""
    from devices.runtime import manager as manager_module

    settings.ALLOW_LOOPBACK_DEVICES = True
    monkeypatch.setattr(manager_module, "ADDRESS_WATCH", 0.2)
    switch = MyStromSwitch("ch_v2", host="127.0.0.1", token="kitchen-token-1", relay=True)
    await switch.start()
    fake_dns["plug.example"] = "127.0.0.1"
    device = await Device.objects.acreate(mac=switch.mac, vendor="mystrom", model_code="106", host="plug.example",
                                          port=switch.port, adopted=True, poll_interval=0.2, raw_info={"type": 106},
                                          credentials=Credentials(token="kitchen-token-1"))
    rt = build_runtime(manager_options={"start_spread": 0.1, "flush_period": 0.2})
    await rt.start()
    try:
        store = rt.manager.store
        assert await until(lambda: store.get(device.pk) is not None and store.get(device.pk).online, timeout=5)
        fake_dns["plug.example"] = "93.184.215.14"
        assert await until(lambda: "address refused" in (store.get(device.pk).health.last_error or ""), timeout=3)
        seen = switch.requests_total
        await asyncio.sleep(1.0)  # five poll intervals
        assert switch.requests_total == seen and "not a local" in store.get(device.pk).health.last_error
    finally:
        await rt.stop()
        await switch.stop()


@pytest.mark.django_db(transaction=True)
async def test_credentials_check_goes_only_to_an_allowed_address(settings, fake_dns):
    """Saving a token checks it with the device first: not at a name that now points at
    this machine (the token would go there); allowed, the check reaches the device."""
    settings.ALLOW_LOOPBACK_DEVICES = False
    switch = MyStromSwitch("ch_v2", host="127.0.0.1", token="kitchen-token-1")
    await switch.start()
    fake_dns["sneaky.example"] = "127.0.0.1"
    try:
        house = await sync_to_async(build_secure_house)()
        device = await Device.objects.acreate(mac=switch.mac, vendor="mystrom", model_code="106",
                                              host="sneaky.example", port=switch.port, adopted=True,
                                              room=house.kitchen, raw_info={"type": 106})
        anna = Client()
        await sync_to_async(anna.force_login)(house.anna)
        url = reverse("device-credentials", args=[device.pk])
        await asyncio.to_thread(anna.post, url, {"token": "kitchen-token-1"})
        assert switch.requests_total == 0
        failed = await AuditEntry.objects.filter(action="device.credentials", device=device).alast()
        assert failed.result == "failed" and "address refused" in failed.detail
        await device.arefresh_from_db()
        assert not device.has_credentials

        settings.ALLOW_LOOPBACK_DEVICES = True
        await asyncio.to_thread(anna.post, url, {"token": "kitchen-token-1"})
        assert switch.requests_total > 0
        await device.arefresh_from_db()
        assert device.credentials.token == "kitchen-token-1"
    finally:
        await switch.stop()


# ----------------------------------------------------------------------------- 3. admin -> runtime


@pytest.mark.django_db(transaction=True)
async def test_admin_edit_reaches_the_runtime_at_once(settings):
    """Host and token changed in the admin: the very next request goes to the new address
    with the new token (before the fix the runtime re-read the row before the admin's
    transaction committed, and followed each edit one save late)."""
    settings.ALLOW_LOOPBACK_DEVICES = True
    old = MyStromSwitch("ch_v2", host="127.0.0.1", token="old-token-1", relay=True)
    new = MyStromSwitch("ch_v2", host="127.0.0.1", token="new-token-2", relay=False, mac=old.mac)
    await old.start()
    await new.start()
    house = await sync_to_async(build_secure_house)()
    device = await Device.objects.acreate(mac=old.mac, vendor="mystrom", model_code="106", host="127.0.0.1",
                                          port=old.port, adopted=True, poll_interval=1.0, raw_info={"type": 106},
                                          room=house.kitchen, credentials=Credentials(token="old-token-1"))
    rt = build_runtime(manager_options={"start_spread": 0.1, "flush_period": 0.2})
    await rt.start()
    runtime_module.install(rt)  # as serve does: database changes reach this runtime
    try:
        manager, store = rt.manager, rt.manager.store
        assert await until(lambda: store.get(device.pk) is not None and store.get(device.pk).online, timeout=5)
        assert store.get(device.pk).channels["relay"].on is True  # the old switch
        anna = Client()
        await sync_to_async(anna.force_login)(house.anna)
        url = reverse("admin:devices_device_change", args=[device.pk])

        async def edit(port: int, token: str) -> None:
            data = await sync_to_async(admin_form)(anna, url)
            data.update(port=[str(port)], token=[token])
            # Its own thread, as daphne gives each request: the runtime's reload is not
            # queued behind the request's transaction.
            response = await asyncio.to_thread(anna.post, url, data)
            assert response.status_code == 302, [l for l in response.content.decode().splitlines() if "errorlist" in l or "error" in l.lower()][:20]

        for rounds in range(3):
            new.reset_counters()
            await edit(new.port, "new-token-2")
            assert await until(lambda: manager.sessions.get(device.pk) is not None
                               and manager.sessions[device.pk].config.port == new.port, timeout=2)
            assert manager.sessions[device.pk].config.token == "new-token-2"
            # The new switch answers (so the request carried its token) and the card shows it.
            assert await until(lambda: store.get(device.pk).channels["relay"].on is False, timeout=3)
            assert new.requests_total > 0

            old.reset_counters()
            await edit(old.port, "old-token-1")
            assert await until(lambda: manager.sessions[device.pk].config.port == old.port, timeout=2)
            assert await until(lambda: store.get(device.pk).channels["relay"].on is True, timeout=3)
            assert old.requests_total > 0
        assert old.max_in_flight <= 1 and new.max_in_flight <= 1
    finally:
        runtime_module.install(None)
        await rt.stop()
        await old.stop()
        await new.stop()
