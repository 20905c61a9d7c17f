"""Every page and htmx action of the live dashboard, for the whole cast: it works for whom
it should, and everyone else is sent to the login page or refused (403, audited)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from devices.models import AuditEntry, Channel, Device, DeviceEvent, Reading, RoomAccess

pytestmark = pytest.mark.django_db


@pytest.fixture
def commands(monkeypatch):
    """The runtime, as far as views see it: records commands, answers as told."""
    sent = []
    answer = {"ok": True, "channels": []}

    async def fake_send_command(device_pk, channel, action, params=None):
        sent.append((device_pk, channel, action, params or {}))
        return dict(answer)

    monkeypatch.setattr("devices.runtime.manager.send_command", fake_send_command)
    fake_send_command.sent = sent
    fake_send_command.answer = answer
    return fake_send_command


def command(client, channel, **data):
    return client.post(reverse("channel-command", args=[channel.pk]), data, HTTP_HX_REQUEST="true")


# ----------------------------------------------------------------------------- anonymous
@pytest.mark.parametrize("name, args", [
    ("home", []), ("device", ["plug"]), ("device-health", ["plug"]), ("device-raw", ["plug"]),
    ("inbox", []), ("events", []),
])
def test_pages_send_anonymous_visitors_to_login(client, house, name, args):
    url = reverse(name, args=[getattr(house, a).pk for a in args])
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith("/login/")


@pytest.mark.parametrize("name, target", [
    ("channel-command", "plug_ch"), ("channel-settings", "plug_ch"), ("device-settings", "plug"),
    ("device-credentials", "plug"), ("inbox-adopt", "plug"), ("inbox-ignore", "plug"),
])
def test_actions_send_anonymous_visitors_to_login(client, house, name, target, commands):
    response = client.post(reverse(name, args=[getattr(house, target).pk]), {"action": "on"})
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert commands.sent == []


# ----------------------------------------------------------------------------- home
def test_home_shows_rooms_in_order_with_cards_by_kind(as_user, house):
    page = as_user(house.anna).get("/").content.decode()
    assert page.index("Kitchen") < page.index("Garden") < page.index("Not in a room yet")
    assert f'id="channel-{house.plug_ch.pk}"' in page and "1200.5 W" in page
    assert f'id="channel-{house.cover_ch.pk}"' in page and "30 % open" in page
    assert f'id="channel-{house.sensor_ch.pk}"' in page and "18.5 °C" in page
    assert f'id="channel-{house.lamp_ch.pk}"' in page and 'type="color"' in page
    # One socket for the page, CSRF for htmx from an attribute (no inline script).
    assert 'ws-connect="/ws/home/"' in page and "X-CSRFToken" in page and "<script>" not in page
    # The cards say honestly that nothing in this process follows the devices.
    assert "last known" in page
    assert "offline" in page  # the garden shutter


def test_members_see_only_their_rooms_and_controls_only_where_allowed(as_user, house):
    page = as_user(house.ben).get("/").content.decode()
    assert "Kitchen" in page and "Garden" not in page and "Attic climate" not in page
    assert 'class="room can-control"' in page
    page = as_user(house.cara).get("/").content.decode()
    assert f'id="channel-{house.plug_ch.pk}"' in page
    assert 'class="room can-control"' not in page  # the card's controls stay hidden
    page = as_user(house.dora).get("/").content.decode()
    assert "Nothing has been shared with you yet" in page and "channel-" not in page


def test_device_text_is_escaped_everywhere(as_user, house):
    house.plug.name = '<img src=x onerror=alert(1)>'
    house.plug.firmware = "<script>alert(2)</script>"
    house.plug.raw_status = {"name": "</pre><script>alert(3)</script>"}
    house.plug.save()
    client = as_user(house.anna)
    for url in ("/", reverse("device", args=[house.plug.pk])):
        page = client.get(url).content.decode()
        assert "<img src=x" not in page and "<script>alert" not in page
        assert "&lt;img src=x onerror=alert(1)&gt;" in page


def test_a_button_shows_its_last_stored_press(as_user, house):
    alone = Device.objects.create(mac="AABBCC00000A", vendor="mystrom", host="10.0.0.20", name="Door button",
                                  room=house.kitchen, adopted=True)
    button = Channel.objects.create(device=alone, key="button", kind="input")
    DeviceEvent.objects.create(device=alone, channel=button, kind="double")
    page = as_user(house.ben).get("/").content.decode()
    card = page[page.index(f'id="channel-{button.pk}"'):]
    assert "Last press" in card[:3000] and "double" in card[:3000]


def test_inputs_wired_to_a_relay_stay_on_the_device_page(as_user, house):
    wired = Channel.objects.create(device=house.plug, key="input:0", kind="input")
    alone = Device.objects.create(mac="AABBCC000009", vendor="shelly", generation=2, host="10.0.0.19",
                                  name="Scene buttons", room=house.kitchen, adopted=True)
    button = Channel.objects.create(device=alone, key="input:0", kind="input")
    client = as_user(house.anna)
    home = client.get("/").content.decode()
    assert f'id="channel-{wired.pk}"' not in home and f'id="channel-{button.pk}"' in home
    assert f'id="channel-{wired.pk}"' in client.get(reverse("device", args=[house.plug.pk])).content.decode()


# ----------------------------------------------------------------------------- device page
def test_device_page_shows_identity_health_chart_raw_and_events(as_user, house):
    from django.utils import timezone

    now = timezone.now()
    Reading.objects.bulk_create(Reading(channel=house.plug_ch, metric="power_w", value=100.0 + i,
                                        ts=now - timezone.timedelta(minutes=10 * i)) for i in range(30))
    DeviceEvent.objects.create(device=house.plug, kind="offline")
    page = as_user(house.anna).get(reverse("device", args=[house.plug.pk])).content.decode()
    for text in ("Shelly Plus 1PM", "Gen2", "AABBCC000001", "10.0.0.11", "1.4.4", "Connection",
                 "Raw status (JSON)", "apower", "offline", 'ws-connect="/ws/devices/', "<polyline",
                 "Password", "Name and room"):
        assert text in page, text


def test_device_page_forms_are_for_staff_only(as_user, house):
    page = as_user(house.ben).get(reverse("device", args=[house.plug.pk])).content.decode()
    assert "Kettle plug" in page and "Save password" not in page and "Name and room" not in page


@pytest.mark.parametrize("who, status", [("anna", 200), ("ben", 200), ("cara", 200), ("dora", 403)])
def test_device_page_access(as_user, house, who, status):
    client = as_user(getattr(house, who))
    assert client.get(reverse("device", args=[house.plug.pk])).status_code == status
    assert client.get(reverse("device-health", args=[house.plug.pk])).status_code == status
    assert client.get(reverse("device-raw", args=[house.plug.pk])).status_code == status
    # Nobody but staff sees a device in no room.
    expected = 200 if who == "anna" else 403
    assert client.get(reverse("device", args=[house.loose.pk])).status_code == expected


def test_raw_json_is_served_as_json(as_user, house):
    response = as_user(house.cara).get(reverse("device-raw", args=[house.plug.pk]))
    assert response["Content-Type"] == "application/json"
    assert response.json()["status"]["switch:0"]["apower"] == 1200.5


def test_health_fragment_is_a_polled_panel(as_user, house):
    html = as_user(house.cara).get(reverse("device-health", args=[house.plug.pk])).content.decode()
    assert 'id="health"' in html and 'hx-trigger="every 15s"' in html and "<html" not in html


# ----------------------------------------------------------------------------- commands
def test_command_runs_and_answers_with_the_card(as_user, house, commands):
    response = command(as_user(house.ben), house.plug_ch, action="off")
    assert response.status_code == 200
    html = response.content.decode()
    assert f'id="channel-{house.plug_ch.pk}"' in html and 'hx-swap-oob="true"' in html
    assert commands.sent == [(house.plug.pk, "switch:0", "off", {})]
    entry = AuditEntry.objects.get(action="channel.command")
    assert (entry.user, entry.channel, entry.result, entry.detail) == (house.ben, house.plug_ch, "ok", "off")


def test_failed_command_says_why_on_the_card(as_user, house, commands):
    commands.answer.update(ok=False, error="unreachable")
    html = command(as_user(house.anna), house.cover_ch, action="position", position="55").content.decode()
    assert "Did not work: unreachable." in html
    assert commands.sent == [(house.shutter.pk, "roller:0", "position", {"position": 55.0})]
    entry = AuditEntry.objects.get(action="channel.command")
    assert entry.result == "failed" and "unreachable" in entry.detail


def test_light_commands_take_colour_temperature_and_fade(as_user, house, commands):
    client = as_user(house.ben)
    assert command(client, house.lamp_ch, action="colour", colour="#ff0000", ramp_ms="1000").status_code == 200
    assert command(client, house.lamp_ch, action="brightness", brightness="70").status_code == 200
    assert command(client, house.lamp_ch, action="colour_temp", kelvin="3000").status_code == 200
    assert command(client, house.lamp_ch, action="white", white="4").status_code == 200
    assert command(client, house.lamp_ch, action="white", white="19").status_code == 400
    assert [c[2:] for c in commands.sent] == [
        ("colour", {"h": 0.0, "s": 100.0, "v": 100.0, "ramp_ms": 1000}),
        ("brightness", {"brightness": 70.0}),
        ("colour_temp", {"kelvin": 3000}),
        ("white", {"white": 4}),
    ]


def test_mystrom_light_card_offers_colour_and_white_tone_in_any_mode(as_user, house):
    """A myStrom bulb's white is a tone index: the card shows it in mono mode and offers
    both the colour picker and the tone slider whatever mode the bulb is in."""
    from devices.cards import render_card
    from devices.models import Channel

    channel = Channel.objects.select_related("device").get(pk=house.lamp_ch.pk)
    for state, shown in (({"key": "light", "kind": "light", "on": True, "colour": [5, 60], "colour_mode": "mono",
                           "brightness_pct": 60}, "tone 5 of 18"),
                          ({"key": "light", "kind": "light", "on": True, "colour": [120, 50, 40], "colour_mode": "hsv",
                            "brightness_pct": 40}, "colour now")):
        channel.last_state = state
        html = render_card(channel)
        assert shown in html
        assert 'name="white"' in html and 'min="1" max="18"' in html and 'type="color"' in html


@pytest.mark.parametrize("who", ["cara", "dora"])
def test_command_denied_is_403_and_audited(as_user, house, commands, who):
    user = getattr(house, who)
    response = command(as_user(user), house.plug_ch, action="on")
    assert response.status_code == 403
    assert commands.sent == []
    entry = AuditEntry.objects.get(action="channel.command")
    assert (entry.user, entry.result, entry.channel) == (user, "denied", house.plug_ch)


def test_member_cannot_control_another_room(as_user, house, commands):
    assert command(as_user(house.ben), house.cover_ch, action="open").status_code == 403
    assert commands.sent == []


@pytest.mark.parametrize("data, message", [
    ({"action": "explode"}, "action must be one of"),
    ({"action": "on", "volume": "11"}, "unexpected field"),
    ({"action": "brightness", "brightness": "250"}, "brightness must be a number from 0 to 100"),
    ({"action": "brightness", "brightness": "nan"}, "brightness must be a number"),
    ({"action": "colour", "colour": "red"}, "colour must look like #ff8800"),
    ({"action": "colour_temp", "kelvin": "100"}, "kelvin must be a number from 2700 to 6500"),
    ({"action": "on", "ramp_ms": "12"}, "ramp_ms must be one of"),
])
def test_garbage_commands_get_a_clear_error_and_change_nothing(as_user, house, commands, data, message):
    response = command(as_user(house.anna), house.lamp_ch, **data)
    assert response.status_code == 400 and message in response.content.decode()
    assert commands.sent == [] and not AuditEntry.objects.filter(action="channel.command").exists()


def test_sensors_cannot_be_commanded(as_user, house, commands):
    response = command(as_user(house.anna), house.sensor_ch, action="on")
    assert response.status_code == 400 and "cannot be controlled" in response.content.decode()


def test_oversized_command_is_refused(as_user, house, commands):
    response = command(as_user(house.anna), house.plug_ch, action="on", pad="x" * 10_000)
    assert response.status_code == 413 and commands.sent == []


def test_command_needs_post(as_user, house, commands):
    assert as_user(house.anna).get(reverse("channel-command", args=[house.plug_ch.pk])).status_code == 405


# ----------------------------------------------------------------------------- settings
def test_staff_renames_and_moves_a_channel(as_user, house):
    client = as_user(house.anna)
    prefix = f"ch{house.plug_ch.pk}"
    response = client.post(reverse("channel-settings", args=[house.plug_ch.pk]),
                           {f"{prefix}-name": "Kettle", f"{prefix}-room": house.garden.pk, f"{prefix}-visible": "on"})
    assert response.status_code == 302
    house.plug_ch.refresh_from_db()
    assert (house.plug_ch.name, house.plug_ch.room) == ("Kettle", house.garden)
    assert AuditEntry.objects.filter(action="channel.settings", channel=house.plug_ch).exists()


@pytest.mark.parametrize("who", ["ben", "cara", "dora"])
def test_only_staff_may_rename(as_user, house, who):
    prefix = f"ch{house.plug_ch.pk}"
    response = as_user(getattr(house, who)).post(reverse("channel-settings", args=[house.plug_ch.pk]),
                                                  {f"{prefix}-name": "Mine"})
    assert response.status_code == 403
    house.plug_ch.refresh_from_db()
    assert house.plug_ch.name == ""
    response = as_user(getattr(house, who)).post(reverse("device-settings", args=[house.plug.pk]), {"name": "Mine"})
    assert response.status_code == 403


def test_staff_renames_a_device_and_sets_its_room(as_user, house):
    response = as_user(house.anna).post(reverse("device-settings", args=[house.loose.pk]),
                                        {"name": "Attic H&T", "room": house.garden.pk})
    assert response.status_code == 302
    house.loose.refresh_from_db()
    assert (house.loose.name, house.loose.room) == ("Attic H&T", house.garden)


def test_credentials_are_checked_with_the_device_before_saving(as_user, house, monkeypatch):
    answers = {"problem": "wrong password"}

    async def fake_verify(device, creds):
        return answers["problem"]

    monkeypatch.setattr("devices.views.verify_credentials", fake_verify)
    client = as_user(house.anna)
    url = reverse("device-credentials", args=[house.plug.pk])
    client.post(url, {"password": "nope"})
    house.plug.refresh_from_db()
    assert not house.plug.has_credentials
    assert AuditEntry.objects.get(action="device.credentials").result == "failed"
    answers["problem"] = None
    client.post(url, {"password": "s3cret-pass"})
    house.plug.refresh_from_db()
    assert house.plug.credentials.password == "s3cret-pass"
    # Write-only: the page never shows it again.
    assert "s3cret-pass" not in client.get(reverse("device", args=[house.plug.pk])).content.decode()


def test_credentials_are_staff_only(as_user, house):
    response = as_user(house.ben).post(reverse("device-credentials", args=[house.plug.pk]), {"password": "x"})
    assert response.status_code == 403


# ----------------------------------------------------------------------------- inbox
@pytest.fixture
def newcomer(house):
    return Device.objects.create(mac="AABBCC0000AA", vendor="mystrom", model_code="106", model_name="Switch",
                                 host="10.0.0.50", auth_required=True, found_by="udp")


def test_inbox_lists_devices_waiting_for_adoption(as_user, house, newcomer):
    Device.objects.create(mac="AABBCC0000AB", vendor="shelly", host="10.0.0.51", ignored=True, name="Neighbour's plug")
    page = as_user(house.anna).get(reverse("inbox")).content.decode()
    assert "AABBCC0000AA" in page and "Scan a subnet" in page and "Add by address" in page
    assert "Neighbour&#x27;s plug" in page  # in the ignored list, not waiting
    assert page.index("AABBCC0000AA") < page.index("Ignored")


@pytest.mark.parametrize("who", ["ben", "cara", "dora"])
def test_inbox_is_staff_only(as_user, house, newcomer, who):
    client = as_user(getattr(house, who))
    assert client.get(reverse("inbox")).status_code == 403
    assert client.post(reverse("inbox-adopt", args=[newcomer.pk]), {f"d{newcomer.pk}-name": "x"}).status_code == 403
    assert client.post(reverse("inbox-ignore", args=[newcomer.pk])).status_code == 403
    assert client.post(reverse("inbox-scan"), {"subnet": "10.0.0.0/24"}).status_code == 403
    assert client.post(reverse("inbox-add"), {"host": "10.0.0.9", "port": 80}).status_code == 403
    newcomer.refresh_from_db()
    assert not newcomer.adopted and not newcomer.ignored


def test_adopting_asks_for_the_token_and_checks_it(as_user, house, newcomer, monkeypatch):
    checked = []

    async def fake_verify(device, creds):
        checked.append(creds.token)
        return None if creds.token == "right-token" else "wrong token"

    monkeypatch.setattr("devices.views.verify_credentials", fake_verify)
    client = as_user(house.anna)
    url = reverse("inbox-adopt", args=[newcomer.pk])
    p = f"d{newcomer.pk}"
    client.post(url, {f"{p}-name": "Washing machine", f"{p}-room": house.kitchen.pk})
    newcomer.refresh_from_db()
    assert not newcomer.adopted and checked == []  # no token given: asked for it
    client.post(url, {f"{p}-name": "Washing machine", f"{p}-room": house.kitchen.pk, f"{p}-token": "wrong"})
    newcomer.refresh_from_db()
    assert not newcomer.adopted and checked == ["wrong"]
    client.post(url, {f"{p}-name": "Washing machine", f"{p}-new_room": "Laundry", f"{p}-token": "right-token"})
    newcomer.refresh_from_db()
    assert newcomer.adopted and newcomer.name == "Washing machine" and newcomer.room.name == "Laundry"
    assert newcomer.credentials.token == "right-token"
    assert AuditEntry.objects.filter(action="device.adopt", result="ok").exists()


def test_ignore_and_undo(as_user, house, newcomer):
    client = as_user(house.anna)
    client.post(reverse("inbox-ignore", args=[newcomer.pk]))
    newcomer.refresh_from_db()
    assert newcomer.ignored
    client.post(reverse("inbox-ignore", args=[newcomer.pk]), {"undo": "1"})
    newcomer.refresh_from_db()
    assert not newcomer.ignored


def test_scan_refuses_public_or_huge_ranges(as_user, house):
    page = as_user(house.anna).post(reverse("inbox-scan"), {"subnet": "8.8.8.0/24"}).content.decode()
    assert "not a private local network range" in page
    page = as_user(house.anna).post(reverse("inbox-scan"), {"subnet": "10.0.0.0/8"}).content.decode()
    assert "too large" in page


def test_add_by_address_refuses_what_is_not_a_device_address(as_user, house, settings):
    settings.ALLOW_LOOPBACK_DEVICES = False
    page = as_user(house.anna).post(reverse("inbox-add"), {"host": "127.0.0.1", "port": 80}).content.decode()
    assert "loopback" in page.lower()
    assert not Device.objects.filter(host="127.0.0.1").exists()


# ----------------------------------------------------------------------------- events
def test_events_page_merges_presses_presence_and_commands(as_user, house):
    DeviceEvent.objects.create(device=house.plug, channel=house.plug_ch, kind="single")
    DeviceEvent.objects.create(device=house.plug, kind="offline")
    DeviceEvent.objects.create(device=house.shutter, kind="online")
    AuditEntry.objects.create(action="channel.command", device=house.plug, channel=house.plug_ch, username="ben",
                              detail="on")
    client = as_user(house.anna)
    press, offline = 'event-kind">single', 'event-kind">offline'
    page = client.get(reverse("events")).content.decode()
    assert press in page and offline in page and "by ben" in page and "Garden shutter" in page
    page = client.get(reverse("events"), {"show": "presence"}).content.decode()
    assert offline in page and press not in page and "by ben" not in page
    page = client.get(reverse("events"), {"show": "commands"}).content.decode()
    assert "by ben" in page and offline not in page
    page = client.get(reverse("events"), {"device": house.shutter.pk}).content.decode()
    assert "Garden shutter" in page and "by ben" not in page


def test_events_of_rooms_a_member_cannot_see_stay_hidden(as_user, house):
    DeviceEvent.objects.create(device=house.shutter, kind="offline", detail="garden secret")
    DeviceEvent.objects.create(device=house.plug, kind="online", detail="kitchen news")
    page = as_user(house.cara).get(reverse("events")).content.decode()
    assert "kitchen news" in page and "garden secret" not in page
    # Asking for the other room's device by number shows nothing of it either.
    page = as_user(house.cara).get(reverse("events"), {"device": house.shutter.pk}).content.decode()
    assert "garden secret" not in page


def test_access_change_takes_effect_on_the_next_page(as_user, house):
    client = as_user(house.dora)
    assert "Kitchen" not in client.get("/").content.decode()
    RoomAccess.objects.create(room=house.kitchen, user=house.dora, level=RoomAccess.Level.VIEW)
    assert "Kettle plug" in client.get("/").content.decode()
