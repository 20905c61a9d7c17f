"""Devices that report by themselves: myStrom action URLs with a per-device secret, and
sleeping Shelly devices on the outbound websocket."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.testing import WebsocketCommunicator

from devices import runtime as runtime_module
from devices.hooks import RateLimiter, mystrom_report
from devices.models import Device, DeviceEvent
from devices.runtime.setup import build_runtime

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def runtime():
    rt = build_runtime(manager_options={"start_spread": 0.0, "flush_period": 0.1})
    await rt.start()
    runtime_module.install(rt)
    yield rt
    runtime_module.install(None)
    await rt.stop()


async def _adopt(runtime, **fields):
    device = await Device.objects.acreate(**{"adopted": True, **fields})
    await runtime.manager.reload_device(device.pk)
    return device


def test_action_codes_are_understood_and_garbage_is_harmless():
    channels, events = mystrom_report({"mac": "E0E2E650AD78", "action": "2", "battery": "80"})
    assert [e.kind for e in events] == ["double"] and channels[0].battery_pct == 80
    channels, events = mystrom_report({"mac": "x", "action": "8", "value": "123"})
    assert events[0].kind == "motion" and {c.key for c in channels} == {"motion", "light"}
    for params in ({}, {"action": "<script>"}, {"action": "9" * 400, "battery": "-5", "wheel": "1e99"}):
        mystrom_report(params)  # never raises


def test_rate_limiter_is_bounded():
    limiter = RateLimiter(rate=2, window=10, size=3)
    assert limiter.allow("a", now=0) and limiter.allow("a", now=1) and not limiter.allow("a", now=2)
    assert limiter.allow("a", now=11)
    for n in range(10):
        limiter.allow(f"b{n}", now=12)
    assert len(limiter._seen) == 3


async def test_button_press_through_the_hook(async_client, runtime):
    button = await _adopt(runtime, mac="E0E2E650AD78", vendor="mystrom", model_code="104", host="127.0.0.1",
                          raw_info={"type": 104})
    url = f"/hooks/mystrom/{button.webhook_secret}"
    response = await async_client.get(url, {"mac": button.mac, "action": "1", "battery": "64"})
    assert response.status_code == 200
    live = runtime.manager.store.get(button.pk)
    assert live.online and live.events[-1].kind == "single" and live.channels["button"].battery_pct == 64
    await asyncio.sleep(0.4)
    assert await DeviceEvent.objects.filter(device=button, kind="single").aexists()


async def test_unknown_or_mismatched_secrets_reveal_nothing(async_client, runtime):
    button = await _adopt(runtime, mac="E0E2E650AD79", vendor="mystrom", model_code="104", host="127.0.0.1")
    for url in ["/hooks/mystrom/wrong-secret", "/hooks/mystrom/" + "x" * 500,
                f"/hooks/mystrom/{button.webhook_secret}?mac=AABBCCDDEEFF&action=1"]:
        response = await async_client.get(url)
        assert response.status_code == 404
    assert not runtime.manager.store.get(button.pk).events


async def _outbound(path="/shelly/ws", client=("127.0.0.1", 40000)):
    from homedash.asgi import application

    communicator = WebsocketCommunicator(application, path, subprotocols=["json-rpc"])
    communicator.scope["client"] = client
    connected, subprotocol = await communicator.connect()
    assert connected and subprotocol == "json-rpc"
    return communicator


FULL_STATUS = {
    "src": "shellyplusht-08b61fcd36a8", "dst": "ws", "method": "NotifyFullStatus",
    "params": {"ts": 3.1, "temperature:0": {"id": 0, "tC": 21.4, "tF": 70.5},
               "humidity:0": {"id": 0, "rh": 48.2},
               "devicepower:0": {"id": 0, "battery": {"V": 5.6, "percent": 83}, "external": {"present": False}},
               "sys": {"wakeup_period": 7200, "uptime": 3}},
}


async def test_sleeping_shelly_reports_over_the_outbound_websocket(runtime):
    device = await _adopt(runtime, mac="08B61FCD36A8", vendor="shelly", generation=2, model_code="SNSN-0013A",
                          host="127.0.0.1", raw_info={"sleep_mode": True})
    ws = await _outbound()
    await ws.send_to(text_data=json.dumps(FULL_STATUS))
    await ws.send_to(text_data=json.dumps({"src": "shellyplusht-08b61fcd36a8", "method": "NotifyStatus",
                                           "params": {"temperature:0": {"tC": 22.0}}}))
    await ws.send_to(text_data=json.dumps({"src": "shellyplusht-08b61fcd36a8", "id": 5, "method": "Shelly.Ping"}))
    reply = json.loads(await ws.receive_from())
    assert reply["id"] == 5 and "error" in reply
    await ws.disconnect()
    live = runtime.manager.store.get(device.pk)
    assert live.online and live.channels["temperature:0"].temperature_c == 22.0
    assert live.channels["humidity:0"].humidity_pct == 48.2


@pytest.mark.parametrize("src", [
    "shellyplusht-aabbccddeeff",    # not an adopted device
    "shellyplus1-08b61fcd36a9",     # another device than the one at this address
    "<img src=x>",
])
async def test_outbound_websocket_closes_on_a_first_frame_that_is_not_this_device(runtime, src):
    await _adopt(runtime, mac="08B61FCD36A8", vendor="shelly", generation=2, model_code="SNSN-0013A",
                 host="127.0.0.1", raw_info={"sleep_mode": True})
    ws = await _outbound()
    await ws.send_to(text_data=json.dumps({**FULL_STATUS, "src": src}))
    closed = await ws.receive_output()
    assert closed["type"] == "websocket.close" and closed["code"] == 4403


@pytest.mark.parametrize("client,fields", [
    (("127.0.0.9", 1), {"raw_info": {"sleep_mode": True}}),   # right device, wrong address
    (("127.0.0.1", 1), {"raw_info": {}, "model_code": "SNSW-001P16EU"}),  # adopted, but never sleeps
    (("127.0.0.1", 1), {"raw_info": {"sleep_mode": True}, "adopted": False}),  # still in the inbox
    (None, {"raw_info": {"sleep_mode": True}}),   # no address at all
])
async def test_outbound_websocket_refuses_strangers_at_the_handshake(runtime, client, fields):
    device = await _adopt(runtime, mac="08B61FCD36A8", vendor="shelly", generation=2,
                          **{"model_code": "SNSN-0013A", "host": "127.0.0.1", **fields})
    from homedash.asgi import application

    communicator = WebsocketCommunicator(application, "/shelly/ws", subprotocols=["json-rpc"])
    if client is not None:
        communicator.scope["client"] = client
    connected, _ = await communicator.connect()
    assert not connected
    live = runtime.manager.store.get(device.pk)
    assert live is None or not live.online
