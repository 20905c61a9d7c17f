"""One request at a time per device, whoever in homedash asks.

A simulated myStrom switch and a simulated Shelly Plus 1PM answer every request after
300 ms (long enough for anything that does not wait its turn to overlap). homedash runs
as under ``serve``, in this process: the device runtime polling the switch and following
the Shelly over its websocket, discovery hearing the switch's real UDP announcements and
probing it, the debug-log hub. While all that runs, a member switches both devices through
the real command view, staff start the Shelly's debug log through the real log view, a
credential check and an "add by address" probe hit both devices and the runtime runs a
safety poll. The simulators count requests in flight (HTTP and websocket RPC frames
alike): never more than one, and every one of those actions really happened.

The gate's own rules (one gate per MAC and address, probes of an address share it,
several event loops, weakly held, not reentrant) are tested directly below.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import threading
import time

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.test import AsyncClient

from devices import discovery as discovery_pkg
from devices import runtime as runtime_module
from devices.credentials import Credentials
from devices.debuglogs import install_hub
from devices.discovery.service import current as current_discovery
from devices.drivers.gate import gate_for, stats
from devices.models import Channel, Device, Room
from devices.runtime.setup import build_runtime
from devices.simulator.mystrom import MyStromSwitch
from devices.simulator.shelly_rpc import ShellyRpc
from devices.views import verify_credentials
from tests.waiting import until

LATENCY = 0.3  # seconds every simulated answer takes


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ----------------------------------------------------------------------------- the gate itself


async def _hold(gate, log: list, name: str, seconds: float = 0.02) -> None:
    async with gate:
        log.append(("in", name))
        await asyncio.sleep(seconds)
        log.append(("out", name))


def _never_overlapped(log: list) -> bool:
    inside = 0
    for what, _ in log:
        inside += 1 if what == "in" else -1
        if inside > 1:
            return False
    return True


async def test_one_gate_per_device_and_probes_of_its_address_share_it():
    device = gate_for(mac="aa:bb:cc:00:11:22", host="192.168.1.50", port=80)
    assert device is gate_for(mac="AABBCC001122", host="192.168.1.50")  # one spelling of MAC and address
    probe = gate_for(host="192.168.1.50", port=80)        # discovery: only the address is known
    same_mac_elsewhere = gate_for(mac="AABBCC001122", host="192.168.1.77", port=80)  # it moved
    other = gate_for(host="192.168.1.51")
    for pair in ((device, probe), (device, same_mac_elsewhere)):
        log: list = []
        await asyncio.gather(*(_hold(g, log, str(i)) for i, g in enumerate(pair * 4)))
        assert _never_overlapped(log), log
    assert device.max_in_flight == probe.max_in_flight == same_mac_elsewhere.max_in_flight == 1
    turns = stats()
    assert turns["mac:AABBCC001122"]["taken"] == 12       # the device, wherever it was
    assert turns["addr:192.168.1.50:80"]["taken"] == 12   # whoever talked to that address
    assert turns["addr:192.168.1.77:80"]["taken"] == 4

    # Other addresses are other devices: their turns run alongside (the old address of a
    # device that moved is no longer where it is).
    for pair in ((device, other), (probe, same_mac_elsewhere)):
        log = []
        await asyncio.gather(_hold(pair[0], log, "a", 0.05), _hold(pair[1], log, "b", 0.05))
        assert not _never_overlapped(log)

    with pytest.raises(ValueError):
        gate_for()


async def test_a_gate_is_not_reentrant_and_says_so():
    gate = gate_for(mac="AABBCC001133", host="192.168.1.52")
    async with gate:
        with pytest.raises(RuntimeError, match="not reentrant"):
            async with gate_for(host="192.168.1.52"):  # a caller taking it around a driver that takes it
                pass
    assert not gate.busy()  # and the failed attempt left nothing held
    async with asyncio.timeout(1):
        async with gate:
            pass


async def test_gates_are_weakly_held_and_work_on_every_event_loop():
    errors: list[BaseException] = []

    def other_loop() -> None:
        async def use() -> None:
            gate = gate_for(mac="AABBCC001144", host="192.168.1.53")
            log: list = []
            await asyncio.gather(*(_hold(gate, log, str(i), 0.005) for i in range(5)))
            assert _never_overlapped(log)

        try:
            asyncio.run(use())
        except BaseException as exc:  # reported in the test's own thread
            errors.append(exc)

    thread = threading.Thread(target=other_loop)
    thread.start()
    thread.join(10)
    assert not errors, errors
    # The same device on this loop: no "bound to a different event loop".
    gate = gate_for(mac="AABBCC001144", host="192.168.1.53")
    log: list = []
    await asyncio.gather(*(_hold(gate, log, str(i), 0.005) for i in range(3)))
    assert _never_overlapped(log)

    # A scan of a /22 leaves nothing behind once its probes are done.
    probes = [gate_for(host=f"10.9.{i // 256}.{i % 256}") for i in range(1024)]
    assert len([k for k in stats() if k.startswith("addr:10.9.")]) == 1024
    del probes, gate
    gc.collect()
    assert not [k for k in stats() if k.startswith("addr:10.9.")]


# ----------------------------------------------------------------------------- all of homedash


def _staff():
    return get_user_model().objects.create_user("gatekeeper", password="pw-gate-123456", is_staff=True)


@pytest.mark.django_db(transaction=True)
async def test_a_slow_device_never_sees_two_requests_from_homedash(tmp_path):
    udp_port = free_udp_port()
    switch = MyStromSwitch("ch_v2", relay=False, announce_to=("127.0.0.1", udp_port), announce_interval=0.25)
    plug = ShellyRpc("SNSW-001P16EU", drift_period=None, minute_period=0, debug_rate=20.0)
    for sim in (switch, plug):
        sim.faults.latency = LATENCY
        await sim.start()

    room = await Room.objects.acreate(name="Kitchen")
    d_switch = await Device.objects.acreate(
        mac=switch.mac, vendor="mystrom", model_code="106", host=switch.host, port=switch.port, adopted=True,
        room=room, poll_interval=0.3, raw_info={"type": 106}, name="Kettle")
    d_plug = await Device.objects.acreate(
        mac=plug.mac, vendor="shelly", generation=plug.gen, model_code=plug.model, model_name=plug.label,
        host=plug.host, port=plug.port, adopted=True, room=room, name="Coffee machine", firmware=plug.ver)
    relay = await Channel.objects.acreate(device=d_switch, key="relay", kind="switch", room=room)
    plug_switch = await Channel.objects.acreate(device=d_plug, key="switch:0", kind="switch", room=room)
    staff = await sync_to_async(_staff)()

    # homedash as `serve` assembles it: runtime, discovery (UDP only, probing the switch
    # at the port it serves on, again every half second), debug-log hub.
    rt = build_runtime(manager_options={"start_spread": 0.1, "flush_period": 0.2})
    settings = {"DISCOVERY": True, "DISCOVERY_BIND": "127.0.0.1", "DISCOVERY_PORT": udp_port,
                "ALLOW_LOOPBACK_DEVICES": True}
    for name, service in discovery_pkg.services(settings, mdns=False, device_port=switch.port,
                                                probe_window=0.5, refresh_after=0.5):
        rt.add_service(name, service)
    hub = install_hub(rt, state_path=tmp_path / "debuglogs.json", flush_period=0.05, grace=30.0)
    runtime_module.install(rt)
    await rt.start()
    manager = rt.manager
    started = time.monotonic()
    try:
        assert await until(lambda: all(manager.store.get(d.pk) and manager.store.get(d.pk).online
                                       for d in (d_switch, d_plug)), timeout=8)
        assert await until(lambda: current_discovery() is not None and current_discovery().udp.probes >= 1, timeout=5)
        disc = current_discovery()
        probes_before = disc.udp.probes

        client = AsyncClient()
        await client.aforce_login(staff)

        async def command(channel: Channel, action: str):
            response = await client.post(f"/channels/{channel.pk}/command", {"action": action})
            return response.status_code, response.content.decode()

        async def start_log():
            response = await client.post(f"/devices/{d_plug.pk}/logs/start", {"source": "websocket"})
            return response.status_code

        plug_session = manager.sessions[d_plug.pk]
        results = await asyncio.gather(
            command(relay, "on"),                                           # a member's command (myStrom)
            command(plug_switch, "on"),                                     # ... and over the Gen2 websocket
            start_log(),                                                    # Sys.GetConfig + Sys.SetConfig
            verify_credentials(d_switch, Credentials(token="")),            # a credential check, each device
            verify_credentials(d_plug, Credentials(password="")),           # (HTTP RPC beside the websocket)
            disc.add(plug.host, plug.port),                                 # "add by address": a probe
            plug_session.poll_once(),                                       # the runtime's safety poll
        )
        (relay_status, relay_html), (plug_status, plug_html), log_status, check_switch, check_plug, added, _ = results

        # Every action happened.
        assert relay_status == 200 and "failed" not in relay_html.lower(), relay_html[:300]
        assert plug_status == 200 and "failed" not in plug_html.lower(), plug_html[:300]
        assert switch.relay is True
        assert plug.switches[0].output is True
        assert log_status == 302
        assert plug.config["sys"]["debug"]["websocket"]["enable"] is True
        entry = hub.logs[d_plug.pk]
        assert await until(lambda: entry.state == "streaming" and len(entry.ring) >= 3, timeout=5), entry.state
        assert check_switch is None and check_plug is None
        assert added.mac == plug.mac
        # Discovery kept probing the switch meanwhile: its info endpoint was asked, through the
        # probe client, while the runtime polled /report.
        assert await until(lambda: disc.udp.probes > probes_before, timeout=3)
        paths = [what for _, what, _ in switch.request_log]
        assert any("/api/v1/info" in p for p in paths) and any("/report" in p for p in paths)
        assert any("/relay" in p for p in paths)

        # The log stops as a user stops it: Sys.SetConfig puts the setting back, beside polls.
        response = await client.post(f"/devices/{d_plug.pk}/logs/stop")
        assert response.status_code == 302
        assert plug.config["sys"]["debug"]["websocket"]["enable"] is False
        await asyncio.sleep(2 * LATENCY)  # a few more polls and probes after everything

        # Never two requests at once, at either device, from any part of homedash.
        assert switch.max_in_flight == 1, list(switch.overlaps)
        assert plug.max_in_flight == 1, list(plug.overlaps)
        # The gates saw the same: each device's turn was taken by all those parts.
        assert gate_for(mac=switch.mac, host=switch.host, port=switch.port).max_in_flight == 1
        plug_gate = gate_for(mac=plug.mac, host=plug.host, port=plug.port)
        assert plug_gate is plug_session.adapter.gate and plug_gate.max_in_flight == 1
        assert plug.requests_total >= 7 and switch.requests_total >= 8
    finally:
        await rt.stop()
        runtime_module.install(None)
        for sim in (switch, plug):
            await sim.stop()
    assert time.monotonic() - started < 20
