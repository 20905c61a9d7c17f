"""`manage.py demo`: refuses to touch a real household, prepares rooms, a login and the
simulated devices (secrets stored as credentials), and runs the server and the devices in
one process that Ctrl-C stops."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest
from django.core.management import CommandError, call_command

from devices import demo
from devices.models import Channel, Device, Reading, Room
from devices.simulator.fleet import Fleet
from tests.servers import REPO, free_port


def _rows():
    return [
        {"mac": "30AEA4000001", "vendor": "mystrom", "host": "127.0.0.1", "port": 40001, "secret": "apfel-123",
         "room": "Kitchen", "name": "Coffee machine", "adopt": True, "generation": None, "model_code": "106",
         "model_name": "WiFi Switch", "firmware": "4.0.14", "raw_info": {"type": 106}, "auth_required": True},
        {"mac": "E868E7000002", "vendor": "shelly", "host": "127.0.0.1", "port": 40002, "secret": "birne-456",
         "room": "Garden", "name": "Pond pump", "adopt": True, "generation": 1, "model_code": "SHPLG-S",
         "model_name": "Shelly Plug S", "firmware": "v1.14", "raw_info": {}, "auth_required": True},
        {"mac": "E868E7000003", "vendor": "shelly", "host": "127.0.0.1", "port": 40003, "secret": "",
         "room": None, "name": "", "adopt": False, "generation": 1, "model_code": "SHPLG-S",
         "model_name": "Shelly Plug S", "firmware": "v1.14", "raw_info": {}, "auth_required": False},
    ]


def test_demo_refuses_without_demo_mode(settings):
    settings.DEMO = False
    with pytest.raises(CommandError, match="HOMEDASH_DEMO=true"):
        call_command("demo", "--prepare", "/nonexistent.json")


@pytest.mark.django_db
def test_prepare_database_is_idempotent_and_keeps_household_changes():
    counts = demo.prepare_database(_rows())
    assert counts == {"adopted": 2, "inbox": 1}
    assert [r.name for r in Room.objects.all()] == [name for name, _ in demo.ROOMS]
    coffee = Device.objects.get(mac="30AEA4000001")
    assert coffee.adopted and coffee.room.name == "Kitchen" and coffee.credentials.token == "apfel-123"
    pump = Device.objects.get(mac="E868E7000002")
    assert (pump.credentials.username, pump.credentials.password) == ("admin", "birne-456")
    waiting = Device.objects.get(mac="E868E7000003")
    assert not waiting.adopted and waiting.room is None
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.get(username=demo.DEMO_USER)
    assert user.is_staff and user.check_password(demo.DEMO_PASSWORD)

    # Next start: the simulator's ports moved, and someone renamed the pump meanwhile.
    Device.objects.filter(pk=pump.pk).update(name="Fish pump")
    rows = _rows()
    rows[1]["port"] = 41002
    demo.prepare_database(rows)
    pump.refresh_from_db()
    assert (pump.port, pump.name) == (41002, "Fish pump")
    assert Device.objects.count() == 3 and Room.objects.count() == len(demo.ROOMS)


@pytest.mark.django_db
def test_backfilled_history_feeds_the_chart():
    from devices import cards

    demo.prepare_database(_rows())
    coffee = Device.objects.get(mac="30AEA4000001")
    channel = Channel.objects.create(device=coffee, key="relay", kind="switch", last_state={"power_w": 1250.0})
    assert demo.backfill_history(hours=24) == 24 * 12
    assert demo.backfill_history(hours=24) == 0  # only once
    chart = cards.power_chart([channel])
    assert chart is not None and chart["top"] >= 1250 and chart["series"][0].points.count(",") >= 200
    assert Reading.objects.filter(channel=channel).count() == 288


async def test_describe_fleet_probes_like_discovery_and_keeps_the_secrets():
    async with Fleet(["WS2", "SHPLG-S", "WBS"], seed=5, protect=True) as fleet:
        rows = await demo.describe_fleet(fleet, inbox=1)
    assert [r["adopt"] for r in rows] == [True, True, False]
    protected = [r for r in rows if r["secret"]]
    assert protected and all(r["auth_required"] for r in protected)
    assert any(r["vendor"] == "shelly" and r["generation"] == 1 and r["model_code"] == "SHPLG-S" for r in rows)
    assert rows[2]["sleeping"] and rows[2]["raw_info"]["sleep_mode"]  # the button sleeps: not probed


def test_demo_runs_server_and_devices_in_one_process_ctrl_c_stops_both(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMEDASH_")}
    env.update(HOMEDASH_DATA_DIR=str(tmp_path / "demo"), HOMEDASH_DEMO="true", HOMEDASH_DISCOVERY="false",
               PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, "manage.py", "demo", "--port", str(port)], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline, health = time.monotonic() + 45, {}
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stdout.read()
            try:
                health = httpx.get(base + "/healthz", timeout=1).json()
                if health["devices"]["online"] >= 15:
                    break
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(0.3)
        assert health["devices"]["adopted"] >= 20 and health["devices"]["inbox"] == 2, health
        assert health["devices"]["online"] >= 15, health
        with httpx.Client(base_url=base, follow_redirects=True) as client:
            login = client.get("/login/")
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text).group(1)
            home = client.post("/login/", data={"username": demo.DEMO_USER, "password": demo.DEMO_PASSWORD,
                                                "csrfmiddlewaretoken": token}, headers={"Referer": base + "/login/"})
            for room, _ in demo.ROOMS:
                assert room in home.text
    finally:
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=30)
    assert process.returncode == 0, out
    assert "Log in at" in out and "demo / demo-household" in out
    assert "device runtime stopped" in out and "homedash stopped." in out
