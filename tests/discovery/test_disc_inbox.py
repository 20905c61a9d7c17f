"""The inbox rules: new MACs wait for the household, known MACs follow their device to a
new address (with an event saying from where to where), the household's decisions stay."""

from __future__ import annotations

import pytest

from devices.credentials import Credentials
from devices.discovery import inbox
from devices.discovery.identify import Candidate
from devices.drivers.types import DeviceInfo
from devices.models import AuditEntry, Device, DeviceEvent


def shelly_info(mac="441793D69718", **kw) -> DeviceInfo:
    values = dict(vendor="shelly", mac=mac, generation=2, model="SNSW-001P16EU", model_name="Shelly Plus 1PM",
                  firmware="1.7.5", name="Kitchen lights", auth_enabled=False,
                  raw={"id": f"shellyplus1pm-{str(mac).lower()}", "mac": mac, "gen": 2})
    values.update(kw)
    return DeviceInfo(**values)


def mystrom_info(mac="30AEA4000001", **kw) -> DeviceInfo:
    values = dict(vendor="mystrom", mac=mac, generation=0, model="WS2", model_name="WiFi Switch CH v2",
                  firmware="4.0.14", type_code=106, raw={"mac": mac, "type": 106})
    values.update(kw)
    return DeviceInfo(**values)


@pytest.fixture(autouse=True)
def lan_settings(settings):
    settings.ALLOW_LOOPBACK_DEVICES = False
    settings.AUTO_ADOPT = False


@pytest.mark.django_db
def test_new_device_waits_in_the_inbox():
    outcome = inbox.record(shelly_info(), "192.168.1.20", 80, "mdns")
    assert outcome.kind == inbox.CREATED and not outcome.adopted
    device = Device.objects.get(mac="441793D69718")
    assert (device.vendor, device.generation, device.model_code, device.model_name, device.firmware, device.name) == (
        "shelly", 2, "SNSW-001P16EU", "Shelly Plus 1PM", "1.7.5", "Kitchen lights")
    assert (device.host, device.port, device.found_by, device.adopted, device.ignored) == (
        "192.168.1.20", 80, "mdns", False, False)
    assert device.last_seen is not None and device.raw_info["gen"] == 2
    assert device.events.get().kind == "discovered"
    assert not AuditEntry.objects.exists()


@pytest.mark.django_db
def test_auto_adopt_is_audited(settings):
    settings.AUTO_ADOPT = True
    outcome = inbox.record(mystrom_info(), "192.168.1.30", 80, "udp")
    assert outcome.adopted and Device.objects.get().adopted
    assert AuditEntry.objects.get().action == "device.auto_adopt"
    assert Device.objects.get().generation is None  # generation is Shelly's notion


@pytest.mark.django_db
def test_known_device_at_new_address_moves_and_says_so():
    Device.objects.create(mac="441793D69718", vendor="shelly", host="192.168.1.20", name="Garage door",
                          adopted=True, generation=2, firmware="1.6.0")
    outcome = inbox.record(shelly_info(firmware="1.7.5"), "192.168.1.57", 80, "mdns")
    assert outcome.kind == inbox.MOVED
    assert (outcome.old_host, outcome.old_port, outcome.host) == ("192.168.1.20", 80, "192.168.1.57")
    device = Device.objects.get()
    assert (device.host, device.name, device.adopted, device.firmware) == ("192.168.1.57", "Garage door", True, "1.7.5")
    event = DeviceEvent.objects.get(kind="address_changed")
    assert event.device == device and event.detail == "192.168.1.20 → 192.168.1.57"
    assert event.data == {"old_host": "192.168.1.20", "old_port": 80, "host": "192.168.1.57", "port": 80,
                          "found_by": "mdns"}


@pytest.mark.django_db
def test_port_change_and_ipv6_are_shown_plainly():
    Device.objects.create(mac="441793D69718", vendor="shelly", host="fd00::20", port=80)
    inbox.record(shelly_info(), "fd00::20", 8080, "manual")
    assert DeviceEvent.objects.get(kind="address_changed").detail == "[fd00::20] → [fd00::20]:8080"


@pytest.mark.django_db
def test_unchanged_device_is_refreshed_without_losing_what_we_knew():
    Device.objects.create(mac="441793D69718", vendor="shelly", host="192.168.1.20", name="", firmware="1.7.4",
                          model_name="Shelly Plus 1PM")
    outcome = inbox.record(shelly_info(model_name="", firmware="1.7.5", auth_enabled=True), "192.168.1.20", 80, "mdns")
    assert outcome.kind == inbox.UNCHANGED and outcome.auth_required
    device = Device.objects.get()
    assert (device.firmware, device.model_name, device.name, device.auth_required) == (
        "1.7.5", "Shelly Plus 1PM", "Kitchen lights", True)
    assert device.last_seen is not None
    assert not DeviceEvent.objects.exists()


@pytest.mark.django_db
def test_ignored_device_stays_ignored_but_its_address_is_kept_current():
    Device.objects.create(mac="30AEA4000001", vendor="mystrom", host="192.168.1.30", ignored=True)
    outcome = inbox.record(mystrom_info(), "192.168.1.31", 80, "udp")
    assert outcome.kind == inbox.MOVED and outcome.ignored
    device = Device.objects.get()
    assert device.ignored and not device.adopted and device.host == "192.168.1.31"


@pytest.mark.django_db
def test_unconfirmed_sighting_never_moves_a_known_device():
    Device.objects.create(mac="30AEA4000001", vendor="mystrom", host="192.168.1.30", adopted=True)
    outcome = inbox.record(mystrom_info(auth_enabled=True), "192.168.1.99", 80, "udp", confirmed=False)
    assert outcome.kind == inbox.UNCHANGED
    assert Device.objects.get().host == "192.168.1.30"
    assert not DeviceEvent.objects.exists()


@pytest.mark.django_db
def test_unconfirmed_token_device_enters_inbox_needing_credentials():
    outcome = inbox.record(mystrom_info(firmware="", raw={}, auth_enabled=True), "192.168.1.31", 80, "udp",
                           confirmed=False)
    assert outcome.kind == inbox.CREATED and outcome.auth_required
    assert Device.objects.get().auth_required
    # Seen again at the same place, still locked: it stays marked.
    Device.objects.update(auth_required=False)
    inbox.record(mystrom_info(auth_enabled=True), "192.168.1.31", 80, "udp", confirmed=False)
    assert Device.objects.get().auth_required


@pytest.mark.django_db
def test_vendor_mismatch_changes_nothing():
    Device.objects.create(mac="30AEA4000001", vendor="mystrom", host="192.168.1.30")
    outcome = inbox.record(shelly_info(mac="30AEA4000001"), "192.168.1.66", 80, "mdns")
    assert outcome.kind == inbox.UNCHANGED and Device.objects.get().host == "192.168.1.30"


@pytest.mark.django_db
@pytest.mark.parametrize("info, host, port, found_by", [
    (shelly_info(mac=None), "192.168.1.2", 80, "mdns"),
    (shelly_info(mac="not-a-mac"), "192.168.1.2", 80, "mdns"),
    (shelly_info(vendor="tasmota"), "192.168.1.2", 80, "mdns"),
    (shelly_info(), "127.0.0.1", 80, "mdns"),
    (shelly_info(), "http://192.168.1.2", 80, "mdns"),
    (shelly_info(), "192.168.1.2", 0, "mdns"),
    (shelly_info(), "192.168.1.2", 80, "carrier-pigeon"),
])
def test_invalid_candidates_are_refused(info, host, port, found_by):
    with pytest.raises(inbox.InboxRefused):
        inbox.record(info, host, port, found_by)
    assert not Device.objects.exists()


@pytest.mark.django_db
def test_untrusted_text_is_cleaned_and_bounded():
    hostile = shelly_info(name="Evil\x00\x1b[2J name\n" + "x" * 500, model="M\tX" * 40, firmware="1" * 500,
                          raw={f"k{i}": "v" * 1000 for i in range(200)} | {"nested": {"deep": [1, 2]}})
    inbox.record(hostile, "192.168.1.20", 80, "mdns")
    device = Device.objects.get()
    assert device.name.startswith("Evil[2J name") and len(device.name) == 80
    assert "\x00" not in device.name and "\n" not in device.name and "\t" not in device.model_code
    assert len(device.model_code) <= 40 and len(device.firmware) <= 80
    assert device.raw_info["_truncated"] is True and "nested" not in device.raw_info
    assert len(device.raw_info) <= inbox.RAW_KEYS_CAP + 1
    assert all(len(v) <= inbox.RAW_VALUE_CAP for v in device.raw_info.values() if isinstance(v, str))


@pytest.mark.django_db
def test_manual_add_is_audited(rf, django_user_model):
    user = django_user_model.objects.create_user("anna", password="x" * 12, is_staff=True)
    request = rf.post("/devices/add", REMOTE_ADDR="192.168.1.5")
    request.user = user
    outcome = inbox.record_candidate(Candidate(shelly_info(), "192.168.1.20", 80, "manual"), request=request)
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.username, entry.source_address, entry.device_id) == (
        "device.add", "anna", "192.168.1.5", outcome.device_id)


@pytest.mark.django_db
def test_integrity_race_becomes_an_update(monkeypatch):
    """Two paths racing to insert one MAC: the other path's row is committed, our insert
    fails on the unique MAC, and the retry updates that row instead of failing."""
    from django.db import IntegrityError

    Device.objects.create(mac="441793D69718", vendor="shelly", host="192.168.1.19")
    real_record = inbox._record
    attempts = []

    def racing(*args):
        attempts.append(args)
        if len(attempts) == 1:
            raise IntegrityError("UNIQUE constraint failed: devices_device.mac")
        return real_record(*args)

    monkeypatch.setattr(inbox, "_record", racing)
    outcome = inbox.record(shelly_info(), "192.168.1.20", 80, "mdns")
    assert len(attempts) == 2
    assert outcome.kind == inbox.MOVED and Device.objects.get().host == "192.168.1.20"


@pytest.mark.django_db
def test_known_device_lookup_gives_the_token_only_with_its_approved_address():
    Device.objects.create(mac="30AEA4000001", vendor="mystrom", host="192.168.1.30",
                          credentials=Credentials(token="geheim"))
    Device.objects.create(mac="30AEA4000002", vendor="mystrom", host="192.168.1.31")
    Device.objects.create(mac="441793D69718", vendor="shelly", host="192.168.1.32",
                          credentials=Credentials(username="admin", password="pw"))
    known = inbox.known_device("30AEA4000001")
    assert (known.host, known.port, known.protected, known.token) == ("192.168.1.30", 80, True, "geheim")
    assert known.at("192.168.1.30") and not known.at("192.168.1.50")
    assert "geheim" not in repr(known)
    bare = inbox.known_device("30AEA4000002")
    assert (bare.protected, bare.token) == (False, None)
    shelly = inbox.known_device("441793D69718")
    assert (shelly.protected, shelly.token) == (True, None)  # a password is never handed out
    assert inbox.known_device("AAAAAAAAAAAA") is None


@pytest.mark.django_db
def test_runtime_hears_about_moves_but_not_about_mere_sightings():
    """The runtime follows the database through post_save; a move must reach it, a device
    merely seen again must not wake it (and neither may touch the runtime's own columns)."""
    from django.db.models.signals import post_save

    device = Device.objects.create(mac="441793D69718", vendor="shelly", host="192.168.1.20", adopted=True,
                                   online=True, raw_status={"live": 1})
    saved: list[tuple[int, frozenset | None]] = []

    def receiver(sender, instance, update_fields=None, **kw):
        saved.append((instance.pk, update_fields))

    post_save.connect(receiver, sender=Device, dispatch_uid="test-disc-inbox")
    try:
        Device.objects.filter(pk=device.pk).update(online=False)  # the runtime, meanwhile
        inbox.record(shelly_info(), "192.168.1.20", 80, "mdns")
        assert saved == []
        inbox.record(shelly_info(), "192.168.1.21", 80, "mdns")
        assert len(saved) == 1 and saved[0][0] == device.pk and "host" in saved[0][1]
        assert "online" not in saved[0][1] and "raw_status" not in saved[0][1]
    finally:
        post_save.disconnect(dispatch_uid="test-disc-inbox", sender=Device)
    device.refresh_from_db()
    assert (device.host, device.online, device.raw_status) == ("192.168.1.21", False, {"live": 1})
