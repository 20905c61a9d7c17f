"""Parsers against the real captures in ../shared/payloads and small inline fixtures."""

from __future__ import annotations

import json

import pytest
from tests.payloads import payload_files

from devices.drivers import (
    DeviceError,
    MyStromEnergy,
    ProtocolError,
    gen1_events,
    merge_status,
    parse_actions,
    parse_button_device,
    parse_debug_log_message,
    parse_gen1_status,
    parse_gen1_system,
    parse_light_device,
    parse_mystrom_info,
    parse_rpc_events,
    parse_rpc_status,
    parse_rpc_system,
    parse_sensors,
    parse_shelly_info,
    parse_switch_report,
    parse_temperature,
    parse_udp_log_datagram,
)
from devices.drivers.mystrom import parse_colour, parse_mystrom_type
from devices.drivers.shelly_rpc import (
    WS_HA2,
    RpcAuth,
    decode_frame,
    digest_authorization,
    parse_www_authenticate,
    parse_ws_challenge,
    rpc_error_from,
    sha256_hex,
    shelly_ha1,
)
from devices.drivers.types import as_bool, as_float, normalise_mac

# ----------------------------------------------------------------------------- myStrom


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (106, (106, "WS2")),
        ("107", (107, "WSE")),
        ("WRS", (105, "WRS")),
        ("wseu", (107, "WSEU")),
        ("BM1", (None, "BM1")),
        (None, (None, None)),
        (True, (None, None)),
        (999, (999, None)),
        ("", (None, None)),
    ],
)
def test_mystrom_type_variants(value, expected):
    assert parse_mystrom_type(value) == expected


def test_mystrom_info_type_shapes():
    assert parse_mystrom_info({"mac": "083AF271E800", "type": 107, "version": "3.83.1"}).kind == "switch"
    strip = parse_mystrom_info({"type": "WRS", "mac": "x"})
    assert (strip.type_code, strip.model, strip.kind, strip.mac) == (105, "WRS", "strip", None)
    button_max = parse_mystrom_info({"type": "BM1", "mac": "AABBCCDDEEFF"})
    assert (button_max.model, button_max.kind, button_max.type_code) == ("BM1", "button", None)
    unknown = parse_mystrom_info({"type": 250, "mac": "AABBCCDDEEFF"})
    assert unknown.kind == "generic" and unknown.type_code == 250
    v1 = parse_mystrom_info({"version": "2.68.10", "mac": "aa:bb:cc:dd:ee:ff"})
    assert (v1.type_code, v1.model, v1.mac) == (101, "WSW", "AABBCCDDEEFF")
    with pytest.raises(ProtocolError):
        parse_mystrom_info(["not", "a", "dict"])


@pytest.mark.parametrize("path", payload_files("mystrom", "*info*.json"), ids=lambda p: p.name)
def test_mystrom_info_captures(path):
    info = parse_mystrom_info(json.loads(path.read_text()))
    assert info.vendor == "mystrom" and info.generation == 0
    assert info.firmware
    assert info.type_code is None or 100 < info.type_code < 130


def test_mystrom_info_real_examples(payload):
    eu = parse_mystrom_info(payload("mystrom", "switch_eu_fw3.83.1_api_v1_info.json"))
    assert (eu.mac, eu.type_code, eu.model, eu.firmware) == ("083AF271E800", 107, "WSE", "3.83.1")
    legacy = parse_mystrom_info(payload("mystrom", "ledstrip_fw4.0.4_info_json_legacy.json"), legacy=True)
    assert (legacy.type_code, legacy.name) == (105, "WiFi RGB Strip")
    v1 = parse_mystrom_info(payload("mystrom", "switch_ch_v1_fw2.68.10_info_json.json"))
    assert v1.type_code == 101 and v1.kind == "switch"
    swisscom = parse_mystrom_info(payload("mystrom", "swisscom_switch_type114_fw1.0.8_api_v1_info.json"))
    assert swisscom.type_code == 114 and swisscom.kind == "switch"


@pytest.mark.parametrize("path", payload_files("mystrom", "*report*.json"), ids=lambda p: p.name)
def test_switch_report_captures(path):
    state = parse_switch_report(json.loads(path.read_text()), MyStromEnergy())
    assert state.key == "relay" and state.kind == "switch"
    assert state.on in (True, False)


def test_switch_report_fields(payload):
    fw4 = parse_switch_report(payload("mystrom", "switch_ch_v2_fw4.0.14_report.json"), MyStromEnergy())
    assert fw4.power_w == 0.81 and fw4.temperature_c == 2.93 and fw4.on is True
    assert fw4.energy_wh == pytest.approx(31719494.64 / 3600)
    v1 = parse_switch_report(payload("mystrom", "switch_ch_v1_fw2.68.10_report.json"), MyStromEnergy())
    assert (v1.power_w, v1.temperature_c, v1.energy_wh) == (0.0, None, None)
    zero = parse_switch_report({"relay": False})  # Switch Zero: no metering at all
    assert (zero.on, zero.power_w, zero.temperature_c) == (False, None, None)


def test_mystrom_energy_boot_id_rule():
    energy = MyStromEnergy()
    assert energy.update("A", 3600) == pytest.approx(1.0)
    assert energy.update("A", 7200) == pytest.approx(2.0)
    # reboot: new id, counter restarts; the total keeps growing
    assert energy.update("B", 360) == pytest.approx(2.1)
    assert energy.update("B", 3600) == pytest.approx(3.0)
    # firmware without boot_id: no value, state untouched
    assert energy.update(None, 10) is None
    assert energy.total_wh == pytest.approx(3.0)
    # a counter that goes backwards under the same id is a new segment, not negative energy
    assert energy.update("B", 0) == pytest.approx(3.0)
    restored = MyStromEnergy(**energy.state())
    assert restored.update("B", 3600) == pytest.approx(4.0)
    assert energy.update("C", float("nan")) is None
    assert energy.update("C", -5) is None


def test_temperature(payload):
    t = parse_temperature(payload("mystrom", "switch_api_v1_temperature_doc.json"))
    assert (t.measured, t.compensation, t.compensated, t.offset) == (45.18, 18.56, 26.62, 0.0)
    old = parse_temperature(payload("mystrom", "pir_temp_oldpath_doc.json"))
    assert old.offset is None and old.compensated == pytest.approx(25.225, abs=1e-3)


@pytest.mark.parametrize(
    ("color", "mode", "expected"),
    [
        ("120;100;50", "hsv", ((120.0, 100.0, 50.0), "hsv", 50.0)),
        ("191;90;14", None, ((191.0, 90.0, 14.0), "hsv", 14.0)),
        ("11;97", "mono", ((11.0, 97.0), "mono", 97.0)),
        ("FFFF0000", "rgb", ((255.0, 0.0, 0.0, 255.0), "rgbw", 100.0)),
        ("00000000", "rgb", ((0.0, 0.0, 0.0, 0.0), "rgbw", 0.0)),
        ("a;b;c", "hsv", (None, "hsv", None)),
        (12, "hsv", ((None, "hsv", None))),
        (None, None, (None, None, None)),
    ],
)
def test_colour(color, mode, expected):
    assert parse_colour(color, mode) == expected


@pytest.mark.parametrize(
    "name",
    [
        "bulb_fw2.19_api_v1_device_rest_api_wrb_txt.json",
        "bulb_fw2.25_api_v1_device_python-mystrom_readme.json",
        "bulb_fw2.58.0_api_v1_device_doc.json",
        "ledstrip_fw3.82.56_api_v1_device_mono.json",
        "ledstrip_fw4.0.4_api_v1_device_mono.json",
        "bulb_post_action_on_response_doc.json",
        "bulb_post_set_color_rgb_response_doc.json",
    ],
)
def test_light_device_captures(payload, name):
    state = parse_light_device(payload("mystrom", name))
    assert state.key == "light" and state.kind == "light"
    assert state.on in (True, False)
    assert state.colour is not None and state.colour_mode in ("hsv", "mono", "rgbw")


def test_light_device_specifics(payload):
    bulb = parse_light_device(payload("mystrom", "bulb_fw2.58.0_api_v1_device_doc.json"), "6001942C4FDD")
    assert (bulb.on, bulb.power_w, bulb.colour, bulb.brightness_pct) == (False, 0.45, (46.0, 18.0, 100.0), 100.0)
    oldest = parse_light_device(payload("mystrom", "bulb_fw2.19_api_v1_device_rest_api_wrb_txt.json"))
    assert oldest.colour_mode == "hsv"  # no "mode" field on fw 2.19; three fields are HSV
    with pytest.raises(ProtocolError):
        parse_light_device({"6001942C4FDD": "nope"})


def test_buttons(payload):
    state, actions = parse_button_device(payload("mystrom", "button_plus_gen1_fw2.73.0_api_v1_device_doc.json"))
    assert state.battery_v == 4.523 and state.external_power is False
    assert actions["double"] == "get://192.168.1.153:9090/foo"
    assert set(actions) == {"single", "double", "long", "touch", "generic"}
    flat = parse_actions(payload("mystrom", "button_plus_gen2_api_v1_actions_doc.json"))
    assert flat["btn1/single"].startswith("post://") and flat["temp/over"] == ""
    assert parse_actions(payload("mystrom", "pir_api_v1_action_doc.json"))["pir/rise"] == ""
    assert parse_actions(payload("mystrom", "button_api_v1_action_single_doc.json")) == {
        "": "post://192.168.1.153:9090?key=value&key2=value2"
    }


def test_sensors(payload):
    pir = {c.key: c for c in parse_sensors(payload("mystrom", "pir_api_v1_sensors_doc.json"))}
    assert pir["motion"].motion is False and pir["light"].illuminance_lux == 84.0
    assert pir["temperature"].temperature_c == 23.25
    bp2 = {c.key: c for c in parse_sensors(payload("mystrom", "button_plus_gen2_api_v1_sensors_doc.json"))}
    assert bp2["temperature"].humidity_pct == 54.72 and bp2["battery"].battery_v == 4.04
    assert bp2["battery"].external_power is True
    assert parse_sensors({}) == []


# ----------------------------------------------------------------------------- Shelly /shelly


@pytest.mark.parametrize(
    "path",
    payload_files("shelly", "*GET_shelly*.json") + payload_files("shelly", "*GetDeviceInfo*.json"),
    ids=lambda p: p.name,
)
def test_shelly_info_captures(path):
    info = parse_shelly_info(json.loads(path.read_text()))
    expected_gen = int(path.name[3])
    assert info.generation == expected_gen
    assert info.vendor == "shelly" and info.mac and len(info.mac) == 12
    assert info.model and info.firmware
    if expected_gen >= 2:
        assert info.device_id and info.auth_domain
        assert info.is_rpc


def test_shelly_info_rules(payload):
    wall = parse_shelly_info(payload("shelly", "gen2_SAWD-0A1XX10EU1_WallDisplay__GET_shelly.json"))
    assert wall.auth_domain == "ShellyWallDisplay-AABBCCDDEEFF"  # realm falls back to the id
    cover = parse_shelly_info(payload("shelly", "gen2_SNSW-102P16EU_Plus2PM-cover-auth__GET_shelly.json"))
    assert (cover.auth_enabled, cover.profile, cover.kind) == (True, "cover", "cover")
    ht = parse_shelly_info(payload("shelly", "gen1_SHHT-1_HT-sleeping__GET_shelly.json"))
    assert ht.sleeping and ht.generation == 1
    dimmer = parse_shelly_info(payload("shelly", "gen1_SHDM-2_Dimmer2-auth__GET_shelly.json"))
    assert dimmer.auth_enabled and dimmer.kind == "light"
    # any gen >= 2 is RPC, including generations that do not exist yet
    assert parse_shelly_info({"gen": 7, "id": "shellyx-aabbccddeeff", "model": "S7X"}).mac == "AABBCCDDEEFF"
    for bad in ({"gen": "x"}, {"gen": 1}, {"foo": 1}, [1], None):
        with pytest.raises(ProtocolError):
            parse_shelly_info(bad)


# ----------------------------------------------------------------------------- Shelly Gen1


@pytest.mark.parametrize("path", payload_files("shelly", "gen1_*GET_status.json"), ids=lambda p: p.name)
def test_gen1_status_captures(path):
    status = json.loads(path.read_text())
    channels = parse_gen1_status(status)
    assert channels, "every real device has at least one channel"
    assert len({c.key for c in channels}) == len(channels)
    parse_gen1_system(status)


def test_gen1_specifics(payload):
    plug = {c.key: c for c in parse_gen1_status(payload("shelly", "gen1_SHPLG-S_PlugS__GET_status.json"))}
    assert plug["relay:0"].energy_wh == pytest.approx(2632 / 60)  # watt-minutes -> Wh
    assert plug["relay:0"].temperature_c == 24.14
    em3 = {c.key: c for c in parse_gen1_status(payload("shelly", "gen1_SHEM-3_3EM__GET_status.json"))}
    assert em3["em:0"].phases is not None and len(em3["em:0"].phases) == 3
    assert em3["em:0"].energy_wh == pytest.approx(31972.1)  # emeters are already Wh
    assert em3["em:0"].power_w == 6.6
    roller = {c.key: c for c in parse_gen1_status(payload("shelly", "gen1_SHSW-25_Shelly25-roller__GET_status.json"))}
    assert "relay:0" not in roller and roller["roller:0"].moving == "stopped"
    assert roller["roller:0"].position_pct == 0.0 and len([k for k in roller if k.startswith("input")]) == 2
    ht = {c.key: c for c in parse_gen1_status(payload("shelly", "gen1_SHHT-1_HT-sleeping__GET_status.json"))}
    assert (ht["sensor:0"].temperature_c, ht["sensor:0"].humidity_pct, ht["sensor:0"].battery_pct) == (21.75, 62.5, 100.0)
    rgbw = parse_gen1_status(payload("shelly", "gen1_SHRGBW2_RGBW2-white__GET_status.json"))
    assert [c.key for c in rgbw if c.kind == "light"] == ["light:0", "light:1", "light:2", "light:3"]
    gas = {c.key: c for c in parse_gen1_status(payload("shelly", "gen1_SHGS-1_Gas__GET_status.json"))}
    assert gas["sensor:0"].alarm is False


def test_gen1_colour_mode():
    status = {
        "lights": [{"ison": True, "mode": "color", "red": 255, "green": 10, "blue": 0, "white": 5, "gain": 80}],
        "meters": [{"power": 4.5, "total": 120, "is_valid": True}],
    }
    (light,) = parse_gen1_status(status)
    assert light.colour == (255.0, 10.0, 0.0, 5.0) and light.colour_mode == "rgbw"
    assert light.brightness_pct == 80.0 and light.power_w == 4.5 and light.energy_wh == 2.0


def test_gen1_events():
    before = {"inputs": [{"input": 0, "event": "", "event_cnt": 3}, {"input": 0, "event": "S", "event_cnt": 7}]}
    after = {"inputs": [{"input": 1, "event": "L", "event_cnt": 4}, {"input": 0, "event": "SS", "event_cnt": 9}]}
    events = gen1_events(before, after, device="d", ts=1.0)
    kinds = [(e.channel, e.kind, e.value) for e in events]
    assert ("input:0", "long", 1) in kinds and ("input:0", "input_on", None) in kinds
    assert ("input:1", "double", 2) in kinds
    assert gen1_events(None, after) == []
    # a counter that went down (reboot) is not a press
    assert [e.kind for e in gen1_events(after, before)] == ["input_off"]
    assert gen1_events({"inputs": "x"}, {"inputs": [None, 5]}) == []


# ----------------------------------------------------------------------------- Shelly RPC


@pytest.mark.parametrize("path", payload_files("shelly", "gen*Shelly.GetStatus.json"), ids=lambda p: p.name)
def test_rpc_status_captures(path):
    status = json.loads(path.read_text())
    channels = parse_rpc_status(status)
    assert channels
    system = parse_rpc_system(status)
    assert system.uptime_s is not None
    assert system.sleeping == ("sleeping" in path.name)


def test_rpc_specifics(payload):
    pro3em = {c.key: c for c in parse_rpc_status(payload("shelly", "gen2_SPEM-003CEBEU_Pro3EM__Shelly.GetStatus.json"))}
    em = pro3em["em:0"]
    assert em.power_w == 558.965 and em.energy_wh == 2589773.39 and em.returned_energy_wh == 1026.61
    assert [p.phase for p in em.phases] == ["a", "b", "c"] and em.phases[1].energy_wh == 185686.89
    assert "emdata:0" not in pro3em
    pro4 = {c.key: c for c in parse_rpc_status(payload("shelly", "gen2_SPSW-104PE16EU_Pro4PM_fw1.7.5__Shelly.GetStatus.json"))}
    assert pro4["switch:0"].energy_wh == 282212.208 and pro4["switch:0"].on is True
    moving = payload("shelly", "gen3_S3SW-002P16EU_2PMG3-cover__Cover.GetStatus_moving.json")
    cover = parse_rpc_status({"cover:0": moving})
    assert cover[0].moving == "closing" and cover[0].position_pct == 51
    ht = {c.key: c for c in parse_rpc_status(payload("shelly", "gen2_SNSN-0013A_PlusHT-sleeping__Shelly.GetStatus.json"))}
    assert ht["devicepower:0"].battery_pct == 81 and ht["humidity:0"].humidity_pct == 19.1
    wall = {c.key: c for c in parse_rpc_status(payload("shelly", "gen2_SAWD-0A1XX10EU1_WallDisplay__Shelly.GetStatus.json"))}
    assert wall["illuminance:0"].illuminance_lux == 30
    i4 = {c.key: c for c in parse_rpc_status(payload("shelly", "gen2_SNSN-0024X_PlusI4__Shelly.GetStatus.json"))}
    assert i4["input:0"].on is None and i4["input:1"].on is False  # button-type inputs have state null


def test_rpc_component_kinds_inline():
    status = {
        "rgbw:0": {"output": True, "brightness": 40, "rgb": [255, 0, 10], "white": 20, "apower": 3.1},
        "rgb:0": {"output": False, "brightness": 100, "rgb": [1, 2]},
        "cct:0": {"output": True, "brightness": 70, "ct": 3000},
        "em1:0": {"act_power": 10.5, "voltage": 230.1, "current": 0.05, "pf": 0.9, "freq": 50},
        "em1data:0": {"total_act_energy": 1234.5, "total_act_ret_energy": 1.5},
        "pm1:0": {"apower": 7, "aenergy": {"total": 99.5}, "ret_aenergy": {"total": 0.5}},
        "smoke:0": {"alarm": True, "mute": False},
        "flood:0": {"alarm": False},
        "sys": {"uptime": 5, "wakeup_period": 0},
        "script:1": {"running": True},
    }
    ch = {c.key: c for c in parse_rpc_status(status)}
    assert ch["rgbw:0"].colour == (255.0, 0.0, 10.0, 20.0) and ch["rgbw:0"].brightness_pct == 40
    assert ch["rgb:0"].colour is None
    assert ch["cct:0"].color_temp_k == 3000 and ch["cct:0"].colour_mode == "cct"
    assert ch["em1:0"].energy_wh == 1234.5 and ch["em1:0"].returned_energy_wh == 1.5
    assert ch["pm1:0"].kind == "meter" and ch["pm1:0"].energy_wh == 99.5
    assert ch["smoke:0"].alarm is True and ch["flood:0"].alarm is False
    assert "sys" not in ch and "script:1" not in ch and "em1data:0" not in ch
    # only the changed components (an emdata change still refreshes its em)
    assert [c.key for c in parse_rpc_status(status, ["em1data:0"])] == ["em1:0"]


def test_merge_status_with_notifications(payload):
    status = payload("shelly", "gen2_SNSW-001P16EU_Plus1PM__Shelly.GetStatus.json")
    frame = payload("shelly", "mqtt_notify_status__shellyplugsg3__switch_0.json")
    patch = {k: v for k, v in frame["params"].items() if k != "ts"}
    merge_status(status, patch)
    assert status["switch:0"]["aenergy"]["total"] == 18572.574
    assert status["switch:0"]["output"] is False  # untouched keys survive
    merge_status(status, {"switch:0": {"timer_started_at": 1.0, "timer_duration": 60}})
    merge_status(status, {"switch:0": {"timer_started_at": None, "timer_duration": None}})
    assert "timer_duration" in status["switch:0"] and status["switch:0"]["timer_duration"] is None
    merge_status(status, {"new:1": {"a": 1}, 5: "ignored"})
    assert status["new:1"] == {"a": 1}


@pytest.mark.parametrize("path", payload_files("shelly", "mqtt_notify_event_*.json"), ids=lambda p: p.name)
def test_rpc_event_captures(path):
    frame = json.loads(path.read_text())
    events = parse_rpc_events(frame["params"], device="dev", now=5.0)
    assert len(events) == 1
    event = events[0]
    assert event.ts == 5.0 and event.device == "dev"
    assert event.channel == frame["params"]["events"][0]["component"]
    expected = {"single_push": "single", "btn_down": "btn_down", "ota_progress": "ota_progress"}
    name = frame["params"]["events"][0]["event"]
    if name in expected:
        assert event.kind == expected[name]
    if name == "ota_progress":
        assert event.value == 8


def test_ws_frames_and_challenge(payload):
    frame = payload("shelly", "ws_frame__error_401_auth_challenge__Cover.Close.json")
    challenge = parse_ws_challenge(frame["error"]["message"])
    assert challenge.realm == "shellyplus2pm-485519992590" and challenge.nonce == 1725185413
    assert isinstance(rpc_error_from(frame["error"]), DeviceError)
    ok = payload("shelly", "ws_frame__response_result_null__Cover.Close.json")
    assert decode_frame(json.dumps(ok))["result"] is None
    for bad in ("nope", "[1]", b"\xff\xfe", 5):
        with pytest.raises(ProtocolError):
            decode_frame(bad)
    assert parse_ws_challenge("not json") is None
    assert parse_ws_challenge('{"realm": "r", "nonce": true}') is None
    assert parse_ws_challenge({"realm": "r", "nonce": "abc=", "nc": "1", "stale": True}).stale


def test_ws_auth_object_matches_the_formula():
    auth = RpcAuth("secret")
    auth.accept(parse_ws_challenge('{"realm":"shellyplus1-aabbcc","nonce":"QUJD==","nc":1,"algorithm":"SHA-256"}'))
    first = auth.auth_object(cnonce="c1")
    second = auth.auth_object(cnonce="c1")
    ha1 = sha256_hex("admin:shellyplus1-aabbcc:secret")
    assert ha1 == shelly_ha1("shellyplus1-aabbcc", "secret")
    assert first["response"] == sha256_hex(f"{ha1}:QUJD==:1:c1:auth:{WS_HA2}")
    assert (first["nc"], second["nc"]) == (1, 2)
    assert WS_HA2 == "6370ec69915103833b5222b368555393393f098bfbfbb59f47e0590af135f062"
    auth.accept(parse_ws_challenge({"realm": "r", "nonce": 5}))
    assert auth.auth_object()["nc"] == 1  # nc restarts for every nonce


def test_www_authenticate_and_digest_header():
    header = 'Digest qop="auth", realm="shelly1minig3-543204547478", nonce="AbC/dE+f==", algorithm=SHA-256, stale=true'
    ch = parse_www_authenticate(header)
    assert ch.nonce == "AbC/dE+f==" and ch.stale and ch.qop == "auth"  # base64 padding survives
    value = digest_authorization(ch, method="GET", uri="/debug/log", password="pw", nc=1, cnonce="x")
    ha1 = sha256_hex("admin:shelly1minig3-543204547478:pw")
    ha2 = sha256_hex("GET:/debug/log")
    assert f'response="{sha256_hex(f"{ha1}:AbC/dE+f==:00000001:x:auth:{ha2}")}"' in value
    assert parse_www_authenticate("Basic realm=x") is None
    assert parse_www_authenticate('Digest realm="x"') is None
    wall = parse_www_authenticate('Digest qop="auth", realm="ShellyWallDisplay-A", nonce="1", algorithm=SHA-256, opaque=""')
    assert wall.opaque == ""
    with pytest.raises(ProtocolError):
        digest_authorization(parse_www_authenticate('Digest realm="r", nonce="n", algorithm=FOO'), method="GET", uri="/", password="p")


# ----------------------------------------------------------------------------- debug logs


def test_debug_log_capture(payload):
    messages = payload("shelly", "debuglog_ws__shelly1minig3__ws_debug_log_stream.json")
    lines = [parse_debug_log_message(json.dumps(m), device="d") for m in messages]
    assert lines[0].fd == 1 and lines[0].level == 2 and lines[0].text.startswith("shelly_debug.cpp")
    assert any(line.fd == 102 for line in lines)
    assert all(not line.truncated for line in lines)


def test_debug_log_caps_and_oddities():
    long = parse_debug_log_message(json.dumps({"ts": 1, "level": 2, "data": "x" * 10_000, "fd": 1}), line_cap=100)
    assert long.truncated and len(long.text) == 100 and long.text.endswith("[truncated]")
    assert parse_debug_log_message("plain text").text == "plain text"
    assert parse_debug_log_message(b"\xff\x00bytes").text.endswith("bytes")
    assert parse_debug_log_message('{"data": null}').text == ""
    assert parse_debug_log_message(12).text == "12"


def test_udp_datagram():
    data = (
        b"shelly1minig3-54320464074c 22010 84452.340 1 2|shelly_notification:211 Event from sys\x00"
        b"shellypro4pm-f008d1d8b8b8 4 1630591790.750 2|shelly_notifications:79 NotifyEvent\x00\x00"
        b"no header at all\x00" + b"id 1 2.0 3|" + b"y" * 5000
    )
    lines = parse_udp_log_datagram(data, device="fallback", line_cap=200)
    assert [line.fd for line in lines] == [1, None, None, None]
    assert lines[0].ts == 84452.34 and lines[0].device == "shelly1minig3-54320464074c"
    assert lines[1].level == 2 and lines[2].device == "fallback" and lines[2].level is None
    assert lines[3].truncated and len(lines[3].text) == 200
    assert parse_udp_log_datagram(b"") == []


# ----------------------------------------------------------------------------- coercion


def test_coercion_helpers():
    assert as_float("1.5") == 1.5 and as_float(True) is None and as_float(float("inf")) is None
    assert as_float(10**400) is None and as_float("x" * 100) is None
    assert as_bool("true") is True and as_bool(0) is False and as_bool(2) is None
    assert normalise_mac("aa:bb:cc:dd:ee:ff") == "AABBCCDDEEFF" and normalise_mac("[MAC]") is None
