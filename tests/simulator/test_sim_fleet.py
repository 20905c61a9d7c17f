"""The fleet (a whole household in one process), its control API and `manage.py simulate`."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import signal
import sys
import warnings
from pathlib import Path

import aiohttp
import pytest
from django.core.management import call_command

from devices.simulator.fleet import DeviceSpec, Fleet, format_table, household_mix
from devices.simulator.mystrom import MyStromButton, MyStromSwitch
from devices.simulator.shelly_gen1 import ShellyGen1
from sim_helpers import fresh_host, own_addresses_or_skip, plain_session, udp_inbox, until

REPO = Path(__file__).resolve().parents[2]


def test_household_mix_covers_every_kind():
    models = [str(s) for s in household_mix()]
    assert models[:8] == ["WS2", "WSE", "WSW", "LCS", "WRB", "WRS", "WMS", "WBS"]
    assert {"SHSW-PM", "SHSW-25:roller", "SHPLG-S", "SHDM-2", "SHRGBW2:color", "SHHT-1"} <= set(models)
    assert {"SNSW-001P16EU", "SNSW-102P16EU:cover", "SPSW-104PE16EU", "SNSN-0013A", "SNSN-0024X",
            "SPEM-003CEBEU", "S3SW-001P16EU", "S4SW-001P16EU"} <= set(models)
    assert DeviceSpec.parse("ch_v2").model == "WS2"
    with pytest.raises(ValueError):
        DeviceSpec.parse("TOASTER-9000")


def test_same_seed_same_household_and_count_repeats_the_mix():
    one, two, other = Fleet(seed=7, protect=True), Fleet(seed=7, protect=True), Fleet(seed=8, protect=True)
    rows = [[(d.mac, d.name, d.secret) for d in f.build()] for f in (one, two, other)]
    assert rows[0] == rows[1] and rows[0] != rows[2]
    assert len({mac for mac, _, _ in rows[0]}) == len(rows[0])
    assert sum(1 for _, _, secret in rows[0] if secret) >= 5       # "some" are protected
    big = Fleet(count=50).build()
    assert len(big) == 50 and len({d.mac for d in big}) == 50
    assert type(big[0]) is type(big[22]) is MyStromSwitch


def test_fleet_refuses_non_loopback(monkeypatch):
    monkeypatch.delenv("HOMEDASH_PRIVATE_NETNS", raising=False)
    with pytest.raises(ValueError):
        Fleet(host="0.0.0.0")
    with pytest.raises(ValueError):
        Fleet(announce_to=("192.0.2.1", 7979))


def test_rpc_devices_are_skipped_with_a_warning_when_their_module_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "devices.simulator.shelly_rpc", None)   # import fails
    fleet = Fleet(["WS2", "SNSW-001P16EU", "SHSW-PM"])
    with pytest.warns(RuntimeWarning, match="Gen2"):
        devices = fleet.build()
    assert [d.model for d in devices] == ["106", "SHSW-PM"]
    assert [s.model for s in fleet.skipped] == ["SNSW-001P16EU"]


async def identity(session, device) -> int:
    path = {"mystrom": "/api/v1/info", "shelly": "/shelly"}[device.vendor]
    if getattr(device, "variant", "") == "ch_v1":
        path = "/info.json"
    headers = {"Token": device.secret} if device.vendor == "mystrom" and device.secret else {}
    async with session.get(f"http://{device.address}{path}", headers=headers) as r:
        body = await r.json()
        assert body["mac"] == device.mac
        return r.status


async def test_whole_household_starts_answers_and_stops():
    async with Fleet(seed=3, protect=True) as fleet, plain_session() as s:
        assert len(fleet.devices) == 22 and not fleet.skipped
        awake = [d for d in fleet.devices if d._site is not None]
        asleep = {d.model for d in fleet.devices if d._site is None}
        assert asleep <= {"104", "SHHT-1", "SNSN-0013A"} and "104" in asleep
        statuses = await asyncio.gather(*(identity(s, d) for d in awake))
        assert set(statuses) == {200}
        protected = next(d for d in fleet.devices if d.vendor == "mystrom" and d.secret and d in awake)
        async with s.get(f"http://{protected.address}/api/v1/info") as r:
            assert r.status == 404
        table = format_table(fleet.table())
        assert all(d.mac in table for d in fleet.devices) and "password/token" in table
    assert all(d._site is None for d in fleet.devices)


async def test_per_device_addresses_on_port_80():
    own_addresses_or_skip()
    first = fresh_host()
    for _ in range(3):
        fresh_host()                                     # keep the next two free for the fleet
    async with Fleet(["WS2", "SHSW-PM", "SHDM-2"], per_device_addresses=True, seed=2,
                     first_address=first) as fleet:
        base = ipaddress.IPv4Address(first)
        assert [d.address for d in fleet.devices] == [f"{base + i}:80" for i in range(3)]
        assert [d.coap_port for d in fleet.devices[1:]] == [5683, 5683]
        async with plain_session() as s:
            for device in fleet.devices:
                assert await identity(s, device) == 200


async def test_announcements_from_the_fleet():
    async with udp_inbox() as inbox:
        async with Fleet(["WS2", "WSW", "LCS"], announce_to=("127.0.0.1", inbox.port),
                         announce_interval=0.05) as fleet:
            seen = set()
            while len(seen) < 2:
                data, _ = await inbox.next()
                seen.add(data[:6].hex().upper())
        assert seen == {fleet.devices[0].mac, fleet.devices[2].mac}   # the v1 switch is silent


async def test_control_api_injects_faults_and_drives_devices():
    async with Fleet(["WS2", "SHSW-PM", "WBS"], control_port=0, seed=4) as fleet, \
            aiohttp.ClientSession(skip_auto_headers=("Accept-Encoding",)) as s:
        api = fleet.control.url
        switch, plug, button = fleet.devices
        async with s.get(f"{api}/devices") as r:
            rows = await r.json()
        assert [row["mac"] for row in rows] == [d.mac for d in fleet.devices]
        assert rows[0]["faults"]["latency"] == 0 and "max_in_flight" in rows[0]

        async with s.post(f"{api}/devices/{switch.mac}/faults", json={"http_500": True, "latency": 0.05}) as r:
            assert (await r.json())["faults"]["http_500"] is True
        async with s.get(f"http://{switch.address}/report") as r:
            assert r.status == 500
        for bad in ({"explode": True}, {"latency": "slow"}, {"hang": 1}):
            async with s.post(f"{api}/devices/{switch.mac}/faults", json=bad) as r:
                assert r.status == 400
        async with s.delete(f"{api}/devices/{switch.mac}/faults") as r:
            assert not any((await r.json())["faults"].values())

        async with s.post(f"{api}/devices/{switch.mac}/power_off") as r:
            assert r.status == 200
        with pytest.raises(aiohttp.ClientConnectionError):
            await s.get(f"http://{switch.address}/report")
        async with s.post(f"{api}/devices/{switch.mac}/power_on") as r:
            assert r.status == 200
        async with s.post(f"{api}/devices/{switch.mac}/move", json={"host": "127.0.0.13"}) as r:
            assert (await r.json())["address"].startswith("127.0.0.13:")
        async with s.post(f"{api}/devices/{switch.mac}/move", json={"host": "192.0.2.5"}) as r:
            assert r.status == 400
        async with s.post(f"{api}/devices/{switch.mac}/secret", json={"secret": "abc"}) as r:
            assert (await r.json())["secret"] == "abc"
        async with s.post(f"{api}/devices/{switch.mac}/secret", json={"secret": 5}) as r:
            assert r.status == 400

        before = plug.outputs[0].ison
        async with s.post(f"{api}/devices/{plug.mac}/flip", json={"channel": 0}) as r:
            assert r.status == 200
        assert plug.outputs[0].ison is not before
        async with s.post(f"{api}/devices/{plug.mac}/press", json={"kind": "long"}) as r:
            assert r.status == 200
        assert plug.inputs[0].event == "L"
        async with s.post(f"{api}/devices/{plug.mac}/press", json={"kind": "tickle"}) as r:
            assert r.status == 400
        boot = plug.boot_time
        async with s.post(f"{api}/devices/{plug.mac}/reboot") as r:
            assert r.status == 200
        assert plug.boot_time > boot

        assert isinstance(button, MyStromButton) and not button.awake
        async with s.post(f"{api}/devices/{button.mac}/wake", json={"seconds": 5}) as r:
            assert r.status == 200
        assert button.awake
        async with s.post(f"{api}/devices/{button.mac}/sleep") as r:
            assert r.status == 200
        assert not button.awake
        async with s.post(f"{api}/devices/{plug.mac}/motion") as r:
            assert r.status == 404                       # a plug has no motion sensor
        async with s.get(f"{api}/devices/00AA00AA00AA") as r:
            assert r.status == 404


async def test_gen1_sleepers_can_wake_periodically():
    async with Fleet(["SHHT-1"], sleepers_wake_every=0.2) as fleet:
        ht = fleet.devices[0]
        assert isinstance(ht, ShellyGen1) and not ht.awake
        assert await until(lambda: ht.awake, timeout=2)
        assert ht.act_reasons == ["sensor"]


def test_simulate_command_lists_models(capsys):
    call_command("simulate", "--list")
    out = capsys.readouterr().out
    assert "SHSW-PM" in out and "WS2" in out and "Default mix" in out


async def test_simulate_command_runs_announces_and_stops_on_ctrl_c():
    async with udp_inbox() as inbox:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(REPO / "manage.py"), "simulate", "--mix", "WS2,SHSW-PM,SHHT-1",
            "--announce-to", f"127.0.0.1:{inbox.port}", "--announce-interval", "0.1", "--seed", "5",
            cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            lines = []
            while True:
                line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
                assert line, (lines, (await proc.stderr.read()).decode())
                lines.append(line)
                if "running" in line:
                    break
            out = "".join(lines)
            assert "Switch CH v2" in out and "Shelly H&T" in out and "Control API" in out
            data, _ = await inbox.next(5)
            assert len(data) == 8 and data[6] == 106
            proc.send_signal(signal.SIGINT)
            rest = (await asyncio.wait_for(proc.stdout.read(), 10)).decode()
            assert await asyncio.wait_for(proc.wait(), 10) == 0
            assert "Stopping" in rest
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


def test_simulate_command_refuses_lan_targets():
    from django.core.management.base import CommandError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CommandError, match="loopback"):
            call_command("simulate", "--announce-to", "192.0.2.1:7979")
        with pytest.raises(CommandError, match="loopback"):
            call_command("simulate", "--host", "0.0.0.0")
        with pytest.raises(CommandError, match="unknown model"):
            call_command("simulate", "--mix", "WS2,FRIDGE")


async def test_a_device_that_cannot_start_stops_the_others():
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        fleet = Fleet(["WS2", "WSE", "SHSW-PM"], base_port=port)
        with pytest.raises(OSError):
            await fleet.start()
        assert all(d._site is None for d in fleet.devices)
    finally:
        taken.close()
