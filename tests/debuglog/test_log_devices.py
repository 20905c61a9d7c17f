"""Debug logs against simulated Shelly devices, through the real views, the real log
socket (ASGI application, session cookie, Origin check) and a hub in this process's
runtime: settings switched on by a start and put back by a stop or by the last viewer
leaving; protected, open and old-firmware streams; UDP; one upstream for many viewers;
a reboot; drops under a flood; who is refused; Gen1."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from django.test import AsyncClient

from devices.debuglogs import LogHub
from devices.logviews import IN_FLIGHT_FRAMES, REFUSED_WORDS
from devices.models import AuditEntry, Device
from devices.simulator.shelly_gen1 import ShellyGen1
from debuglog_helpers import Reader, adopt, cast, open_log, running_hub, shelly, until

pytestmark = pytest.mark.django_db(transaction=True)
PW = "Debug-Pw-4711"


@contextlib.asynccontextmanager
async def online(*sims):
    for sim in sims:
        await sim.start()
    try:
        yield sims
    finally:
        for sim in sims:
            await sim.stop()


async def client_for(user) -> AsyncClient:
    client = AsyncClient()
    await client.aforce_login(user)
    return client


def ws_enabled(sim) -> bool:
    return sim.config["sys"]["debug"]["websocket"]["enable"]


def texts(hub: LogHub, pk: int) -> list[str]:
    return [e.line.text for e in hub.logs[pk].ring] if pk in hub.logs else []


async def audit(action: str) -> list[tuple[str, str]]:
    return [(a.result, a.detail) async for a in AuditEntry.objects.filter(action=action).order_by("ts", "pk")]


async def test_start_switches_the_stream_on_and_stop_puts_the_settings_back(tmp_path):
    people = await cast()
    sim = shelly(password=PW)
    async with online(sim), running_hub(tmp_path) as hub:
        device = await adopt(sim, name="Hall plug", room=people["room"], password=PW)
        client = await client_for(people["staff"])
        assert not ws_enabled(sim)

        answer = await client.post(f"/devices/{device.pk}/logs/start", {"source": "websocket"}, headers={"HX-Request": "true"})
        assert answer.status_code == 200 and b'id="log-controls-' in answer.content and b"Stop and restore" in answer.content
        assert ws_enabled(sim)
        remembered = json.loads((tmp_path / "debuglogs.json").read_text())[str(device.pk)]
        assert remembered["previous"]["websocket"] == {"enable": False} and remembered["touched"] == ["websocket"]
        # The digest-protected stream opens and lines arrive.
        assert await until(lambda: hub.logs[device.pk].state == "streaming" and len(hub.logs[device.pk].ring) >= 4)
        assert hub.status(device.pk)["open_without_auth"] is False
        assert len(sim._debug_peers) == 1

        answer = await client.post(f"/devices/{device.pk}/logs/stop", headers={"HX-Request": "true"})
        assert answer.status_code == 200 and b"Start" in answer.content
        assert not ws_enabled(sim)
        assert await until(lambda: not sim._debug_peers)
        assert json.loads((tmp_path / "debuglogs.json").read_text()) == {}
        assert any("settings are back as they were" in t for t in texts(hub, device.pk))
        assert [r for r, _ in await audit("debuglog.start")] == ["ok"]
        assert [r for r, _ in await audit("debuglog.stop")] == ["ok"]

        # A device that had its stream on already keeps it on afterwards.
        sim.apply_config("sys", {"debug": {"websocket": {"enable": True}}})
        await client.post(f"/devices/{device.pk}/logs/start", {"source": "websocket"})
        await client.post(f"/devices/{device.pk}/logs/stop")
        assert ws_enabled(sim)
        # Without htmx the forms still work: back to the page they came from.
        answer = await client.post(f"/devices/{device.pk}/logs/start", {"source": "websocket", "next": "/logs/?device=1"})
        assert answer.status_code == 302 and answer["Location"] == "/logs/?device=1"
        answer = await client.post(f"/devices/{device.pk}/logs/stop", {"next": "https://evil.example/"})
        assert answer["Location"] == f"/devices/{device.pk}/"


async def test_open_and_old_firmware_streams_are_called_out(tmp_path):
    people = await cast()
    open_stream = shelly(password=PW, debug_log_open=True)
    old = shelly(password=PW, fw="0.14.1")
    wrong = shelly(password=PW)
    async with online(open_stream, old, wrong), running_hub(tmp_path) as hub:
        d_open = await adopt(open_stream, name="Open plug", room=people["room"], password=PW)
        d_old = await adopt(old, name="Old plug", room=people["room"], password=PW)
        d_wrong = await adopt(wrong, name="Wrong plug", room=people["room"], password="not-the-password")
        client = await client_for(people["staff"])
        # Old firmware: the page warns before anything is started.
        panel = await client.get(f"/devices/{d_old.pk}/logs/")
        assert b"serves its debug log to anyone on the network" in panel.content
        panel = await client.get(f"/devices/{d_open.pk}/logs/")
        assert b"serves its debug log to anyone" not in panel.content

        assert (await hub.start(d_open.pk, by="anna"))["ok"]
        assert await until(lambda: hub.logs[d_open.pk].state == "streaming")
        assert hub.status(d_open.pk)["open_without_auth"] is True
        assert any("streams its debug log to anyone" in t for t in texts(hub, d_open.pk))
        panel = await client.get(f"/devices/{d_open.pk}/logs/")
        assert b"serves its debug log to anyone on the network" in panel.content

        assert (await hub.start(d_old.pk))["ok"]
        assert await until(lambda: hub.logs[d_old.pk].state == "streaming" and len(hub.logs[d_old.pk].ring) > 2)

        # A refused password is said once and not retried (fw 2.x would lock us out).
        result = await hub.start(d_wrong.pk)
        assert not result["ok"] and "wrong password" in result["error"]
        assert not ws_enabled(wrong) and hub.status(d_wrong.pk)["active"] is False


async def test_udp_source_points_the_device_at_us_and_back(tmp_path):
    people = await cast()
    sim = shelly(password=PW, debug_rate=40.0)
    async with online(sim), running_hub(tmp_path, udp_port=0, udp_bind="127.0.0.1") as hub:
        device = await adopt(sim, name="Garden pump", room=people["room"], password=PW)
        client = await client_for(people["reader"])
        answer = await client.post(f"/devices/{device.pk}/logs/start", {"source": "udp"}, headers={"HX-Request": "true"})
        assert answer.status_code == 200, answer.content
        assert sim.config["sys"]["debug"]["udp"]["addr"] == f"127.0.0.1:{hub.udp_port}"
        assert not ws_enabled(sim)
        assert await until(lambda: sum(1 for e in hub.logs[device.pk].ring if not e.note) >= 5)
        udp_line = next(e for e in hub.logs[device.pk].ring if not e.note)
        assert udp_line.line.ts is not None and udp_line.line.ts < 1e6   # UDP carries uptime
        assert "up " in udp_line.html and "Garden pump" in udp_line.html
        await client.post(f"/devices/{device.pk}/logs/stop")
        assert sim.config["sys"]["debug"]["udp"]["addr"] is None
        assert ("ok", "over udp: started") in await audit("debuglog.start")


async def test_two_viewers_share_one_upstream_and_the_last_one_leaving_ends_it(tmp_path):
    people = await cast()
    sim = shelly(password=PW)
    pinned_sim = shelly()
    async with online(sim, pinned_sim), running_hub(tmp_path, grace=0.4) as hub:
        device = await adopt(sim, name="Hall plug", room=people["room"], password=PW)
        other = await adopt(pinned_sim, name="Cellar plug", room=people["room"])
        assert (await hub.start(device.pk, by="anna"))["ok"]
        first, ok1 = await open_log([device.pk], people["staff"])
        second, ok2 = await open_log([device.pk], people["reader"])
        assert ok1 and ok2
        readers = [Reader(first), Reader(second)]
        for reader in readers:
            assert await reader.read(lambda r: len(r.lines) >= 6)
            assert any("debug log started by anna" in t for t in reader.texts())  # the ring came first
        assert len(sim._debug_peers) == 1 and hub.status(device.pk)["viewers"] == 2
        # A third view opened later also starts with what the ring holds.
        third, _ = await open_log([device.pk], people["staff"])
        late = Reader(third)
        assert await late.read(lambda r: any("debug log started" in t for t in r.texts()))
        assert len(sim._debug_peers) == 1
        for communicator in (first, second, third):
            await communicator.disconnect()
        # Nobody watches: after the grace period the settings go back, by itself, audited.
        assert await until(lambda: not ws_enabled(sim), timeout=5)
        assert await until(lambda: not sim._debug_peers)
        for _ in range(100):   # the audit entry is written just after the settings went back
            stops = await audit("debuglog.stop")
            if stops:
                break
            await asyncio.sleep(0.05)
        assert stops and stops[-1][0] == "ok" and "nobody watched" in stops[-1][1]

        # Pinned: nobody watching does not end it.
        assert (await hub.start(other.pk, pinned=True))["ok"]
        await asyncio.sleep(1.0)
        assert ws_enabled(pinned_sim) and hub.status(other.pk)["active"]
        assert (await hub.pin(other.pk, False))["ok"]
        assert await until(lambda: not ws_enabled(pinned_sim), timeout=5)


async def test_a_reboot_drops_the_stream_and_the_log_says_it_reconnected(tmp_path):
    people = await cast()
    sim = shelly(password=PW, reboot_time=0.5)
    async with online(sim), running_hub(tmp_path) as hub:
        device = await adopt(sim, name="Hall plug", room=people["room"], password=PW)
        communicator, _ = await open_log([device.pk], people["staff"])
        reader = Reader(communicator)
        assert (await hub.start(device.pk))["ok"]
        assert await reader.read(lambda r: len(r.lines) >= 3)
        await sim.reboot()
        assert await reader.read(lambda r: any("reconnected after" in t for t in r.texts()), timeout=10)
        assert any("connection dropped" in t for t in reader.texts())
        seen = len(reader.lines)
        assert await reader.read(lambda r: len(r.lines) >= seen + 3)   # and lines flow again
        assert ws_enabled(sim) and len(sim._debug_peers) == 1
        await communicator.disconnect()


async def test_a_flood_drops_lines_but_every_dropped_line_is_reported(tmp_path):
    people = await cast()
    sim = shelly(debug_rate=0)
    async with online(sim), running_hub(tmp_path, ring_size=5000) as hub:
        device = await adopt(sim, name="Noisy plug", room=people["room"])
        communicator, _ = await open_log([device.pk], people["staff"])
        reader = Reader(communicator, ack=False)     # a browser that does not keep up
        await reader.read(timeout=0.3)               # the (empty) ring
        assert (await hub.start(device.pk))["ok"]
        assert await until(lambda: hub.logs[device.pk].state == "streaming")
        flood = 0
        for burst in range(30):
            for _ in range(150):                     # the device's own buffer holds 200
                flood += 1
                sim.log(f"flood {flood}", level=burst % 5)
            await asyncio.sleep(0.03)
        await reader.read(timeout=1.0)
        # Only a few frames were sent ahead of a page that never answered.
        assert reader.frames <= IN_FLIGHT_FRAMES
        reader.ack = True
        for _ in range(reader.frames):
            await communicator.send_to(text_data='{"type":"ack"}')
        total = lambda: hub.logs[device.pk].seq   # noqa: E731 - every line the hub numbered
        assert await reader.read(lambda r: len(r.lines) + r.dropped >= total(), timeout=5)
        await asyncio.sleep(0.3)
        await reader.read(timeout=0.3)
        assert reader.dropped > 0
        assert len(reader.lines) + reader.dropped == total()      # nothing lost unreported
        shown = [int(t.split()[1]) for t in reader.texts() if t.startswith("flood ")]
        assert shown == sorted(shown)                # in order, never duplicated
        await communicator.disconnect()


async def test_who_may_not_read_logs_is_told_so(tmp_path):
    people = await cast()
    sim = shelly()
    async with online(sim), running_hub(tmp_path):
        device = await adopt(sim, name="Hall plug", room=people["room"])
        elsewhere = await Device.objects.acreate(mac="A8032A000001", vendor="shelly", generation=2, host="127.0.0.1",
                                                 port=9, adopted=True, name="Attic")
        outsider = await client_for(people["outsider"])
        page = await outsider.get("/logs/")
        assert page.status_code == 403 and "May read device debug logs" in page.content.decode()
        answer = await outsider.post(f"/devices/{device.pk}/logs/start", {"source": "websocket"})
        assert answer.status_code == 403 and not ws_enabled(sim)
        assert await audit("debuglog.start") == [("denied", "not allowed to read debug logs")]
        assert (await outsider.get(f"/logs/download?device={device.pk}")).status_code == 403
        assert (await outsider.get(f"/devices/{device.pk}/logs/")).status_code == 403

        communicator, connected = await open_log([device.pk], people["outsider"])
        reader = Reader(communicator)
        await reader.read(lambda r: r.closed is not None)
        assert connected and reader.closed == 4403
        assert 'id="log-status"' in reader.raw[0] and "May read device debug logs" in reader.raw[0]
        # The permission is per device too: a reader cannot follow a device they cannot see.
        communicator, _ = await open_log([device.pk, elsewhere.pk], people["reader"])
        reader = Reader(communicator)
        await reader.read(lambda r: r.closed is not None)
        assert reader.closed == 4403
        communicator, _ = await open_log([device.pk], None)
        reader = Reader(communicator)
        await reader.read(lambda r: r.closed is not None)
        assert reader.closed == 4401
        communicator, _ = await open_log([device.pk, 999999], people["staff"])
        reader = Reader(communicator)
        await reader.read(lambda r: r.closed is not None)
        assert reader.closed == 4404

        # Taking the permission away closes an open log socket.
        communicator, connected = await open_log([device.pk], people["reader"])
        reader = Reader(communicator)
        await reader.read(timeout=0.3)
        assert reader.closed is None
        from django.contrib.auth.models import Permission

        permission = await Permission.objects.aget(codename="read_debug_logs")
        await people["reader"].user_permissions.aremove(permission)
        await reader.read(lambda r: r.closed is not None)
        assert reader.closed == 4000

        page = await (await client_for(people["reader"])).get("/logs/")
        assert page.status_code == 403
        assert REFUSED_WORDS[:20] in page.content.decode()


async def test_console_and_download_for_a_permitted_member(tmp_path):
    people = await cast()
    sim = shelly(debug_rate=30)
    async with online(sim), running_hub(tmp_path) as hub:
        device = await adopt(sim, name="Hall <plug>", room=people["room"])
        client = await client_for(people["reader"])
        page = (await client.get(f"/logs/?device={device.pk}")).content.decode()
        assert "Hall &lt;plug&gt;" in page and "<plug>" not in page
        assert f'ws-connect="/ws/logs/?devices={device.pk}"' in page and "js/logs.js" in page
        assert (await hub.start(device.pk))["ok"]
        assert await until(lambda: len(sim._debug_peers) == 1)
        sim.log("boom <img src=x onerror=alert(1)>", level=0)
        assert await until(lambda: any("boom" in t for t in texts(hub, device.pk)))
        answer = await client.get(f"/logs/download?device={device.pk}&level=0")
        assert answer["Content-Type"].startswith("text/plain") and "attachment;" in answer["Content-Disposition"]
        body = answer.content.decode()
        assert "[Hall <plug>] error" in body and "boom <img" in body and " info " not in body
        await hub.stop(device.pk)


async def test_gen1_devices_say_what_their_firmware_offers(tmp_path):
    people = await cast()
    plug = ShellyGen1("SHSW-PM")
    async with online(plug), running_hub(tmp_path) as hub:
        device = await Device.objects.acreate(mac=plug.mac, vendor="shelly", generation=1, model_code="SHSW-PM",
                                              host=plug.host, port=plug.port, adopted=True, room=people["room"],
                                              name="Old relay")
        client = await client_for(people["staff"])
        panel = (await client.get(f"/devices/{device.pk}/logs/")).content.decode()
        assert "Live debug streaming is not available for Gen1 devices" in panel
        page = (await client.get(f"/devices/{device.pk}/logs/file")).content.decode()
        assert "Debug logging is off on this device" in page
        result = await hub.start(device.pk)
        assert not result["ok"] and "Gen2 or newer" in result["error"]
        answer = await client.post(f"/devices/{device.pk}/logs/start", {"source": "websocket"}, headers={"HX-Request": "true"})
        assert b"Gen2 or newer" in answer.content


async def test_a_restart_remembers_what_to_put_back(tmp_path):
    people = await cast()
    pinned = shelly(password=PW)
    crashed = shelly()
    async with online(pinned, crashed):
        d_pinned = await adopt(pinned, name="Pinned plug", room=people["room"], password=PW)
        d_crashed = await adopt(crashed, name="Crashed plug", room=people["room"])
        async with running_hub(tmp_path) as hub:
            assert (await hub.start(d_pinned.pk, pinned=True))["ok"]
            assert (await hub.start(d_crashed.pk))["ok"]
        # A clean stop ends an unpinned log and puts its settings back, but keeps a pinned
        # one's (it is meant to outlive viewers)...
        assert not ws_enabled(crashed)
        assert list(json.loads((tmp_path / "debuglogs.json").read_text())) == [str(d_pinned.pk)]
        assert ws_enabled(pinned)
        # ...and a crash leaves whatever was started: here, as if homedash died mid-log.
        crashed.apply_config("sys", {"debug": {"websocket": {"enable": True}}})
        state = json.loads((tmp_path / "debuglogs.json").read_text())
        state[str(d_crashed.pk)] = {"source": "websocket", "pinned": False, "touched": ["websocket"],
                                    "previous": {"websocket": {"enable": False}, "udp": {"addr": None}}}
        (tmp_path / "debuglogs.json").write_text(json.dumps(state))

        async with running_hub(tmp_path, grace=0.3) as hub:
            # Both carry on streaming after the restart...
            assert await until(lambda: hub.status(d_pinned.pk)["state"] == "streaming")
            assert any("restarted" in t for t in texts(hub, d_pinned.pk))
            # ...the unpinned one ends when nobody watches, and its settings go back.
            assert await until(lambda: not ws_enabled(crashed), timeout=5)
            assert ws_enabled(pinned) and hub.status(d_pinned.pk)["pinned"]
            assert (await hub.stop(d_pinned.pk))["ok"]
            assert not ws_enabled(pinned)
        assert json.loads((tmp_path / "debuglogs.json").read_text()) == {}
