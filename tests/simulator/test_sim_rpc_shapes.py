"""Our payloads against real captures of the same model and firmware line: same keys, same
JSON types, recursively (values are ours). Captures are read from ../shared at test time and
the tests skip when it is absent."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
import pytest

from tests.payloads import load_payload, payload_files
from devices.simulator.shelly_rpc import ShellyRpc
from sim_rpc_helpers import json_auth, rpc_socket, running

PASSWORD = "shape-test"

# capture file prefix -> our model; fw, profile and auth come from the capture itself
CASES = {
    "gen2_SNSW-001P16EU_Plus1PM": "SNSW-001P16EU",
    "gen2_SNSW-102P16EU_Plus2PM-cover-auth": "SNSW-102P16EU",
    "gen2_SPSW-104PE16EU_Pro4PM_fw1.7.5": "SPSW-104PE16EU",
    "gen2_SNSN-0013A_PlusHT-sleeping": "SNSN-0013A",
    "gen2_SNSN-0024X_PlusI4": "SNSN-0024X",
    "gen2_SPEM-003CEBEU_Pro3EM": "SPEM-003CEBEU",
    "gen3_S3SW-001P16EU_1PMG3": "S3SW-001P16EU",
    "gen4_S4SW-001P16EU_1PMG4": "S4SW-001P16EU",
}


def kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


def ignored(path: str, real: Any) -> bool:
    top = path.split(".")[0]
    if re.fullmatch(r"(script|number|boolean|text|enum|button|group):\d+", top):
        return True          # user scripts and virtual components of that household
    if re.fullmatch(r"[a-z]+:\d+", top) and int(top.split(":")[1]) >= 100:
        return True          # add-on sensors plugged into that device (temperature:100, ...)
    if path == "sys.ui_data":
        return True          # free-form data the vendor app stores
    if path == "wifi" and isinstance(real, str):
        return True          # aioshelly anonymised the whole wifi config to a string
    return False


def shape_problems(real: Any, ours: Any, path: str = "") -> list[str]:
    """Differences in keys and JSON types; null matches anything (nullable fields)."""
    if real is None or ours is None:
        return []
    if kind(real) != kind(ours):
        return [f"{path or '<root>'}: real {kind(real)}, ours {kind(ours)}"]
    problems: list[str] = []
    if isinstance(real, dict):
        for key in real:
            sub = f"{path}.{key}" if path else key
            if ignored(sub, real[key]):
                continue
            if key not in ours:
                problems.append(f"{sub}: missing in ours")
            else:
                problems += shape_problems(real[key], ours[key], sub)
        for key in ours:
            sub = f"{path}.{key}" if path else key
            if key not in real and not ignored(sub, None):
                problems.append(f"{sub}: not in the real capture")
    elif isinstance(real, list) and real and ours:
        problems += shape_problems(real[0], ours[0], path + "[0]")
    return problems


async def fetch(dev: ShellyRpc, path: str) -> Any:
    auth = httpx.DigestAuth("admin", PASSWORD) if dev.guard.enabled else None
    async with httpx.AsyncClient(auth=auth) as client:
        r = await client.get(f"http://{dev.host}:{dev.port}{path}")
        r.raise_for_status()
        return r.json()


def device_for(prefix: str) -> ShellyRpc:
    info = load_payload("shelly", f"{prefix}__GET_shelly.json")
    status = load_payload("shelly", f"{prefix}__Shelly.GetStatus.json")
    updates = {stage: "9.9.9" for stage in status["sys"].get("available_updates", {})}
    return ShellyRpc(CASES[prefix], fw=info["ver"], profile=info.get("profile"),
                     password=PASSWORD if info["auth_en"] else None, updates=updates,
                     drift_period=None, debug_rate=0)


@pytest.mark.parametrize("prefix", sorted(CASES))
async def test_payload_shapes_match_real_captures(prefix: str) -> None:
    dev = device_for(prefix)
    async with running(dev):
        if dev.spec.sleeping:
            dev.wake(seconds=3.0)
            for _ in range(100):
                if dev.online:
                    break
                await asyncio.sleep(0.02)
        ours = {"GET_shelly": await fetch(dev, "/shelly"),
                "Shelly.GetStatus": await fetch(dev, "/rpc/Shelly.GetStatus"),
                "Shelly.GetConfig": await fetch(dev, "/rpc/Shelly.GetConfig")}
    problems = []
    for endpoint, payload in ours.items():
        real = load_payload("shelly", f"{prefix}__{endpoint}.json")
        problems += [f"{endpoint} {p}" for p in shape_problems(real, payload)]
    assert problems == []


async def test_device_info_of_older_switch_profile_capture() -> None:
    real = load_payload("shelly", "gen2_SNSW-102P16EU_Plus2PM__GET_shelly_auth_enabled.json")
    dev = ShellyRpc("SNSW-102P16EU", fw=real["ver"], profile=real["profile"], password=PASSWORD)
    assert shape_problems(real, dev.device_info()) == []
    assert dev.device_info()["auth_domain"] == dev.device_id


async def test_moving_cover_status_and_websocket_frames_match_captures() -> None:
    moving = load_payload("shelly", "gen3_S3SW-002P16EU_2PMG3-cover__Cover.GetStatus_moving.json")
    challenge = load_payload("shelly", "ws_frame__error_401_auth_challenge__Cover.Close.json")
    null_result = load_payload("shelly", "ws_frame__response_result_null__Cover.Close.json")
    dev = ShellyRpc("SNSW-102P16EU", password=PASSWORD, fw="1.4.2", drift_period=None,
                    debug_rate=0, cover_travel_time=5.0)
    async with running(dev), rpc_socket(dev, src="aios-1") as sock:
        first = await sock.call("Cover.Close", {"id": 0})
        assert shape_problems(challenge, first) == []
        ours_msg, real_msg = json.loads(first["error"]["message"]), json.loads(challenge["error"]["message"])
        assert shape_problems(real_msg, ours_msg) == []     # numeric nonce before fw 2.0
        auth = json_auth(dev.device_id, PASSWORD, ours_msg["nonce"], 1)
        dev.covers[0].current_pos = 80.0
        done = await sock.call("Cover.Close", {"id": 0}, auth=auth)
        assert shape_problems(null_result, done) == [] and done["result"] is None
        status = dev.full_status()["cover:0"]
    assert shape_problems(moving, status) == []


# The notifications we produce (button events, OTA, restarts, config changes, switch status);
# captures of things we do not simulate (BLE, script and cloud events) are not compared.
SIMULATED = re.compile(r"mqtt_notify_(event__.*__(input_\d+|sys__ota_\w+|sys__scheduled_restart|"
                       r"script_\d+__config_changed)|status__.*__switch_0)\.json")
NOTIFY_CAPTURES = [p.name for p in payload_files("shelly", "mqtt_notify_*.json") if SIMULATED.fullmatch(p.name)]


@pytest.mark.parametrize("capture", NOTIFY_CAPTURES or ["none"])
async def test_notification_frames_match_captures(capture: str) -> None:
    if capture == "none":
        pytest.skip("real captures not available")
    real = load_payload("shelly", capture)
    method = real["method"]
    params = real["params"]
    dev = ShellyRpc("SNSW-001P16EU", drift_period=None, debug_rate=0, press_gap=0.01, fw="1.7.5")
    async with running(dev), rpc_socket(dev) as sock:
        await sock.call("Shelly.GetDeviceInfo")
        if method == "NotifyEvent":
            event = params["events"][0]
            name = event["event"]
            if event["component"].startswith("input:"):
                dev.apply_config("input:0", {"type": "button"})
                await dev.press(0, name if name in ("btn_down", "btn_up") else name.removesuffix("_push"))
            elif name.startswith("ota_") or name == "scheduled_restart":
                dev.updates = {"stable": "9.9.9"}
                dev.ota_will_fail = name == "ota_error"
                dev.ota_step = 0.02
                dev.reboot_time = 5.0
                await sock.call("Shelly.Update", {"stage": "stable"})
            else:
                assert name == "config_changed"
                await sock.call("Switch.SetConfig", {"id": 0, "config": {"name": "x"}})
            frames = await sock.notifications("NotifyEvent", within=0.3)
            ours = next(f for f in frames for e in f["params"]["events"] if e["event"] == name)
            ours = {**ours, "params": {**ours["params"],
                                       "events": [e for e in ours["params"]["events"] if e["event"] == name]}}
        else:
            key = next(k for k in params if k != "ts")
            assert key == "switch:0"
            dev.set_load(0, 50.0)
            await sock.call("Switch.Set", {"id": 0, "on": True})
            await sock.notifications("NotifyStatus", within=0.1)
            if "aenergy" in params[key]:
                dev.energy_tick()
            else:
                dev.switches[0].temp_c += 3
                dev._commit()
            ours = (await sock.notifications("NotifyStatus", within=0.3))[-1]
    # Over MQTT dst is "<id>/events"; on a websocket it is the client's src. Shapes are equal.
    assert shape_problems(real, ours) == []
