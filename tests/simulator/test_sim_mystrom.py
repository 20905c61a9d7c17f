"""Simulated myStrom devices behave like the firmware described in mystrom.md: endpoints,
token 404, CORS protection, Ws semantics, announcements, action URLs."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from devices.simulator.base import check_send_target
from devices.simulator.mystrom import (
    MyStromBulb,
    MyStromButton,
    MyStromLedStrip,
    MyStromPir,
    MyStromSwitch,
    decode_form,
    parse_action,
    parse_color,
)
from sim_helpers import FakeClock, hook_receiver, plain_session, running, udp_inbox, until


def url(device, path: str) -> str:
    return f"http://{device.address}{path}"


# ------------------------------------------------------------------ switches
async def test_switch_v2_report_relay_toggle_and_empty_bodies():
    async with running(MyStromSwitch("ch_v2", relay=False)) as sw, plain_session() as s:
        async with s.get(url(sw, "/report")) as r:
            report = await r.json()
        assert report["relay"] is False and report["power"] == 0
        assert set(report) == {"power", "Ws", "relay", "temperature", "boot_id",
                               "energy_since_boot", "time_since_boot"}
        async with s.get(url(sw, "/relay?state=1")) as r:
            assert r.status == 200 and await r.read() == b""     # empty, read /report after
        async with s.get(url(sw, "/report")) as r:
            report = await r.json()
        assert report["relay"] is True and report["power"] > 0
        async with s.get(url(sw, "/toggle")) as r:
            assert await r.json() == {"relay": False}
        async with s.get(url(sw, "/relay?state=2")) as r:
            assert r.status == 400


async def test_switch_variants_report_shapes_and_v1_redirect():
    devices = [MyStromSwitch(v) for v in ("ch_v1", "eu", "zero")]
    async with running(*devices) as (v1, eu, zero), plain_session() as s:
        async with s.get(url(v1, "/report")) as r:
            assert set(await r.json()) == {"power", "relay"}
        async with s.get(url(eu, "/report")) as r:
            assert set(await r.json()) == {"power", "Ws", "relay", "temperature"}   # no boot_id
        async with s.get(url(zero, "/report")) as r:
            assert set(await r.json()) == {"relay"}        # the Zero does not meter
        async with s.get(url(zero, "/api/v1/temperature")) as r:
            assert r.status == 404
        # fw 2.68: /api/v1/info is a redirect to the web UI, only /info.json has data
        async with s.get(url(v1, "/api/v1/info"), allow_redirects=False) as r:
            assert r.status == 302 and r.headers["Location"] == "/index.html"
        async with s.get(url(v1, "/api/v1/info")) as r:
            assert r.content_type == "text/html" and "<html" in await r.text()
        async with s.get(url(v1, "/info.json")) as r:
            info = await r.json()
        assert "gateway" in info and "gw" not in info and "type" not in info
        async with s.get(url(eu, "/info.json")) as r:
            legacy = await r.json()
        assert legacy["type"] == "WSE" and legacy["name"] == eu.name
        async with s.get(url(eu, "/api/v1/info")) as r:
            assert (await r.json())["type"] == 107


async def test_ws_is_average_power_since_previous_report_whoever_asked():
    clock = FakeClock()
    sw = MyStromSwitch("ch_v2", relay=True, clock=clock, load=("lamp", 100.0))
    first = sw.report()
    clock.advance(10)
    second = sw.report()
    # one segment since the first call: the average is exactly the power sampled then
    assert second["Ws"] == pytest.approx(first["power"], abs=0.01)
    assert second["energy_since_boot"] == pytest.approx(first["energy_since_boot"] + first["power"] * 10, abs=0.1)
    assert second["time_since_boot"] == 10
    # a second poller in between resets the window for the first one
    clock.advance(5)
    other = sw.report()
    clock.advance(5)
    third = sw.report()
    assert other["Ws"] == pytest.approx(second["power"], abs=0.01)
    assert third["Ws"] == pytest.approx(other["power"], abs=0.01)
    # off: no power, no energy
    sw.set_relay(False)
    clock.advance(30)
    off = sw.report()
    assert off["power"] == 0 and off["Ws"] == 0
    assert off["energy_since_boot"] == pytest.approx(third["energy_since_boot"], abs=0.01)


async def test_power_varies_with_noise_while_on():
    clock = FakeClock()
    sw = MyStromSwitch("ch_v2", relay=True, clock=clock, load=("fridge", 85.0))
    samples = []
    for _ in range(30):
        clock.advance(2)
        samples.append(sw.report()["power"])
    assert len(set(samples)) > 10
    assert all(60 < p < 110 for p in samples)


async def test_power_cycle_needs_relay_on_and_timer_modes():
    async with running(MyStromSwitch("ch_v2", relay=False)) as sw, plain_session() as s:
        async with s.get(url(sw, "/power_cycle?time=1")) as r:
            assert r.status == 400                       # relay off: nothing to cycle
        sw.set_relay(True)
        async with s.get(url(sw, "/power_cycle?time=0")) as r:
            assert r.status == 200 and await r.read() == b""
        assert await until(lambda: sw.relay)
        async with s.post(url(sw, "/timer"), data="mode=off&time=60",
                          headers={"Content-Type": "application/x-www-form-urlencoded"}) as r:
            assert r.status == 200
        assert sw.relay is False and sw._timer is not None
        async with s.post(url(sw, "/timer?mode=none")) as r:
            assert r.status == 200
        assert sw._timer is None and sw.relay is False
        async with s.post(url(sw, "/timer?mode=on&time=0")) as r:
            assert r.status == 200
        assert await until(lambda: sw.relay is False)    # on, then off after 0 s
        async with s.post(url(sw, "/timer?mode=dance&time=3")) as r:
            assert r.status == 400
        async with s.post(url(sw, "/timer?mode=on&time=3601")) as r:
            assert r.status == 400


async def test_temperature_and_settings_patch_validation():
    async with running(MyStromSwitch("ch_v2")) as sw, plain_session() as s:
        async with s.get(url(sw, "/api/v1/temperature")) as r:
            t = await r.json()
        assert t["compensated"] == pytest.approx(t["measured"] - t["compensation"] + t["offset"], abs=0.02)
        async with s.post(url(sw, "/api/v1/settings"), json={"temp_offset": 1.5, "name": "Küche & \"Bar\""}) as r:
            assert r.status == 200
            body = await r.json()
        assert body["temp_offset"] == 1.5 and body["name"] == 'Küche & "Bar"' and "token" not in body
        async with s.get(url(sw, "/temp")) as r:
            assert (await r.json())["offset"] == 1.5
        for bad in ({"color": 1}, {"rest": "yes"}, {"temp_offset": 31}, {"name": "x" * 40}, [1]):
            async with s.post(url(sw, "/api/v1/settings"), json=bad) as r:
                assert r.status == 400, bad
        async with s.post(url(sw, "/api/v1/settings"), data=b"not json") as r:
            assert r.status == 400
        # a rejected patch changes nothing
        async with s.post(url(sw, "/api/v1/settings"), json={"hap_disable": True, "bogus": 1}) as r:
            assert r.status == 400
        assert sw.settings["hap_disable"] is False
        # rest=false: the REST API answers 404, the settings API still works
        async with s.post(url(sw, "/api/v1/settings"), json={"rest": False}) as r:
            assert r.status == 200
        async with s.get(url(sw, "/report")) as r:
            assert r.status == 404
        async with s.post(url(sw, "/api/v1/settings"), json={"rest": True, "panel": False}) as r:
            assert r.status == 200
        async with s.get(url(sw, "/api/v1/settings")) as r:
            assert r.status == 404                       # panel off hides the settings API


# ------------------------------------------------------------------ token
async def test_token_missing_or_wrong_is_404_like_the_firmware():
    async with running(MyStromSwitch("ch_v2")) as sw, plain_session() as s:
        sw.set_secret("s3cret")
        for headers in ({}, {"Token": "wrong"}):
            async with s.get(url(sw, "/report"), headers=headers) as r:
                assert r.status == 404
        async with s.get(url(sw, "/report"), headers={"Token": "s3cret"}) as r:
            assert r.status == 200
        # changing it through the settings API
        async with s.post(url(sw, "/api/v1/settings"), json={"token": "neu"},
                          headers={"Token": "s3cret"}) as r:
            assert r.status == 200
        async with s.get(url(sw, "/report"), headers={"Token": "s3cret"}) as r:
            assert r.status == 404
        async with s.get(url(sw, "/report"), headers={"Token": "neu"}) as r:
            assert r.status == 200
        sw.set_secret(None)
        async with s.get(url(sw, "/report")) as r:
            assert r.status == 200


# ------------------------------------------------------------------ CORS protection
async def test_cors_protection_rules():
    async with running(MyStromSwitch("ch_v2")) as sw, plain_session() as s:
        own = f"http://{sw.host}"
        ae = {"Accept-Encoding": "gzip, deflate"}
        cases = [
            ("/report", {}, 200),                                       # no Accept-Encoding
            ("/report", ae, 404),                                       # AE without Referer/Origin
            ("/report", {**ae, "Accept-Encoding": "identity"}, 404),    # presence is what counts
            ("/report", {**ae, "Referer": f"{own}/index.html"}, 200),
            ("/report", {**ae, "Origin": own}, 200),
            ("/report", {**ae, "Referer": "http://evil.example/"}, 404),
            ("/report", {**ae, "Origin": "http://192.0.2.9"}, 404),
            ("/relay?state=1", {**ae, "Referer": f"{own}/"}, 404),      # state change: never with AE
            ("/toggle", {**ae, "Origin": own}, 404),
            ("/power_cycle?time=1", {**ae, "Referer": f"{own}/"}, 404),
            ("/relay?state=1", {}, 200),
        ]
        for path, headers, status in cases:
            async with s.get(url(sw, path), headers=headers) as r:
                assert r.status == status, (path, headers)
        async with s.post(url(sw, "/timer?mode=none"), headers={**ae, "Referer": f"{own}/"}) as r:
            assert r.status == 404
        # disabled through its endpoint: everything goes, browsers included
        async with s.post(url(sw, "/api/v1/protection/disable")) as r:
            assert r.status == 200
        async with s.get(url(sw, "/toggle"), headers=ae) as r:
            assert r.status == 200
        async with s.get(url(sw, "/api/v1/settings")) as r:
            assert (await r.json())["prot_off"] is True
        async with s.post(url(sw, "/api/v1/protection/enable")) as r:
            assert r.status == 200
        async with s.get(url(sw, "/report"), headers=ae) as r:
            assert r.status == 404
        # ... and through the prot_off setting
        async with s.post(url(sw, "/api/v1/settings"), json={"prot_off": True}) as r:
            assert r.status == 200
        async with s.get(url(sw, "/relay?state=0"), headers=ae) as r:
            assert r.status == 200


async def test_v1_firmware_has_no_protection_and_button_checks_referer_always():
    v1, button = MyStromSwitch("ch_v1"), MyStromButton(awake=True)
    async with running(v1, button), plain_session() as s:
        async with s.get(url(v1, "/toggle"), headers={"Accept-Encoding": "gzip"}) as r:
            assert r.status == 200
        async with s.get(url(button, "/api/v1/device"), headers={"Referer": "http://evil.example/"}) as r:
            assert r.status == 404
        async with s.get(url(button, "/api/v1/device"), headers={"Referer": f"http://{button.host}/"}) as r:
            assert r.status == 200
        async with s.get(url(button, "/api/v1/device")) as r:
            assert r.status == 200


# ------------------------------------------------------------------ bulb / strip
async def test_bulb_posts_form_with_literal_semicolons():
    async with running(MyStromBulb()) as bulb, plain_session() as s:
        dev = url(bulb, f"/api/v1/device/{bulb.mac}")
        # python-mystrom sends this as text/plain: the firmware reads it as a form anyway
        async with s.post(dev, data="action=on&color=120;100;50") as r:
            assert r.status == 200
            echo = await r.json()
        assert echo == {bulb.mac: {"on": True, "color": "120;100;50", "mode": "hsv",
                                   "ramp": bulb.ramp, "notifyurl": ""}}
        # %3B is not decoded by the firmware: not a colour it understands
        async with s.post(dev, data="color=10%3B100%3B50",
                          headers={"Content-Type": "application/x-www-form-urlencoded"}) as r:
            assert r.status == 400
        assert bulb.color == "120;100;50"
        async with s.post(dev, data={"color": "00FF0000", "ramp": "300"}) as r:
            state = (await r.json())[bulb.mac]
        assert state["mode"] == "rgb" and state["color"] == "00FF0000" and state["ramp"] == 300
        async with s.post(url(bulb, "/api/v1/device/self"), data="color=5;80&mode=mono") as r:
            assert (await r.json())[bulb.mac]["color"] == "5;80"
        async with s.post(dev, data="action=toggle") as r:
            assert (await r.json())[bulb.mac]["on"] is False
        async with s.get(url(bulb, "/api/v1/device")) as r:
            full = (await r.json())[bulb.mac]
        assert full["type"] == "rgblamp" and full["on"] is False and full["power"] == bulb.standby_w
        for bad in ("action=blink", "color=400;0;0", "mode=disco", "ramp=fast", "color=1;2;3&mode=rgb"):
            async with s.post(dev, data=bad) as r:
                assert r.status == 400, bad
        async with s.post(url(bulb, "/api/v1/device/001122334455"), data="action=on") as r:
            assert r.status == 404


async def test_bulb_notifyurl_is_called_on_change():
    async with hook_receiver() as hooks, running(MyStromBulb()) as bulb, plain_session() as s:
        dev = url(bulb, f"/api/v1/device/{bulb.mac}")
        async with s.post(dev, data=f"notifyurl=http://{hooks.base}/bulb&action=toggle") as r:
            assert (await r.json())[bulb.mac]["notifyurl"] == f"http://{hooks.base}/bulb"
        assert await until(lambda: hooks.calls)
        call = hooks.calls[-1]
        assert call["method"] == "POST" and call["path"] == "/bulb"
        assert json.loads(call["body"])[bulb.mac]["on"] is bulb.on


async def test_led_strip_is_a_strip_with_effects():
    async with running(MyStromLedStrip()) as strip, plain_session() as s:
        async with s.get(url(strip, f"/api/v1/device/{strip.mac}")) as r:
            state = (await r.json())[strip.mac]
        assert state["type"] == "strip" and state["mode"] == "mono"
        steps = [{"color": "0;100;50", "ramp": 1000, "time": 1}, {"color": "FF000000", "ramp": 500, "time": 1}]
        async with s.post(url(strip, "/api/v1/effect/set/2"), data=json.dumps(steps)) as r:
            assert r.status == 200
        async with s.post(url(strip, "/api/v1/effect/start/2")) as r:
            assert r.status == 200
        assert strip.on and strip.color == "0;100;50"
        async with s.post(url(strip, "/api/v1/effect/start/7")) as r:
            assert r.status == 400
        async with s.get(url(strip, "/info.json")) as r:
            assert (await r.json())["type"] == "WRS"


def test_colour_and_form_parsing():
    assert parse_color("120;100;50") == ("hsv", "120;100;50")
    assert parse_color("ff00ff00") == ("rgb", "FF00FF00")
    assert parse_color("18;100") == ("mono", "18;100")
    assert parse_color("120%3B100%3B50") is None
    assert parse_color("19;50") is None
    assert decode_form("a=1&b=x%3By%26z&c") == {"a": "1", "b": "x%3By&z", "c": ""}


# ------------------------------------------------------------------ PIR
async def test_pir_calls_its_action_urls_on_motion():
    async with hook_receiver() as hooks, running(MyStromPir()) as pir, plain_session() as s:
        pir.light = 10                                   # night
        for kind, action in (("generic", f"get://{hooks.base}/generic?room=hall"),
                             ("rise", f"post://{hooks.base}/rise?a=1&b=2"),
                             ("night", f"get://{hooks.base}/night")):
            async with s.post(url(pir, f"/api/v1/action/pir/{kind}"), data=action) as r:
                assert r.status == 200
        async with s.get(url(pir, "/api/v1/action")) as r:
            assert (await r.json())["pir"]["rise"] == f"post://{hooks.base}/rise?a=1&b=2"
        calls = await pir.motion(True)
        assert [c.status for c in calls] == [200, 200, 200, 200]
        by_path = {}
        for call in hooks.calls:
            by_path.setdefault(call["path"], []).append(call)
        assert by_path["/rise"][0]["method"] == "POST" and by_path["/rise"][0]["body"] == "a=1&b=2"
        assert by_path["/rise"][0]["content_type"] == "application/x-www-form-urlencoded"
        generic_actions = [c["query"]["action"] for c in by_path["/generic"]]
        assert generic_actions == ["8", "14"]            # rise, then "motion at night"
        assert by_path["/generic"][0]["query"] == {"room": "hall", "mac": pir.mac, "action": "8", "value": "10"}
        async with s.get(url(pir, "/api/v1/sensors")) as r:
            assert (await r.json())["motion"] is True
        hooks.calls.clear()
        await pir.motion(False)
        assert [c["query"]["action"] for c in hooks.calls] == ["9"]


async def test_pir_refuses_non_loopback_action_targets_without_sending(monkeypatch):
    monkeypatch.delenv("HOMEDASH_PRIVATE_NETNS", raising=False)
    pir = MyStromPir()
    pir.actions["generic"] = "get://192.0.2.1/hook"
    calls = await pir.motion(True)               # rise + light band, both refused
    assert len(calls) == 2
    assert all(c.status is None and "refusing" in c.error for c in calls)


async def test_pir_settings_and_sensor_endpoints():
    async with running(MyStromPir()) as pir, plain_session() as s:
        async with s.post(url(pir, "/api/v1/settings/pir"), data='{"backoff_time": 30}') as r:
            assert (await r.json())["backoff_time"] == 30
        async with s.post(url(pir, "/api/v1/settings/pir"), data='{"backoff_time": 0}') as r:
            assert r.status == 400
        async with s.post(url(pir, "/api/v1/settings/pir/thresholds"), json={"night": 5}) as r:
            assert (await r.json()) == {"night": 5, "day": 300}
        async with s.get(url(pir, "/api/v1/light")) as r:
            light = await r.json()
        assert light["success"] is True and light["intensity"] == pir.light and "adc0" in light["raw"]
        async with s.get(url(pir, "/api/v1/motion")) as r:
            assert await r.json() == {"success": True, "motion": False}


# ------------------------------------------------------------------ buttons
async def test_button_sleeps_wakes_and_calls_its_urls():
    async with hook_receiver() as hooks, running(MyStromButton(plus=True)) as button, plain_session() as s:
        with pytest.raises(aiohttp.ClientConnectorError):
            await s.get(url(button, "/api/v1/device"))   # asleep: not on the network
        await button.wake(0.4)
        form = (f"single=get://{hooks.base}/single&generic=get://{hooks.base}/gen"
                f"&touch=post://{hooks.base}/touch%3Fx%3D1")
        async with s.post(url(button, f"/api/v1/device/{button.mac}"), data=form,
                          headers={"Content-Type": "application/x-www-form-urlencoded"}) as r:
            actions = (await r.json())[button.mac]
        assert actions["touch"] == f"post://{hooks.base}/touch?x=1"
        async with s.get(url(button, "/api/v1/action/generic")) as r:
            assert await r.json() == {"url": f"get://{hooks.base}/gen"}
        async with s.get(url(button, "/api/v1/device")) as r:
            state = (await r.json())[button.mac]
        assert state["type"] == "wheel" and state["battery"] is True
        assert await until(lambda: not button.awake, timeout=3)
        with pytest.raises(aiohttp.ClientConnectorError):
            await s.get(url(button, "/api/v1/device"))
        # pressing works while asleep: the button wakes just to send
        calls = await button.press(kind="single")
        assert [c.status for c in calls] == [200, 200]
        assert hooks.calls[0]["path"] == "/single"
        assert hooks.calls[1]["query"] == {"mac": button.mac, "action": "1", "battery": str(button.battery)}
        hooks.calls.clear()
        await button.press(kind="wheel", wheel=38)
        assert hooks.calls[0]["path"] == "/touch" and "wheel=38" in hooks.calls[0]["body"]
        assert hooks.calls[1]["query"]["action"] == "5" and hooks.calls[1]["query"]["wheel"] == "38"
        with pytest.raises(ValueError):
            MyStromButton().press(kind="wheel")          # the small button has no wheel


async def test_button_sleep_endpoint_and_token_bool():
    async with running(MyStromButton(awake=True, token="t0k")) as button, plain_session() as s:
        async with s.get(url(button, "/api/v1/settings"), headers={"Token": "t0k"}) as r:
            assert (await r.json())["token"] is True
        async with s.post(url(button, "/api/v1/sleep"), headers={"Token": "t0k"}) as r:
            assert r.status == 200
        assert await until(lambda: not button.awake)


# ------------------------------------------------------------------ announcements
async def test_udp_announcement_is_the_8_byte_record_from_the_device_address():
    async with udp_inbox() as inbox:
        sw = MyStromSwitch("eu", host="127.0.0.9", announce_to=("127.0.0.1", inbox.port),
                           announce_interval=0.05)
        async with running(sw):
            data, source = await inbox.next()
            assert len(data) == 8
            assert data == bytes.fromhex(sw.mac) + bytes((107, sw.flags))
            assert data[:6].hex().upper() == sw.mac
            assert source[0] == "127.0.0.9"
            # DHCP moved it: the next announcements come from the new address
            await sw.move_to("127.0.0.10")
            inbox.drain()
            data, source = await inbox.next()
            assert source[0] == "127.0.0.10" and data[:6].hex().upper() == sw.mac
            await sw.power_off()
            await asyncio.sleep(0.1)
            inbox.drain()
            await asyncio.sleep(0.15)
            assert inbox.queue.empty()                   # unplugged devices are silent


async def test_v1_switch_and_sleeping_button_do_not_announce():
    async with udp_inbox() as inbox:
        target = ("127.0.0.1", inbox.port)
        v1 = MyStromSwitch("ch_v1", announce_to=target, announce_interval=0.05)
        button = MyStromButton(announce_to=target, announce_interval=0.05)
        async with running(v1, button):
            await asyncio.sleep(0.2)
            assert inbox.queue.empty()
            await button.wake(5)
            data, _ = await inbox.next()
            assert data == bytes.fromhex(button.mac) + bytes((104, button.flags))


def test_announcement_to_a_non_loopback_target_is_refused(monkeypatch):
    monkeypatch.delenv("HOMEDASH_PRIVATE_NETNS", raising=False)
    with pytest.raises(ValueError):
        check_send_target("192.0.2.1")
    with pytest.raises(ValueError):
        MyStromSwitch("ch_v2", announce_to=("192.0.2.1", 7979))
    with pytest.raises(ValueError):
        MyStromSwitch("ch_v2", announce_to=("255.255.255.255", 7979))


def test_action_string_syntax():
    calls = parse_action("get://h:81/a?b=1||post://h/x?{\"a\":1}||posts://h/y?plain||http://h/z")
    assert calls == [("GET", "http://h:81/a?b=1", "", ""),
                     ("POST", "http://h/x", '{"a":1}', "application/json"),
                     ("POST", "https://h/y", "plain", "text/plain"),
                     ("POST", "http://h/z", "", "")]


async def test_flip_and_press_change_state_from_outside():
    sw = MyStromSwitch("ch_v2", relay=False)
    sw.flip()
    assert sw.relay is True
    sw.press()
    assert sw.relay is False
    bulb = MyStromBulb()
    before = bulb.on
    bulb.flip()
    assert bulb.on is not before
    with pytest.raises(ValueError):
        bulb.press()
