"""Simulated Shelly Gen1 devices: HTTP API, Basic auth, meters in watt-minutes, input
events, roller movement, sleeping H&T, and CoIoT over real CoAP framing (parsed here with
aioshelly's own parser)."""

from __future__ import annotations

import asyncio
import base64
import json
import struct

import aiohttp
import pytest
from aioshelly.block_device.coap import CoapMessage, CoapType
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.simulator.shelly_gen1 import (
    CODE_CONTENT,
    CODE_STATUS,
    OPT_DEVICE_ID,
    OPT_SERIAL,
    OPT_URI_PATH,
    ShellyGen1,
    coap_decode,
    coap_encode,
)
from sim_helpers import FakeClock, running, udp_inbox, until

# What aioshelly sends: NON GET, Uri-Path "cit" / "d"|"s" (coap.py COAP.request).
AIOSHELLY_GET = b"\x50\x01\x00\x0a\xb3cit\x01%s\xff\x00"


def url(device, path: str) -> str:
    return f"http://{device.address}{path}"


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def get_json(session: aiohttp.ClientSession, device, path: str, **kwargs):
    async with session.get(url(device, path), **kwargs) as r:
        assert r.status == 200, (path, r.status, await r.text())
        return await r.json()


# ------------------------------------------------------------------ HTTP
async def test_1pm_relay_commands_and_status():
    async with running(ShellyGen1("SHSW-PM")) as dev, aiohttp.ClientSession() as s:
        shelly = await get_json(s, dev, "/shelly")
        assert shelly["type"] == "SHSW-PM" and shelly["mac"] == dev.mac and shelly["auth"] is False
        assert "gen" not in shelly                      # no "gen": that is how clients spot Gen1
        relay = await get_json(s, dev, "/relay/0?turn=on")
        assert relay["ison"] is True and relay["source"] == "http" and relay["has_timer"] is False
        relay = await get_json(s, dev, "/relay/0?turn=toggle")
        assert relay["ison"] is False
        relay = await get_json(s, dev, "/relay/0?turn=on&timer=30")
        assert relay["has_timer"] is True and relay["timer_duration"] == 30 and relay["timer_remaining"] > 0
        async with s.post(url(dev, "/relay/0"), data={"turn": "off"}) as r:
            assert (await r.json())["ison"] is False
        status = await get_json(s, dev, "/status")
        assert status["relays"][0]["ison"] is False and status["wifi_sta"]["ip"] == dev.host
        assert status["meters"][0]["timestamp"] > status["unixtime"]   # local time, as real Gen1
        for bad in ("/relay/0?turn=maybe", "/relay/0?turn=on&timer=soon"):
            async with s.get(url(dev, bad)) as r:
                assert r.status == 400
        async with s.get(url(dev, "/relay/1?turn=on")) as r:
            assert r.status == 404
        async with s.get(url(dev, "/roller/0?go=open")) as r:
            assert r.status == 404


async def test_meter_total_is_in_watt_minutes_and_counters_per_minute():
    clock = FakeClock()
    dev = ShellyGen1("SHPLG-S", clock=clock)
    out = dev.outputs[0]
    out.appliance.nominal_w = 120.0
    dev._switch(0, True, "http")
    power = out.appliance.power
    clock.advance(180)
    meter = dev.meter(0)
    # piecewise constant: one sample for 3 minutes -> 3 * power watt-minutes
    assert meter["total"] == int(power * 180 / 60)
    clock.advance(30)
    counters = dev.meter(0)["counters"]
    assert counters[0] == pytest.approx(power, rel=0.02)  # the last whole minute, in Wmin
    dev._switch(0, False, "http")
    clock.advance(120)
    off = dev.meter(0)
    assert off["power"] == 0 and off["counters"][0] == 0


async def test_inputs_count_events_and_flip_switches_output():
    dev = ShellyGen1("SHSW-PM")
    was = dev.outputs[0].ison
    dev.press(0, "single")
    assert dev.inputs[0].status() == {"input": 0, "event": "S", "event_cnt": 1}
    assert dev.outputs[0].ison is not was              # momentary input toggles the relay
    dev.press(0, "long")
    dev.press(0, "double")
    assert dev.inputs[0].status()["event"] == "SS" and dev.inputs[0].event_cnt == 3
    before = dev.outputs[0].ison
    dev.flip(0)
    assert dev.outputs[0].ison is not before and dev.outputs[0].source == "input"
    assert dev.inputs[0].level == 1
    with pytest.raises(ValueError):
        dev.press(0, "tickle")
    plug = ShellyGen1("SHPLG-S")
    state = plug.outputs[0].ison
    plug.press()
    assert plug.outputs[0].ison is not state and "inputs" not in plug.status()


async def test_roller_moves_over_time_and_reports_position():
    dev = ShellyGen1("SHSW-25", roller_maxtime=1.0)
    async with running(dev), aiohttp.ClientSession() as s:
        shelly = await get_json(s, dev, "/shelly")
        assert shelly["mode"] == "roller" and shelly["num_rollers"] == 1
        roller = await get_json(s, dev, "/roller/0?go=to_pos&roller_pos=60")
        assert roller["state"] == "open"
        await asyncio.sleep(0.3)
        moving = await get_json(s, dev, "/roller/0")
        assert 5 <= moving["current_pos"] <= 55 and moving["power"] > 0
        assert await until(lambda: dev.rollers[0].state == "stop", timeout=2)
        stopped = (await get_json(s, dev, "/status"))["rollers"][0]
        assert stopped["current_pos"] == 60 and stopped["last_direction"] == "open" and stopped["power"] == 0
        await get_json(s, dev, "/roller/0?go=close")
        await asyncio.sleep(0.2)
        await get_json(s, dev, "/roller/0?go=stop")
        pos = dev.rollers[0].current()
        assert 20 < pos < 55 and dev.rollers[0].state == "stop"
        async with s.get(url(dev, "/roller/0?go=sideways")) as r:
            assert r.status == 400
        # relay mode through /settings?mode=
        settings_ = await get_json(s, dev, "/settings?mode=relay")
        assert settings_["mode"] == "relay" and len(settings_["relays"]) == 2
        relay = await get_json(s, dev, "/relay/1?turn=on")
        assert relay["ison"] is True and relay["is_valid"] is True


async def test_dimmer_and_rgbw2_lights():
    dimmer, rgbw = ShellyGen1("SHDM-2"), ShellyGen1("SHRGBW2")
    async with running(dimmer, rgbw), aiohttp.ClientSession() as s:
        light = await get_json(s, dimmer, "/light/0?turn=on&brightness=40")
        assert light["ison"] is True and light["brightness"] == 40 and light["mode"] == "white"
        async with s.get(url(dimmer, "/light/0?brightness=140")) as r:
            assert r.status == 400
        color = await get_json(s, rgbw, "/color/0?turn=on&red=10&green=20&blue=30&gain=50")
        assert (color["red"], color["green"], color["blue"], color["gain"]) == (10, 20, 30, 50)
        assert color["mode"] == "color"
        async with s.get(url(rgbw, "/white/0?turn=on")) as r:
            assert r.status == 404                       # white channels only in white mode
        settings_ = await get_json(s, rgbw, "/settings?mode=white")
        assert settings_["mode"] == "white" and len(settings_["lights"]) == 4
        white = await get_json(s, rgbw, "/white/2?turn=on&brightness=30")
        assert white["brightness"] == 30 and white["ison"] is True
        status = await get_json(s, rgbw, "/status")
        assert status["mode"] == "white" and len(status["lights"]) == 4
        assert status["meters"][0]["is_valid"] == "true"  # the firmware's string, not a bool
        async with s.get(url(rgbw, "/settings?mode=disco")) as r:
            assert r.status == 400


async def test_basic_auth_when_a_password_is_set():
    async with running(ShellyGen1("SHSW-PM", password="pw&\"x")) as dev, aiohttp.ClientSession() as s:
        shelly = await get_json(s, dev, "/shelly")       # always open
        assert shelly["auth"] is True
        async with s.get(url(dev, "/status")) as r:
            assert r.status == 401
            assert r.headers["WWW-Authenticate"].startswith('Basic realm="')
        async with s.get(url(dev, "/status"), headers=basic("admin", "nope")) as r:
            assert r.status == 401
        await get_json(s, dev, "/status", headers=basic("admin", 'pw&"x'))
        # password changed on the device
        dev.set_secret("neu")
        async with s.get(url(dev, "/status"), headers=basic("admin", 'pw&"x')) as r:
            assert r.status == 401
        login = await get_json(s, dev, "/settings/login?enabled=0", headers=basic("admin", "neu"))
        assert login["enabled"] is False
        await get_json(s, dev, "/status")
        assert (await get_json(s, dev, "/shelly"))["auth"] is False


async def test_sleeping_ht_answers_only_while_awake():
    async with running(ShellyGen1("SHHT-1")) as ht, aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.ClientConnectorError):
            await s.get(url(ht, "/shelly"))
        await ht.wake(0.4, reason="button")
        shelly = await get_json(s, ht, "/shelly")
        assert shelly["sleep_mode"] is True
        status = await get_json(s, ht, "/status")
        assert status["act_reasons"] == ["button"] and status["tmp"]["units"] == "C"
        assert status["hum"]["value"] == ht.humidity
        settings_ = await get_json(s, ht, "/settings")
        assert settings_["sleep_mode"] == {"period": 12, "unit": "h"}
        assert await until(lambda: not ht.awake, timeout=2)
        with pytest.raises(aiohttp.ClientConnectorError):
            await s.get(url(ht, "/shelly"))
        with pytest.raises(ValueError):
            ht.flip()


async def test_reboot_endpoint_resets_uptime():
    async with running(ShellyGen1("SHSW-PM")) as dev, aiohttp.ClientSession() as s:
        dev.boot_time -= 500
        assert (await get_json(s, dev, "/status"))["uptime"] >= 500
        assert await get_json(s, dev, "/reboot") == {"ok": True}
        await asyncio.sleep(0.15)
        with pytest.raises(aiohttp.ClientConnectionError):
            await s.get(url(dev, "/status"))             # rebooting: refused for a moment
        assert await until(lambda: dev._site is not None, timeout=2)
        assert (await get_json(s, dev, "/status"))["uptime"] < 5


# ------------------------------------------------------------------ CoIoT / CoAP
async def coap_get(dev: ShellyGen1, path: str, inbox) -> CoapMessage:
    inbox.transport.sendto(AIOSHELLY_GET % path.encode(), (dev.host, dev.coap_port))
    data, addr = await inbox.next()
    assert addr == (dev.host, dev.coap_port)
    return CoapMessage(addr, data)


async def test_coap_cit_d_and_cit_s_in_real_framing():
    async with udp_inbox() as inbox, running(ShellyGen1("SHSW-25")) as dev:
        assert dev.coap_port != 0
        d = await coap_get(dev, "d", inbox)
        assert d.code == CODE_CONTENT and d.coap_type is CoapType.REPLY
        assert d.options[OPT_DEVICE_ID].decode() == f"SHSW-25#{dev.mac}#2"
        assert [b["D"] for b in d.payload["blk"]][0] == "roller_0"
        ids = {s["I"] for s in d.payload["sen"]}
        s = await coap_get(dev, "s", inbox)
        assert {entry[1] for entry in s.payload["G"]} == ids
        assert struct.unpack("!H", s.options[OPT_SERIAL])[0] == dev.serial
        values = {sid: value for _, sid, value in s.payload["G"]}
        assert values[1102] == "stop" and values[9101] == "roller"
        # the same documents over HTTP (fw >= 1.10)
        async with aiohttp.ClientSession() as session:
            assert await get_json(session, dev, "/cit/d") == d.payload


async def test_coap_confirmable_request_gets_an_ack_with_token():
    async with udp_inbox() as inbox, running(ShellyGen1("SHPLG-S")) as dev:
        request = coap_encode(1, 0x1234, [(OPT_URI_PATH, b"cit"), (OPT_URI_PATH, b"s")], b"",
                              mtype=0, token=b"\xab\xcd")
        inbox.transport.sendto(request, (dev.host, dev.coap_port))
        data, _ = await inbox.next()
        assert data[0] == 0x62 and data[1] == CODE_CONTENT           # ACK, TKL 2
        assert data[2:4] == b"\x12\x34" and data[4:6] == b"\xab\xcd"
        inbox.transport.sendto(b"\x50\x01\x00", (dev.host, dev.coap_port))   # garbage: ignored
        await asyncio.sleep(0.05)
        assert inbox.queue.empty()


async def test_coiot_status_to_peer_on_change_and_period_after_reboot():
    async with udp_inbox() as peer:
        dev = ShellyGen1("SHSW-PM", coiot_peer=f"127.0.0.1:{peer.port}", update_period=0.2)
        async with running(dev):
            data, addr = await peer.next()
            msg = CoapMessage(addr, data)
            assert msg.code == CODE_STATUS and msg.coap_type is CoapType.PERIODIC
            assert addr == (dev.host, dev.coap_port)
            await peer.next()                            # and again after update_period
            peer.drain()
            dev.flip(0)                                  # a change is pushed at once
            msg = CoapMessage(*reversed(await peer.next()))
            values = {sid: value for _, sid, value in msg.payload["G"]}
            assert values[1101] == int(dev.outputs[0].ison)
            assert struct.unpack("!H", msg.options[OPT_SERIAL])[0] == dev.serial

            # a new peer is stored at once but used only after a reboot (like the firmware)
            async with udp_inbox() as other, aiohttp.ClientSession() as s:
                settings_ = await get_json(s, dev, f"/settings/advanced?coiot_enable=true&coiot_peer=127.0.0.1:{other.port}")
                assert settings_["coiot"]["peer"] == f"127.0.0.1:{other.port}"
                await asyncio.sleep(0.3)
                assert other.queue.empty()
                await dev.reboot(0.05)
                data, _ = await other.next()
                assert CoapMessage(("127.0.0.1", 1), data).code == CODE_STATUS


def test_coiot_refuses_non_loopback_peer(monkeypatch):
    monkeypatch.delenv("HOMEDASH_PRIVATE_NETNS", raising=False)
    dev = ShellyGen1("SHSW-PM", coiot_peer="192.0.2.1:5683")
    sent_before = list(dev.coap_sent)
    dev._coap = object()  # type: ignore[assignment]   # pretend the socket is open
    dev._send_status()
    assert dev.coap_sent == sent_before


@settings(max_examples=60, deadline=None)
@given(
    code=st.sampled_from([30, 69]),
    mid=st.integers(0, 0xFFFF),
    device_id=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=300),
    serial=st.integers(0, 0xFFFF),
    payload=st.dictionaries(st.text(max_size=5), st.integers(), max_size=5),
)
def test_our_coap_framing_parses_with_aioshelly(code, mid, device_id, serial, payload):
    body = json.dumps({"G": [[0, 1, 2]], **payload}).encode()
    raw = coap_encode(code, mid, [(3332, device_id.encode()), (3412, b"\x00\x10"),
                                  (3420, struct.pack("!H", serial))], body)
    msg = CoapMessage(("127.0.0.1", 5683), raw)
    assert msg.mid == mid and msg.code == code
    assert msg.options[3332] == device_id.encode()
    assert struct.unpack("!H", msg.options[3420])[0] == serial
    assert msg.payload == json.loads(body)


@given(path=st.lists(st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=20),
                     min_size=1, max_size=4),
       token=st.binary(max_size=8), mid=st.integers(0, 0xFFFF))
def test_request_decoding_roundtrip(path, token, mid):
    raw = coap_encode(1, mid, [(OPT_URI_PATH, p.encode()) for p in path], b"", mtype=0, token=token)
    request = coap_decode(raw)
    assert request is not None
    assert request.path == "/".join(path) and request.token == token and request.mid == mid


@given(st.binary(max_size=64))
def test_request_decoding_never_crashes(data):
    coap_decode(data)


async def test_ht_reports_once_to_its_peer_on_each_wake():
    async with udp_inbox() as peer:
        ht = ShellyGen1("SHHT-1", coiot_peer=f"127.0.0.1:{peer.port}", update_period=30)
        async with running(ht):
            await asyncio.sleep(0.1)
            assert peer.queue.empty()                    # asleep: silent
            await ht.wake(5, reason="sensor")
            data, _ = await peer.next()
            msg = CoapMessage(("127.0.0.1", 1), data)
            values = {sid: value for _, sid, value in msg.payload["G"]}
            assert values[9102] == ["sensor"] and values[3101] == ht.temperature_c
            await asyncio.sleep(0.1)
            assert peer.queue.empty()                    # once, not twice
            await ht.wake(5, reason="button")            # woken again while awake
            data, _ = await peer.next()
            assert {sid: v for _, sid, v in CoapMessage(("127.0.0.1", 1), data).payload["G"]}[9102] == ["button"]
