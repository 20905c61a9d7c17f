"""Browser websockets: a foreign or missing Origin is refused at the handshake; messages
that are too large or malformed get an error and change nothing; the devices' own socket
closes on oversized frames (with a code daphne can send) and refuses callers it cannot place."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async

from tests.security.secfixtures import build_secure_house
from tests.security.test_sec_matrix import ws_connect

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def house():
    return await sync_to_async(build_secure_house)()


def browser_paths(house):
    return ["/ws/home/", f"/ws/devices/{house.plug.pk}/", f"/ws/logs/?devices={house.plug.pk}"]


@pytest.mark.parametrize("origin", [b"http://evil.example", b"http://127.0.0.1.evil.example", b"null", None])
async def test_foreign_or_missing_origin_is_refused(house, origin):
    for path in browser_paths(house):
        header = (b"origin", origin) if origin is not None else None
        communicator, connected = await ws_connect(path, house.anna, origin=header)
        assert not connected, f"{path} accepted Origin {origin!r}"


async def test_the_right_origin_is_accepted(house):
    for path in browser_paths(house):
        communicator, connected = await ws_connect(path, house.anna)
        assert connected
        await communicator.disconnect()


@pytest.mark.parametrize("path", ["/ws/home/", "device"])
async def test_oversized_and_garbage_messages_are_refused_and_change_nothing(house, path):
    path = f"/ws/devices/{house.plug.pk}/" if path == "device" else path
    communicator, _ = await ws_connect(path, house.cara)
    snapshot = await communicator.receive_from(timeout=3)
    assert "channel-" in snapshot
    await communicator.send_to(text_data=json.dumps({"type": "refresh", "pad": "x" * 70_000}))
    assert (await communicator.receive_from(timeout=3)).startswith("error: message longer than")
    for garbage in ("not json", "[1, 2]", json.dumps({"type": "command", "action": "on"})):
        await communicator.send_to(text_data=garbage)
        assert (await communicator.receive_from(timeout=3)).startswith("error:")
    await communicator.send_to(bytes_data=b"\x00" * 10)
    assert (await communicator.receive_from(timeout=3)).startswith("error:")
    # Still the same socket, with the same rights: a refresh is the only thing it does.
    await communicator.send_to(text_data=json.dumps({"type": "refresh"}))
    assert await communicator.receive_from(timeout=3) == snapshot
    await communicator.disconnect()


async def test_log_socket_ignores_oversized_messages(house):
    """The log socket's inbound vocabulary is ack/pause/resume (256 bytes at most); anything
    else is dropped without an answer (homedash.js sends every socket a refresh) and the
    socket stays as it was."""
    communicator, connected = await ws_connect(f"/ws/logs/?devices={house.plug.pk}", house.anna)
    assert connected
    await communicator.send_to(text_data=json.dumps({"type": "pause", "pad": "x" * 200_000}))
    await communicator.send_to(bytes_data=b"\xff" * 1000)
    assert await communicator.receive_nothing(timeout=0.5)  # not closed, nothing echoed
    await communicator.disconnect()


async def test_shelly_socket_closes_on_an_oversized_frame(house):
    from channels.testing import WebsocketCommunicator

    from devices.models import Device
    from homedash.asgi import application

    await Device.objects.acreate(mac="08B61FCD36A8", vendor="shelly", generation=2, model_code="SNSN-0013A",
                                 host="127.0.0.3", adopted=True, raw_info={"sleep_mode": True})
    communicator = WebsocketCommunicator(application, "/shelly/ws")
    communicator.scope["client"] = ["127.0.0.3", 40000]   # the sleeper's own address
    connected, _ = await communicator.connect(timeout=3)
    assert connected
    await communicator.send_to(text_data="{" + " " * 300_000 + "}")
    message = await communicator.receive_output(timeout=3)
    # 1009 would be refused by daphne (an application may close with 1000 or 3000-4999).
    assert message["type"] == "websocket.close" and message.get("code") == 4413


async def test_shelly_socket_refuses_a_caller_without_an_address(house):
    communicator, connected = await ws_connect("/shelly/ws", None, origin=None)
    assert not connected
