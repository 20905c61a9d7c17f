"""The whole chain in the real `serve` process: a simulated myStrom switch announces itself
over UDP on loopback, discovery records it, auto-adopt hands it to the runtime, and the
runtime follows it — visible from outside through /healthz."""

from __future__ import annotations

import asyncio
import os
import socket
import time

import httpx
import pytest

from devices.simulator.mystrom import MyStromSwitch
from tests.servers import LiveServer


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_announced_device_is_discovered_adopted_and_followed(tmp_path):
    if os.geteuid() != 0 and os.environ.get("HOMEDASH_PRIVATE_NETNS") != "1":
        pytest.skip("a myStrom device answers on port 80 of its own address: needs root or a private namespace")
    udp_port = free_udp_port()
    server = LiveServer(tmp_path / "data", extra_env={
        "HOMEDASH_DISCOVERY": "true", "HOMEDASH_DISCOVERY_PORT": str(udp_port), "HOMEDASH_AUTO_ADOPT": "true",
    })
    await asyncio.to_thread(server.start)
    # Like on a LAN: its own address, port 80 (discovery probes where the packet came from).
    switch = MyStromSwitch("ch_v2", host="127.0.9.41", port=80, announce_to=("127.0.0.1", udp_port),
                           announce_interval=0.3)
    await switch.start()
    try:
        deadline = time.monotonic() + 20
        devices = {}
        async with httpx.AsyncClient(base_url=server.url) as client:
            while time.monotonic() < deadline:
                devices = (await client.get("/healthz")).json()["devices"]
                if devices["online"] == 1:
                    break
                await asyncio.sleep(0.2)
        assert devices == {"adopted": 1, "inbox": 0, "online": 1}
        assert switch.requests_total >= 2 and switch.max_in_flight == 1
    finally:
        await switch.stop()
        code = await asyncio.to_thread(server.stop)
    assert code == 0, server.output
