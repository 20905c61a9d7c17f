"""The dashboard's websockets on the real ASGI application (Origin check, session cookie,
routing): who may connect, what they get at connect, and that a viewer's socket never
carries a card of a room they cannot see — with fragments made by the real publisher."""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import Client

from devices import consumers
from devices.drivers.types import ChannelState
from devices.models import RoomAccess
from devices.runtime.manager import DeviceManager, _load_from_database
from homedash.asgi import application
from tests.dashboard.conftest import build_house

pytestmark = pytest.mark.django_db(transaction=True)
ORIGIN = (b"origin", b"http://127.0.0.1")


@pytest.fixture
async def house():
    return await sync_to_async(build_house)(get_user_model())


def _session_cookie(user) -> tuple[bytes, str, str]:
    client = Client()
    client.force_login(user)
    key = client.cookies["sessionid"].value
    return b"cookie", f"sessionid={key}", key


async def connect(path: str, user=None, origin=ORIGIN):
    headers = [origin] if origin else []
    session_key = None
    if user is not None:
        name, value, session_key = await sync_to_async(_session_cookie)(user)
        headers.append((name, value.encode()))
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect(timeout=3)
    communicator.session_key = session_key
    return communicator, connected


async def closed_with(communicator) -> int | None:
    message = await communicator.receive_output(timeout=3)
    return message.get("code") if message["type"] == "websocket.close" else None


async def test_anonymous_is_accepted_then_closed_4401(house):
    communicator, connected = await connect("/ws/home/")
    assert connected
    assert await closed_with(communicator) == 4401


async def test_foreign_origin_is_refused(house):
    communicator, connected = await connect("/ws/home/", house.anna, origin=(b"origin", b"http://evil.example"))
    assert not connected


async def test_snapshot_on_connect_holds_exactly_the_visible_cards(house):
    communicator, connected = await connect("/ws/home/", house.cara)
    assert connected
    snapshot = await communicator.receive_from(timeout=3)
    assert f'id="channel-{house.plug_ch.pk}"' in snapshot and f'id="channel-{house.lamp_ch.pk}"' in snapshot
    assert f'id="channel-{house.cover_ch.pk}"' not in snapshot and f'id="channel-{house.sensor_ch.pk}"' not in snapshot
    assert 'hx-swap-oob="true"' in snapshot
    await communicator.disconnect()

    communicator, _ = await connect("/ws/home/", house.anna)
    snapshot = await communicator.receive_from(timeout=3)
    for channel in (house.plug_ch, house.lamp_ch, house.cover_ch, house.sensor_ch):
        assert f'id="channel-{channel.pk}"' in snapshot
    await communicator.disconnect()


async def test_snapshot_shows_a_buttons_last_stored_press(house):
    from devices.models import Channel, Device, DeviceEvent

    button_device = await Device.objects.acreate(mac="AABBCC00000B", vendor="mystrom", host="10.0.0.21",
                                                 name="Door button", room=house.kitchen, adopted=True)
    button = await Channel.objects.acreate(device=button_device, key="button", kind="input")
    await DeviceEvent.objects.acreate(device=button_device, channel=button, kind="long")
    communicator, _ = await connect("/ws/home/", house.cara)
    snapshot = await communicator.receive_from(timeout=3)
    assert f'id="channel-{button.pk}"' in snapshot and "long" in snapshot
    await communicator.disconnect()


async def test_a_reconnect_gets_a_fresh_snapshot(house):
    for _ in range(2):
        communicator, _ = await connect("/ws/home/", house.ben)
        assert f'id="channel-{house.plug_ch.pk}"' in await communicator.receive_from(timeout=3)
        await communicator.disconnect()


async def test_device_page_socket(house):
    communicator, connected = await connect(f"/ws/devices/{house.plug.pk}/", house.cara)
    assert connected
    snapshot = await communicator.receive_from(timeout=3)
    assert f'id="channel-{house.plug_ch.pk}"' in snapshot and f'id="channel-{house.lamp_ch.pk}"' not in snapshot
    await communicator.disconnect()
    communicator, _ = await connect(f"/ws/devices/{house.shutter.pk}/", house.cara)
    assert await closed_with(communicator) == 4403
    communicator, _ = await connect("/ws/devices/999999/", house.anna)
    assert await closed_with(communicator) == 4404


async def test_viewer_never_receives_a_card_of_a_room_they_cannot_see(house):
    """The real publisher renders each change once and sends it to the device's and the
    room's groups; Cara (kitchen viewer) gets the kitchen's change and nothing of the
    garden's, Anna (staff) gets both."""
    manager = DeviceManager()
    _, catalogue, _ = await sync_to_async(_load_from_database)()
    manager._adopt_catalogue(catalogue)
    for device in (house.plug, house.shutter):
        manager.store.ensure(device.pk, device.mac)

    cara, _ = await connect("/ws/home/", house.cara)
    anna, _ = await connect("/ws/home/", house.anna)
    cara_device, _ = await connect(f"/ws/devices/{house.plug.pk}/", house.cara)
    for communicator in (cara, anna, cara_device):
        await communicator.receive_from(timeout=3)  # the snapshot

    manager.store.apply(house.shutter.pk, [ChannelState(key="roller:0", kind="cover", position_pct=77.0, moving="opening")])
    for_anna = await anna.receive_from(timeout=3)
    assert f'id="channel-{house.cover_ch.pk}"' in for_anna and "77 % open" in for_anna
    assert await cara.receive_nothing(timeout=0.3)
    assert await cara_device.receive_nothing(timeout=0.1)

    await asyncio.sleep(0.15)  # past the publisher's coalescing window
    manager.store.apply(house.plug.pk, [ChannelState(key="switch:0", kind="switch", on=False, power_w=0.0)])
    for communicator in (cara, anna, cara_device):
        html = await communicator.receive_from(timeout=3)
        assert f'id="channel-{house.plug_ch.pk}"' in html and 'aria-pressed="false"' in html
    for communicator in (cara, anna, cara_device):
        await communicator.disconnect()


async def test_partly_shared_device_follows_rooms_not_the_device_group(house):
    """Cara sees the kitchen: if one channel of the kitchen plug is moved to the garden,
    her device page must not join the device group (which carries the garden channel)."""
    from devices.models import Channel

    other = await Channel.objects.acreate(device=house.plug, key="switch:1", kind="switch", room=house.garden)
    communicator, _ = await connect(f"/ws/devices/{house.plug.pk}/", house.cara)
    snapshot = await communicator.receive_from(timeout=3)
    assert f'id="channel-{other.pk}"' not in snapshot
    layer = get_channel_layer()
    await layer.group_send(f"device.{house.plug.pk}", {"type": "fragment", "html": "<p>everything</p>"})
    assert await communicator.receive_nothing(timeout=0.3)
    await layer.group_send(f"room.{house.kitchen.pk}", {"type": "fragment", "html": "<p>kitchen</p>"})
    assert await communicator.receive_from(timeout=3) == "<p>kitchen</p>"
    await communicator.disconnect()


async def test_handlers_forward_the_text_as_it_is(house):
    communicator, _ = await connect("/ws/home/", house.ben)
    await communicator.receive_from(timeout=3)
    html = '<article id="x">&lt;b&gt; as rendered once</article>'
    await get_channel_layer().group_send(f"room.{house.kitchen.pk}", {"type": "fragment", "html": html})
    assert await communicator.receive_from(timeout=3) == html
    await communicator.disconnect()


async def test_a_stream_of_changes_leaves_as_few_messages_in_order(house, monkeypatch):
    """The first card after a quiet spell leaves at once; cards that follow within a
    frame are gathered into one message, in the order they came."""
    monkeypatch.setattr(consumers, "FRAME", 0.3)
    communicator, _ = await connect("/ws/home/", house.ben)
    await communicator.receive_from(timeout=3)          # the snapshot
    await asyncio.sleep(0.35)                           # quiet for longer than a frame
    layer, group = get_channel_layer(), f"room.{house.kitchen.pk}"
    await layer.group_send(group, {"type": "fragment", "html": "<p>first</p>"})
    assert await communicator.receive_from(timeout=0.2) == "<p>first</p>"
    for n in range(5):
        await layer.group_send(group, {"type": "fragment", "html": f"<p>{n}</p>"})
    assert await communicator.receive_from(timeout=2) == "".join(f"<p>{n}</p>" for n in range(5))
    assert await communicator.receive_nothing(timeout=0.4)
    await communicator.disconnect()


async def test_a_page_that_falls_too_far_behind_gets_a_snapshot_not_a_backlog(house, monkeypatch):
    monkeypatch.setattr(consumers, "FRAME", 0.3)
    monkeypatch.setattr(consumers, "OUTBOX_LIMIT", 1000)
    communicator, _ = await connect("/ws/home/", house.ben)
    snapshot = await communicator.receive_from(timeout=3)
    await asyncio.sleep(0.35)
    layer, group = get_channel_layer(), f"room.{house.kitchen.pk}"
    await layer.group_send(group, {"type": "fragment", "html": "<p>sent at once</p>"})
    assert await communicator.receive_from(timeout=0.2) == "<p>sent at once</p>"
    for n in range(4):                                  # 4 × 400 bytes > the limit
        await layer.group_send(group, {"type": "fragment", "html": f"<p>{n}{'x' * 393}</p>"})
    # What arrives instead is everything the page shows, as it is now.
    assert await communicator.receive_from(timeout=3) == snapshot
    assert await communicator.receive_nothing(timeout=0.4)
    await communicator.disconnect()


async def test_logout_closes_that_sessions_sockets_only(house):
    laptop, _ = await connect("/ws/home/", house.ben)
    phone, _ = await connect("/ws/home/", house.ben)
    await laptop.receive_from(timeout=3)
    await phone.receive_from(timeout=3)

    def log_out(session_key):
        from django.contrib.auth import logout
        from django.contrib.sessions.backends.db import SessionStore
        from django.http import HttpRequest

        request = HttpRequest()
        request.session = SessionStore(session_key)
        request.user = house.ben
        logout(request)

    await sync_to_async(log_out)(laptop.session_key)
    assert await closed_with(laptop) == 4401
    assert await phone.receive_nothing(timeout=0.3)
    await phone.disconnect()


async def test_access_change_closes_sockets_so_the_page_reconnects_with_new_rights(house):
    communicator, _ = await connect("/ws/home/", house.cara)
    await communicator.receive_from(timeout=3)
    await RoomAccess.objects.filter(user=house.cara).adelete()
    assert await closed_with(communicator) == 4000
    # Reconnecting decides anew: nothing is shared any more, so nothing comes.
    communicator, connected = await connect("/ws/home/", house.cara)
    assert connected and await communicator.receive_nothing(timeout=0.3)
    await communicator.disconnect()


async def test_browser_messages_are_bounded_and_schema_checked(house):
    communicator, _ = await connect("/ws/home/", house.ben)
    await communicator.receive_from(timeout=3)
    await communicator.send_to(text_data="x" * 5000)
    assert (await communicator.receive_from(timeout=3)).startswith("error: message longer than")
    await communicator.send_to(text_data="{not json")
    assert (await communicator.receive_from(timeout=3)).startswith("error: not JSON")
    await communicator.send_to(text_data=json.dumps({"type": "toggle", "channel": house.plug_ch.pk}))
    assert (await communicator.receive_from(timeout=3)).startswith("error: unknown message")
    await communicator.send_to(bytes_data=b"\x00\x01")
    assert (await communicator.receive_from(timeout=3)).startswith("error: only JSON text")
    # The one thing it understands: send everything again.
    await communicator.send_to(text_data=json.dumps({"type": "refresh"}))
    assert f'id="channel-{house.plug_ch.pk}"' in await communicator.receive_from(timeout=3)
    await communicator.disconnect()


async def test_groups_are_joined_again_before_they_expire(house, monkeypatch):
    monkeypatch.setattr(consumers, "REJOIN_PERIOD", 0.2)
    communicator, _ = await connect("/ws/home/", house.ben)
    await communicator.receive_from(timeout=3)
    layer = get_channel_layer()
    group = f"room.{house.kitchen.pk}"
    (member, joined_at), = layer.groups[group].items()
    await asyncio.sleep(0.5)
    assert layer.groups[group][member] > joined_at
    assert f"user.{house.ben.pk}" in layer.groups
    await communicator.disconnect()
    assert member not in layer.groups.get(group, {})
