"""The Shelly Gen2+ simulator on the wire: HTTP transports, websocket frames and
notifications, errors, components, covers, OTA, reboots and request accounting."""

from __future__ import annotations

import asyncio
import json
import re

import aiohttp
import httpx
import pytest

from devices.simulator.shelly_rpc import MODELS, ShellyRpc, deep_diff, query_value
from sim_rpc_helpers import is_notify, rpc_socket, running


def quiet(model: str = "SNSW-001P16EU", **kw) -> ShellyRpc:
    """A device without background drift, so every notification in a test is ours."""
    kw.setdefault("drift_period", None)
    kw.setdefault("minute_period", 3600.0)
    kw.setdefault("debug_rate", 0)
    return ShellyRpc(model, **kw)


async def awake(dev: ShellyRpc) -> None:
    for _ in range(100):
        if dev.online:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("device did not wake up")


def url(dev: ShellyRpc, path: str) -> str:
    return f"http://{dev.host}:{dev.port}{path}"


# ------------------------------------------------------------------ identity
@pytest.mark.parametrize("model", sorted(MODELS))
async def test_device_info_identity_per_model(model: str) -> None:
    dev = quiet(model, mac="aa:bb:cc:00:11:22", password="pw" if model.startswith("SP") else None)
    spec = MODELS[model]
    async with running(dev):
        if spec.sleeping:
            assert not dev.online          # asleep between wakes
            dev.wake(seconds=2.0)
            await awake(dev)
        async with httpx.AsyncClient() as client:
            info = (await client.get(url(dev, "/shelly"))).json()
            rpc_info = (await client.get(url(dev, "/rpc/Shelly.GetDeviceInfo"))).json()
    assert info == rpc_info
    assert info["id"] == f"{spec.id_prefix}-aabbcc001122"
    assert info["mac"] == "AABBCC001122"
    assert (info["model"], info["app"], info["gen"]) == (model, spec.app, spec.gen)
    assert info["ver"] == "1.7.5" and re.fullmatch(r"\d{8}-\d{6}/1\.7\.5-g[0-9a-f]{7}", info["fw_id"])
    assert info["auth_en"] is model.startswith("SP")
    assert info["auth_domain"] == (info["id"] if info["auth_en"] else None)


async def test_gen_specific_ids() -> None:
    assert ShellyRpc("S3SW-001P16EU", mac="34B7DA000001").device_id == "shelly1pmg3-34b7da000001"
    assert ShellyRpc("S4SW-001P16EU", mac="A085E3000001").device_id == "shelly1pmg4-a085e3000001"
    assert ShellyRpc("SPSW-104PE16EU", mac="34987A000001").device_id == "shellypro4pm-34987a000001"
    with pytest.raises(ValueError):
        ShellyRpc("SNSW-102P16EU", profile="light")


# ------------------------------------------------------------------ HTTP transports
def test_query_values_follow_the_firmware_rules() -> None:
    assert query_value("0") == 0 and query_value("true") is True and query_value("null") is None
    assert query_value("Kitchen") == "Kitchen"          # bare strings need no quotes
    assert query_value('"123"') == "123"                # ...unless they look like numbers
    assert query_value('{"ssl_ca":"*"}') == {"ssl_ca": "*"}


async def test_get_post_and_frame_transports() -> None:
    dev = quiet()
    async with running(dev), httpx.AsyncClient() as client:
        r = await client.get(url(dev, "/rpc/Switch.Set?id=0&on=true"))
        assert r.status_code == 200 and r.json() == {"was_on": False}
        status = (await client.get(url(dev, "/rpc/switch.getstatus?id=0"))).json()   # any case
        assert status["output"] is True and status["source"] == "HTTP_in"

        r = await client.post(url(dev, "/rpc/Switch.Toggle"), json={"id": 0})
        assert r.json() == {"was_on": True}

        frame = {"id": 7, "src": "dash-http", "method": "SHELLY.GETDEVICEINFO"}
        r = await client.post(url(dev, "/rpc"), json=frame)
        body = r.json()
        assert body["id"] == 7 and body["src"] == dev.device_id and body["dst"] == "dash-http"
        assert body["result"]["mac"] == dev.mac

        # config objects as JSON values in the query, strings without quotes
        r = await client.get(url(dev, '/rpc/Sys.SetConfig?config={"device":{"name":"Hall lamp"}}'))
        assert r.json() == {"restart_required": False}
        assert (await client.get(url(dev, "/shelly"))).json()["name"] == "Hall lamp"
        r = await client.get(url(dev, "/rpc/Shelly.Update?stage=nightly"))
        assert r.status_code == 500 and r.json()["code"] == -103


async def test_http_error_bodies_and_codes() -> None:
    dev = quiet()
    async with running(dev), httpx.AsyncClient() as client:
        r = await client.get(url(dev, "/rpc/Switch.Set?id=3&on=true"))
        assert r.status_code == 500
        assert r.json() == {"code": -105, "message": "Argument 'id', value 3 not found!"}
        r = await client.get(url(dev, "/rpc/Switch.Set?on=true"))
        assert r.json()["code"] == -103
        r = await client.get(url(dev, '/rpc/Switch.Set?id="0"&on=true'))   # a string id
        assert r.json()["code"] == -103
        r = await client.get(url(dev, "/rpc/Switch.Frobnicate?id=0"))
        assert r.status_code == 404 and r.json() == {"code": 404, "message": "No handler for Switch.Frobnicate"}
        r = await client.get(url(dev, "/rpc/Cover.Open?id=0"))              # no cover on a 1PM
        assert r.status_code == 404


async def test_components_are_paginated() -> None:
    dev = quiet("SPSW-104PE16EU")
    async with running(dev), httpx.AsyncClient() as client:
        keys: list[str] = []
        offset = 0
        while True:
            page = (await client.get(url(dev, f"/rpc/Shelly.GetComponents?offset={offset}"))).json()
            assert page["offset"] == offset and page["cfg_rev"] == dev.cfg_rev
            keys += [c["key"] for c in page["components"]]
            for item in page["components"]:
                assert "status" in item or "config" in item
            offset += len(page["components"])
            if offset >= page["total"]:
                break
        status = (await client.get(url(dev, "/rpc/Shelly.GetStatus"))).json()
        assert set(status) <= set(keys) and len(keys) == page["total"] > 10
        dynamic = (await client.get(url(dev, "/rpc/Shelly.GetComponents?dynamic_only=true"))).json()
        assert dynamic == {"components": [], "cfg_rev": dev.cfg_rev, "offset": 0, "total": 0}
        methods = (await client.get(url(dev, "/rpc/Shelly.ListMethods"))).json()["methods"]
        assert {"Switch.Set", "Shelly.GetStatus", "Sys.SetConfig", "Ws.SetConfig", "Input.GetStatus"} <= set(methods)


# ------------------------------------------------------------------ websocket
async def test_notifications_start_after_a_frame_with_src() -> None:
    dev = quiet()
    async with running(dev), rpc_socket(dev, src="dash-ws") as sock:
        await dev.flip(0)
        assert await sock.notifications("NotifyStatus", within=0.3) == []
        reply = await sock.call("Shelly.GetDeviceInfo")
        assert reply["dst"] == "dash-ws" and reply["src"] == dev.device_id
        await dev.flip(0)
        note = await sock.expect(is_notify("NotifyStatus"))
        assert note["dst"] == "dash-ws" and note["src"] == dev.device_id and "id" not in note
        params = note["params"]
        assert isinstance(params["ts"], float)
        # only what changed, with the component id; volatile sys values are never pushed
        change = params["switch:0"]
        assert change["id"] == 0 and change["output"] is False
        assert set(change) <= {"id", "output", "apower", "current", "pf"}   # source stayed "switch"
        assert "sys" not in params


async def test_commands_reply_and_notify_with_their_source() -> None:
    dev = quiet()
    dev.set_load(0, 100.0)
    async with running(dev), rpc_socket(dev) as sock:
        reply = await sock.call("Switch.Set", {"id": 0, "on": True})
        assert reply == {"id": 1, "src": dev.device_id, "dst": "dash-test", "result": {"was_on": False}}
        note = await sock.expect(is_notify("NotifyStatus"))
        change = note["params"]["switch:0"]
        assert change["output"] is True and change["source"] == "WS_in" and 95 < change["apower"] < 105
        assert {"current", "pf"} & set(change)

        bad = await sock.call("Switch.Set", {"id": 5, "on": True})
        assert bad["error"] == {"code": -105, "message": "Argument 'id', value 5 not found!"}
        assert bad["dst"] == "dash-test" and "result" not in bad
        unknown = await sock.call("Nope.Nothing")
        assert unknown["error"]["code"] == 404


async def test_timer_fields_are_cleared_with_null() -> None:
    dev = quiet()
    async with running(dev), rpc_socket(dev) as sock:
        await sock.call("Switch.Set", {"id": 0, "on": True, "toggle_after": 0.2})
        first = (await sock.expect(is_notify("NotifyStatus")))["params"]["switch:0"]
        assert first["timer_duration"] == 0.2 and isinstance(first["timer_started_at"], float)
        done = (await sock.expect(is_notify("NotifyStatus")))["params"]["switch:0"]
        assert done["output"] is False and done["source"] == "timer"
        assert done["timer_started_at"] is None and done["timer_duration"] is None


async def test_energy_is_pushed_once_per_metering_minute() -> None:
    dev = quiet()
    dev.set_load(0, 120.0)
    async with running(dev), rpc_socket(dev) as sock:
        await sock.call("Switch.Set", {"id": 0, "on": True})
        await sock.expect(is_notify("NotifyStatus"))
        before = dev.full_status()["switch:0"]["aenergy"]
        dev.energy_tick()
        note = (await sock.expect(is_notify("NotifyStatus")))["params"]["switch:0"]
        assert note["id"] == 0 and set(note) <= {"id", "aenergy", "ret_aenergy"}
        energy = note["aenergy"]
        assert energy["minute_ts"] == before["minute_ts"] + 60
        apower = dev.switches[0].apower
        assert energy["by_minute"][0] == pytest.approx(apower * 1000 / 60, rel=1e-3)   # mWh
        assert energy["by_minute"][1:] == before["by_minute"][:2]                       # newest first
        assert energy["total"] == pytest.approx(before["total"] + apower / 60, abs=1e-2)  # Wh


async def test_power_drifts_on_its_own() -> None:
    dev = quiet(drift_period=0.05)
    dev.set_load(0, 60.0)
    async with running(dev), rpc_socket(dev) as sock:
        await sock.call("Switch.Set", {"id": 0, "on": True})
        notes = await sock.notifications("NotifyStatus", within=0.6)
        assert len(notes) >= 3
        assert any("apower" in n["params"].get("switch:0", {}) for n in notes[1:])
        assert all(n["params"].get("switch:0", {}).get("source", "WS_in") == "WS_in" for n in notes)


async def test_button_presses_become_events() -> None:
    dev = quiet("SNSN-0024X", press_gap=0.01)
    async with running(dev), rpc_socket(dev) as sock:
        await sock.call("Shelly.GetStatus")
        await dev.press(2, "double")
        notes = await sock.notifications("NotifyEvent", within=0.3)
        events = [e for n in notes for e in n["params"]["events"]]
        assert [e["event"] for e in events] == ["btn_down", "btn_up", "btn_down", "btn_up", "double_push"]
        assert all(e["component"] == "input:2" and e["id"] == 2 and isinstance(e["ts"], float) for e in events)
        await dev.press(0, "long")
        notes = await sock.notifications("NotifyEvent", within=0.3)
        assert [e["event"] for n in notes for e in n["params"]["events"]] == ["btn_down", "long_push", "btn_up"]
        # button inputs have no state
        assert dev.full_status()["input:2"] == {"id": 2, "state": None}
        with pytest.raises(ValueError):
            dev.press(4)
        with pytest.raises(ValueError):
            dev.press(0, "quadruple")
    with pytest.raises(ValueError):
        quiet("SPEM-003CEBEU").press(0)          # a meter has no inputs


async def test_rocker_input_flips_the_switch() -> None:
    dev = quiet("SNSW-001P16EU")
    async with running(dev), rpc_socket(dev) as sock:
        await sock.call("Shelly.GetStatus")
        await dev.press(0)
        params = (await sock.expect(is_notify("NotifyStatus")))["params"]
        assert params["input:0"] == {"id": 0, "state": True}
        assert params["switch:0"]["output"] is True


async def test_cover_moves_over_time() -> None:
    dev = quiet("SNSW-102P16EU", cover_travel_time=0.4)
    async with running(dev), rpc_socket(dev) as sock:
        assert (await sock.call("Cover.GetStatus", {"id": 0}))["result"]["state"] == "closed"
        reply = await sock.call("Cover.Open", {"id": 0})
        assert reply["result"] is None                                  # like the real Cover.Close
        notes = await sock.notifications("NotifyStatus", within=0.8)
        covers = [n["params"]["cover:0"] for n in notes if "cover:0" in n["params"]]
        assert covers[0]["state"] == "opening" and "move_started_at" in covers[0]
        positions = [c["current_pos"] for c in covers if "current_pos" in c]
        assert positions == sorted(positions) and positions[-1] == 100
        assert covers[-1]["state"] == "open" and covers[-1]["move_started_at"] is None
        await sock.call("Cover.GoToPosition", {"id": 0, "pos": 40})
        await asyncio.sleep(0.5)
        status = (await sock.call("Cover.GetStatus", {"id": 0}))["result"]
        assert status["state"] == "stopped" and status["current_pos"] == 40
        assert status["last_direction"] == "close" and "target_pos" not in status
        await sock.call("Cover.Close", {"id": 0})
        await asyncio.sleep(0.1)
        await sock.call("Cover.Stop", {"id": 0})
        stopped = (await sock.call("Cover.GetStatus", {"id": 0}))["result"]
        assert stopped["state"] == "stopped" and 0 < stopped["current_pos"] < 40
        bad = await sock.call("Cover.GoToPosition", {"id": 0, "pos": 140})
        assert bad["error"]["code"] == -103


async def test_switch_profile_has_no_cover_methods() -> None:
    dev = quiet("SNSW-102P16EU", profile="switch")
    async with running(dev), rpc_socket(dev) as sock:
        assert (await sock.call("Switch.Set", {"id": 1, "on": True}))["result"] == {"was_on": False}
        assert (await sock.call("Cover.Open", {"id": 0}))["error"]["code"] == 404
        assert (await sock.call("Shelly.GetDeviceInfo"))["result"]["profile"] == "switch"


async def test_meter_and_sensor_components() -> None:
    meter = quiet("SPEM-003CEBEU")
    async with running(meter), rpc_socket(meter) as sock:
        em = (await sock.call("EM.GetStatus", {"id": 0}))["result"]
        assert em["total_act_power"] == pytest.approx(em["a_act_power"] + em["b_act_power"] + em["c_act_power"], abs=0.5)
        data = (await sock.call("EMData.GetStatus", {"id": 0}))["result"]
        assert data["total_act"] > 0
        await meter.flip()
        assert "em:0" in (await sock.expect(is_notify("NotifyStatus")))["params"]
        assert (await sock.call("EM.GetStatus", {"id": 1}))["error"]["code"] == -105


async def test_set_config_is_strict_and_announced() -> None:
    dev = quiet()
    async with running(dev), rpc_socket(dev) as sock:
        bad = await sock.call("Switch.SetConfig", {"id": 0, "config": {"no_such_key": 1}})
        assert bad["error"]["code"] == -103
        bad = await sock.call("Switch.SetConfig", {"id": 0, "config": {"auto_off": "yes"}})
        assert bad["error"]["code"] == -103
        rev = dev.cfg_rev
        ok = await sock.call("Switch.SetConfig", {"id": 0, "config": {"name": "Desk", "auto_off": True}})
        assert ok["result"] == {"restart_required": False}
        event = (await sock.expect(is_notify("NotifyEvent")))["params"]["events"][0]
        assert event["event"] == "config_changed" and event["component"] == "switch:0"
        assert event["cfg_rev"] == rev + 1 and event["id"] == 0
        assert (await sock.call("Switch.GetConfig", {"id": 0}))["result"]["name"] == "Desk"
        ws = await sock.call("Ws.SetConfig", {"config": {"enable": True, "server": "ws://127.0.0.1:9/x"}})
        assert ws["result"] == {"restart_required": True}
        status = (await sock.call("Sys.GetStatus"))["result"]
        assert status["restart_required"] is True and status["cfg_rev"] == rev + 2


# ------------------------------------------------------------------ lifecycle
async def test_reboot_drops_sockets_and_resets_uptime() -> None:
    dev = quiet(reboot_time=0.2)
    async with running(dev):
        dev.boot_time -= 100   # pretend it has been up for a while
        async with rpc_socket(dev) as sock:
            assert (await sock.call("Sys.GetStatus"))["result"]["uptime"] >= 100
            reply = await sock.call("Shelly.Reboot", {"delay_ms": 50})
            assert reply["result"] is None
            event = (await sock.expect(is_notify("NotifyEvent")))["params"]["events"][0]
            assert event == {"component": "sys", "event": "scheduled_restart", "time_ms": 50, "ts": event["ts"]}
            await asyncio.wait_for(sock._reader, 2.0)   # the device dropped the socket
        await asyncio.sleep(0.05)
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient() as client:
                await client.get(url(dev, "/shelly"))
        await asyncio.sleep(0.3)
        async with httpx.AsyncClient() as client:
            status = (await client.get(url(dev, "/rpc/Sys.GetStatus"))).json()
        assert status["uptime"] < 5 and status["reset_reason"] == 3


async def test_ota_update_sequence_then_new_version() -> None:
    dev = quiet(fw="1.6.2", updates={"stable": "1.7.5"}, ota_step=0.02, reboot_time=0.1)
    async with running(dev):
        async with rpc_socket(dev) as sock:
            check = (await sock.call("Shelly.CheckForUpdate"))["result"]
            assert check["stable"]["version"] == "1.7.5" and "/1.7.5-g" in check["stable"]["build_id"]
            assert (await sock.call("Shelly.Update", {"stage": "beta"}))["error"]["code"] == -103
            assert (await sock.call("Shelly.Update", {"stage": "stable"}))["result"] is None
            notes = await sock.notifications("NotifyEvent", within=0.5)
        events = [e for n in notes for e in n["params"]["events"]]
        names = [e["event"] for e in events]
        assert names[0] == "ota_begin" and names.count("ota_progress") >= 3
        assert names[-2:] == ["ota_success", "scheduled_restart"]
        progress = [e["progress_percent"] for e in events if e["event"] == "ota_progress"]
        assert progress == sorted(progress) and all(0 < p < 100 for p in progress)
        assert all(e["component"] == "sys" for e in events)
        await asyncio.sleep(0.4)
        async with httpx.AsyncClient() as client:
            info = (await client.get(url(dev, "/shelly"))).json()
            status = (await client.get(url(dev, "/rpc/Shelly.GetStatus"))).json()
        assert info["ver"] == "1.7.5" and "/1.7.5-" in info["fw_id"]
        assert status["sys"]["available_updates"] == {} and status["sys"]["uptime"] < 5


async def test_requests_in_flight_are_counted_for_websocket_frames() -> None:
    dev = quiet()
    async with running(dev), rpc_socket(dev) as sock:
        dev.faults.latency = 0.1
        dev.reset_counters()
        ids = [await sock.send("Shelly.GetStatus") for _ in range(3)]   # pipelined
        for call_id in ids:
            await sock.expect(lambda f, i=call_id: f.get("id") == i)
        assert dev.max_in_flight == 3
        dev.reset_counters()
        for _ in range(3):                                              # one at a time
            await sock.call("Shelly.GetStatus")
        assert dev.max_in_flight == 1 and dev.requests_total == 3


async def test_websocket_faults_reach_the_client() -> None:
    dev = quiet()
    async with running(dev), aiohttp.ClientSession() as session:
        ws = await session.ws_connect(url(dev, "/rpc"))
        dev.faults.malformed = True
        await ws.send_str(json.dumps({"id": 1, "src": "x", "method": "Shelly.GetStatus"}))
        msg = await ws.receive(timeout=2)
        with pytest.raises(ValueError):
            json.loads(msg.data)
        dev.faults.clear()
        dev.faults.hang = True
        await ws.send_str(json.dumps({"id": 2, "src": "x", "method": "Shelly.GetStatus"}))
        with pytest.raises(asyncio.TimeoutError):
            await ws.receive(timeout=0.3)
        assert dev.in_flight == 1
        await ws.close()


def test_deep_diff_marks_removed_keys_null() -> None:
    old = {"switch:0": {"output": True, "timer_duration": 5, "temperature": {"tC": 40}}}
    new = {"switch:0": {"output": False, "temperature": {"tC": 40}}}
    assert deep_diff(old, new) == {"switch:0": {"output": False, "timer_duration": None}}
