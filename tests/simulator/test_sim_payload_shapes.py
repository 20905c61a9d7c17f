"""Our JSON has the keys and JSON types of the real captures in ../shared/payloads, for
the same model and endpoint (values are our own). Skips cleanly when ../shared is absent."""

from __future__ import annotations

import pytest

from tests.payloads import load_payload, payload_files
from devices.simulator.mystrom import MyStromBulb, MyStromButton, MyStromLedStrip, MyStromPir, MyStromSwitch
from devices.simulator.shelly_gen1 import ShellyGen1
from sim_helpers import only_value, plain_session, running, shape_problems

# capture file -> (device factory, method, path, body, keyed-by-MAC)
MYSTROM: dict[str, tuple] = {
    "switch_ch_v2_fw4.0.14_report.json": (lambda: MyStromSwitch("ch_v2"), "GET", "/report", None, False),
    "switch_ch_v2_report_issue41.json": (lambda: MyStromSwitch("ch_v2"), "GET", "/report", None, False),
    "switch_report_official_doc_example.json": (lambda: MyStromSwitch("ch_v2"), "GET", "/report", None, False),
    "switch_ch_v1_fw2.68.10_report.json": (lambda: MyStromSwitch("ch_v1"), "GET", "/report", None, False),
    "switch_ch_v1_2016_report_python-mystrom_readme.json": (lambda: MyStromSwitch("ch_v1"), "GET", "/report", None, False),
    "switch_ch_v1_fw2.68.10_info_json.json": (lambda: MyStromSwitch("ch_v1"), "GET", "/info.json", None, False),
    "switch_eu_fw3.83.1_report.json": (lambda: MyStromSwitch("eu"), "GET", "/report", None, False),
    "switch_eu_fw3.83.1_api_v1_info.json": (lambda: MyStromSwitch("eu"), "GET", "/api/v1/info", None, False),
    "switch_eu_fw3.83.1_api_v1_scan.json": (lambda: MyStromSwitch("eu"), "GET", "/api/v1/scan", None, False),
    "switch_toggle_response_doc.json": (lambda: MyStromSwitch("ch_v2"), "GET", "/toggle", None, False),
    "switch_api_v1_temperature_doc.json": (lambda: MyStromSwitch("ch_v2"), "GET", "/api/v1/temperature", None, False),
    "switch_temp_oldpath_doc.json": (lambda: MyStromSwitch("ch_v2"), "GET", "/temp", None, False),
    "switch_ch_v2_api_v1_settings_doc.json": (lambda: MyStromSwitch("ch_v2"), "GET", "/api/v1/settings", None, False),
    "bulb_fw2.59.32_api_v1_info_doc.json": (MyStromBulb, "GET", "/api/v1/info", None, False),
    "bulb_fw2.58.0_api_v1_device_doc.json": (MyStromBulb, "GET", "/api/v1/device", None, True),
    "bulb_fw2.25_api_v1_device_python-mystrom_readme.json": (MyStromBulb, "GET", "/api/v1/device/self", None, True),
    "bulb_fw2.19_api_v1_device_rest_api_wrb_txt.json": (MyStromBulb, "GET", "/api/v1/device", None, True),
    "bulb_post_action_on_response_doc.json": (MyStromBulb, "POST", "/api/v1/device/self", "action=on", True),
    "bulb_post_action_off_response_doc.json": (MyStromBulb, "POST", "/api/v1/device/self", "action=off", True),
    "bulb_post_set_color_rgb_response_doc.json": (MyStromBulb, "POST", "/api/v1/device/self",
                                                  "color=00FF0000&action=on&ramp=100", True),
    "bulb_post_color_hsv_response_python-mystrom_readme.json": (MyStromBulb, "POST", "/api/v1/device/self",
                                                                "color=0;0;100&action=on", True),
    "bulb_api_v1_settings_doc.json": (MyStromBulb, "GET", "/api/v1/settings", None, False),
    "ledstrip_fw4.0.4_api_v1_device_mono.json": (MyStromLedStrip, "GET", "/api/v1/device/self", None, True),
    "ledstrip_fw3.82.56_api_v1_device_mono.json": (MyStromLedStrip, "GET", "/api/v1/device", None, True),
    "ledstrip_fw4.0.4_api_v1_info.json": (MyStromLedStrip, "GET", "/api/v1/info", None, False),
    "ledstrip_fw4.0.4_info_json_legacy.json": (MyStromLedStrip, "GET", "/info.json", None, False),
    "button_plus_gen1_fw2.73.0_api_v1_device_doc.json": (lambda: MyStromButton(plus=True, awake=True), "GET",
                                                         "/api/v1/device", None, True),
    "button_plus_gen1_fw2.74.38_api_v1_device.json": (lambda: MyStromButton(plus=True, awake=True), "GET",
                                                      "/api/v1/device/self", None, True),
    "button_plus_gen1_fw2.74.38_api_v1_info.json": (lambda: MyStromButton(plus=True, awake=True), "GET",
                                                    "/api/v1/info", None, False),
    "button_fw2.37_api_v1_device_rest_api_wbp_txt.json": (lambda: MyStromButton(awake=True), "GET",
                                                          "/api/v1/device/self", None, True),
    "button_api_v1_action_single_doc.json": (lambda: MyStromButton(awake=True), "GET",
                                             "/api/v1/action/single", None, False),
    "pir_api_v1_action_doc.json": (MyStromPir, "GET", "/api/v1/action", None, False),
    "pir_api_v1_light_doc.json": (MyStromPir, "GET", "/api/v1/light", None, False),
    "pir_api_v1_motion_doc.json": (MyStromPir, "GET", "/api/v1/motion", None, False),
    "pir_api_v1_sensors_doc.json": (MyStromPir, "GET", "/api/v1/sensors", None, False),
    "pir_api_v1_settings_doc.json": (MyStromPir, "GET", "/api/v1/settings", None, False),
    "pir_api_v1_settings_pir_doc.json": (MyStromPir, "GET", "/api/v1/settings/pir", None, False),
    "pir_api_v1_settings_pir_thresholds_doc.json": (MyStromPir, "GET", "/api/v1/settings/pir/thresholds", None, False),
    "pir_api_v1_temperature_doc.json": (MyStromPir, "GET", "/api/v1/temperature", None, False),
    "pir_temp_oldpath_doc.json": (MyStromPir, "GET", "/temp", None, False),
}
# Captures of things we do not simulate (Button Plus 2nd gen, Swisscom switch, internet
# monitor), HA mock fixtures (not real responses) and a request body.
MYSTROM_NOT_SIMULATED = {
    "button_plus_gen2_api_v1_action_temp_over_doc.json", "button_plus_gen2_api_v1_actions_btn2_doc.json",
    "button_plus_gen2_api_v1_actions_doc.json", "button_plus_gen2_api_v1_meas_doc_excerpt.json",
    "button_plus_gen2_api_v1_sensors_doc.json", "button_plus_gen2_api_v1_settings_doc.json",
    "ha_tests_default_device_response.json", "ha_tests_default_switch_state.json",
    "ledstrip_effect_set_request_body_doc.json", "swisscom_switch_type114_fw1.0.8_api_v1_info.json",
    "switch_api_v1_monitor_doc.json",
}

# Gen1 capture -> (model, mode, path)
GEN1: dict[str, tuple[str, str | None, str]] = {
    "gen1_SHDM-2_Dimmer2-auth__GET_shelly.json": ("SHDM-2", None, "/shelly"),
    "gen1_SHDM-2_Dimmer2-auth__GET_status.json": ("SHDM-2", None, "/status"),
    "gen1_SHHT-1_HT-sleeping__GET_shelly.json": ("SHHT-1", None, "/shelly"),
    "gen1_SHHT-1_HT-sleeping__GET_status.json": ("SHHT-1", None, "/status"),
    "gen1_SHHT-1_HT-sleeping__GET_settings.json": ("SHHT-1", None, "/settings"),
    "gen1_SHPLG-S_PlugS__GET_shelly.json": ("SHPLG-S", None, "/shelly"),
    "gen1_SHPLG-S_PlugS__GET_status.json": ("SHPLG-S", None, "/status"),
    "gen1_SHPLG-S_PlugS__GET_settings.json": ("SHPLG-S", None, "/settings"),
    "gen1_SHRGBW2_RGBW2-white__GET_shelly.json": ("SHRGBW2", "white", "/shelly"),
    "gen1_SHRGBW2_RGBW2-white__GET_status.json": ("SHRGBW2", "white", "/status"),
    "gen1_SHSW-25_Shelly25-roller__GET_shelly.json": ("SHSW-25", "roller", "/shelly"),
    "gen1_SHSW-25_Shelly25-roller__GET_status.json": ("SHSW-25", "roller", "/status"),
    "gen1_SHSW-25_Shelly25-roller__GET_settings.json": ("SHSW-25", "roller", "/settings"),
    "coiot__gen1_SHHT-1__cit_s.json": ("SHHT-1", None, "/cit/s"),
    "coiot__gen1_SHSW-25__cit_s.json": ("SHSW-25", "roller", "/cit/s"),
    "coiot__gen1_SHHT-1__cit_d.json": ("SHHT-1", None, "/cit/d"),
}
# Shelly 1 (no PM), 3EM, Gas and Vintage are not simulated; SHSW-PM has no capture.
GEN1_NOT_SIMULATED_MODELS = ("SHSW-1", "SHEM-3", "SHGS-1", "SHVIN-1")


def test_every_capture_is_mapped_or_knowingly_not_simulated():
    files = {p.name for p in payload_files("mystrom")}
    if not files:
        pytest.skip("../shared/payloads is absent")
    assert files - set(MYSTROM) - MYSTROM_NOT_SIMULATED == set()
    gen1 = {p.name for p in payload_files("shelly", "gen1_*")} | {p.name for p in payload_files("shelly", "coiot__*")}
    unmapped = {f for f in gen1 - set(GEN1) if not any(m in f for m in GEN1_NOT_SIMULATED_MODELS)}
    assert unmapped == set()


@pytest.mark.parametrize("capture", sorted(MYSTROM))
async def test_mystrom_shapes_match_real_captures(capture):
    real = load_payload("mystrom", capture)
    factory, method, path, body, keyed = MYSTROM[capture]
    async with running(factory()) as device, plain_session() as s:
        kwargs = {"data": body} if body is not None else {}
        async with s.request(method, f"http://{device.address}{path}", **kwargs) as r:
            assert r.status == 200
            ours = await r.json()
    if keyed:
        assert list(ours) == [device.mac]            # keyed by our MAC, like the firmware
        real, ours = only_value(real), only_value(ours)
    assert shape_problems(real, ours) == []


@pytest.mark.parametrize("capture", sorted(c for c in GEN1 if "cit_d" not in c))
async def test_gen1_shapes_match_real_captures(capture, payload):
    real = payload("shelly", capture)
    model, mode, path = GEN1[capture]
    device = ShellyGen1(model, mode=mode, awake=True)
    if "auth" in capture:
        device.set_secret("geheim")
    async with running(device):
        ours = device.shelly() if path == "/shelly" else {
            "/status": device.status, "/settings": device.settings, "/cit/s": device.cit_s,
        }[path]()
    if path == "/cit/s":
        # [[channel, sensor id, value], ...]: every id of the capture, same value type
        ours_by_id = {sid: value for _, sid, value in ours["G"]}
        problems = []
        for _, sid, value in real["G"]:
            if sid not in ours_by_id:
                problems.append(f"sensor {sid} missing")
            else:
                problems += shape_problems(value, ours_by_id[sid], f"G[{sid}]")
        assert problems == []
    else:
        assert shape_problems(real, ours) == []


def test_gen1_ht_description_matches_real_cit_d(payload):
    real = payload("shelly", "coiot__gen1_SHHT-1__cit_d.json")
    ours = ShellyGen1("SHHT-1").cit_d()
    ours_sensors = {s["I"]: s for s in ours["sen"]}
    for sensor in real["sen"]:
        mine = ours_sensors.get(sensor["I"])
        assert mine is not None, sensor
        assert (mine["T"], mine["D"], mine.get("U")) == (sensor["T"], sensor["D"], sensor.get("U"))
        assert shape_problems(sensor, mine) == []
    assert [b["D"] for b in ours["blk"]] == [b["D"] for b in real["blk"]]


def test_shape_comparison_catches_differences():
    assert shape_problems({"a": 1, "b": {"c": "x"}}, {"a": 2.5, "b": {"c": "y"}, "extra": 1}) == []
    assert shape_problems({"a": 1}, {"a": "1"}) != []
    assert shape_problems({"a": True}, {"a": 1}) != []
    assert shape_problems({"b": {"c": 1}}, {"b": {}}) != []
    assert shape_problems({"l": [{"x": 1}]}, {"l": []}) != []
    assert shape_problems({"name": "Kitchen"}, {"name": None}) == []
    assert shape_problems({"power": None}, {"power": 3}) == []
