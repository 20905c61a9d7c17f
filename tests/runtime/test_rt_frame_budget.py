"""A Gen2 device (or something posing as it) that streams tens of thousands of frames a
second cannot take the process: past a per-device budget frames are dropped unread and
counted, a device that keeps it up is disconnected and retried after a growing pause, its
card says why, and other devices keep updating meanwhile."""

from __future__ import annotations

import asyncio
import resource
import subprocess
import sys
import threading
import time

import pytest

from devices.drivers import shelly_rpc
from devices.drivers.errors import Flooding
from devices.drivers.shelly_rpc import FRAME_BURST, FRAME_RATE, ShellyRpcSession
from devices.models import Device
from devices.runtime.setup import build_runtime
from devices.simulator.shelly_rpc import ShellyRpc
from tests.waiting import until

pytestmark = pytest.mark.django_db(transaction=True)

# A hand-written Gen2 device in its own process (so the CPU measured here is homedash's):
# it answers GetDeviceInfo and GetStatus, then sends NotifyStatus as fast as the socket
# takes them until the connection closes. One line per event on stdout.
FLOODER = r'''
import asyncio, json, sys
from websockets.asyncio.server import serve

MAC = "A8032ABE54DC"
INFO = {"name": None, "id": "shellyplus1pm-a8032abe54dc", "mac": MAC, "model": "SNSW-001P16EU", "gen": 2,
        "fw_id": "20240625-122918/1.3.3", "ver": "1.3.3", "app": "Plus1PM", "auth_en": False}
STATUS = {"switch:0": {"id": 0, "source": "init", "output": False, "apower": 0.0, "voltage": 230.0},
          "sys": {"mac": MAC, "uptime": 10}}

async def handler(ws):
    print("connect", flush=True)
    sent = 0
    flood = None

    async def flooding():
        nonlocal sent
        while True:
            sent += 1
            await ws.send(json.dumps({"src": INFO["id"], "dst": "x", "method": "NotifyStatus",
                                      "params": {"ts": 1.0, "switch:0": {"id": 0, "apower": sent % 3000}}}))

    try:
        async for message in ws:
            frame = json.loads(message)
            result = INFO if frame.get("method") == "Shelly.GetDeviceInfo" else STATUS
            await ws.send(json.dumps({"id": frame.get("id"), "src": INFO["id"], "dst": frame.get("src"),
                                      "result": result}))
            if frame.get("method") == "Shelly.GetStatus" and flood is None:
                flood = asyncio.ensure_future(flooding())
    except Exception:
        pass
    finally:
        if flood is not None:
            flood.cancel()
        print("closed", sent, flush=True)

async def main():
    async with serve(handler, "127.0.0.1", 0, compression=None, max_queue=None) as server:
        print("port", server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()

asyncio.run(main())
'''


class Flooder:
    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", FLOODER], stdout=subprocess.PIPE, text=True)
        first = self.process.stdout.readline().split()
        assert first and first[0] == "port", first
        self.port = int(first[1])
        self.connects = 0
        self.sent: list[int] = []  # frames sent per closed connection
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            words = line.split()
            if words and words[0] == "connect":
                self.connects += 1
            elif words and words[0] == "closed":
                self.sent.append(int(words[1]))

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)


@pytest.fixture
def flooder():
    device = Flooder()
    yield device
    device.stop()


def _rss_kb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def test_a_flooding_device_is_bounded_and_the_others_keep_updating(flooder):
    rt = build_runtime(manager_options={"start_spread": 0.0, "flush_period": 0.2})
    await rt.start()
    manager, store = rt.manager, rt.manager.store
    other = ShellyRpc("SNSW-001P16EU")
    await other.start()
    try:
        d_other = await Device.objects.acreate(mac=other.mac, vendor="shelly", generation=2, model_code=other.model,
                                               host=other.host, port=other.port, adopted=True, poll_interval=30)
        await manager.reload_device(d_other.pk)
        assert await until(lambda: store.get(d_other.pk) and store.get(d_other.pk).online)

        rss_before = _rss_kb()
        flood = await Device.objects.acreate(mac="A8032ABE54DC", vendor="shelly", generation=2,
                                             model_code="SNSW-001P16EU", host="127.0.0.1", port=flooder.port,
                                             adopted=True, poll_interval=30)
        await manager.reload_device(flood.pk)
        assert await until(lambda: flooder.connects >= 1)
        rpc = manager.sessions[flood.pk].adapter.rpc
        processed = 0

        def count(update) -> None:
            nonlocal processed
            processed += update.kind == "status"

        rpc.subscribe(count)
        cpu0, wall0 = time.process_time(), time.monotonic()

        # While it floods, another device's change still comes through at once.
        await asyncio.sleep(0.5)
        before = store.get(d_other.pk).channels["switch:0"].on
        other.flip(0)
        assert await until(lambda: store.get(d_other.pk).channels["switch:0"].on is (not before), timeout=2)

        # It keeps flooding: disconnected after FLOOD_CLOSE_AFTER, not retried for a while.
        assert await until(lambda: rpc.floods == 1, timeout=shelly_rpc.FLOOD_CLOSE_AFTER + 3)
        flooding_for = time.monotonic() - wall0
        assert await until(lambda: flooder.sent, timeout=5)
        await asyncio.sleep(6.0 - (time.monotonic() - wall0))
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0

        sent = flooder.sent[0]
        assert sent > 20 * (FRAME_BURST + FRAME_RATE * flooding_for), sent  # it really flooded
        assert processed <= FRAME_BURST + FRAME_RATE * flooding_for + 50, (processed, sent)
        assert rpc.frames_dropped > 0
        assert flooder.connects == 1  # no reconnect inside the pause
        assert cpu / wall < 0.6, (cpu, wall)
        assert _rss_kb() - rss_before < 60_000
        # The card says it in words.
        assert isinstance(rpc.last_error, Flooding)
        health = store.get(flood.pk)
        assert await until(lambda: "floods homedash" in (store.get(flood.pk).health.last_error or ""), timeout=3), \
            health.health.last_error
        assert str(int(FRAME_RATE)) in health.health.last_error
    finally:
        await other.stop()
        await rt.stop()


async def test_a_device_that_keeps_flooding_waits_longer_each_time(flooder, monkeypatch):
    monkeypatch.setattr(shelly_rpc, "FLOOD_CLOSE_AFTER", 0.3)
    monkeypatch.setattr(shelly_rpc, "FLOOD_BACKOFF", 0.4)
    session = ShellyRpcSession("127.0.0.1", flooder.port, device="flooder", reconnect_min=0.05)
    connected_at: list[float] = []
    session.subscribe(lambda u: connected_at.append(time.monotonic()) if u.kind == "connected" else None)
    await session.start()
    try:
        assert await until(lambda: session.floods >= 3, timeout=15)
    finally:
        await session.stop()
    assert flooder.connects >= 3
    gaps = [b - a for a, b in zip(connected_at, connected_at[1:])]
    # Pauses of 0.4 then 0.8 s (each with up to half of it taken off as jitter), on top of
    # the 0.3 s over budget before each close.
    assert gaps[0] >= 0.3 + 0.2 and gaps[1] >= 0.3 + 0.4, gaps
    assert isinstance(session.last_error, Flooding) and "trying again in" in str(session.last_error)
