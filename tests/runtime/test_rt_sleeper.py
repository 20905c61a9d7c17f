"""A sleeping Plus H&T end to end: the household asks homedash to point the device's
outbound websocket at it (an explicit action while the device is awake); from then on
every wake reaches the real `serve` and the device shows up online with its readings."""

from __future__ import annotations

import asyncio
import json
import time

import httpx

from devices.simulator.shelly_rpc import ShellyRpc
from tests.servers import LiveServer


async def test_sleeper_reports_through_the_outbound_websocket(tmp_path):
    sensor = ShellyRpc(model="SNSN-0013A", password="Sleepy-Pw-19")
    await sensor.start()
    server = LiveServer(tmp_path / "data")
    server.manage("migrate", "--noinput", "-v0")
    server.manage("shell", "-c", (
        "from devices.models import Device; from devices.credentials import Credentials; "
        f"Device.objects.create(mac='{sensor.mac}', vendor='shelly', generation=2, model_code='SNSN-0013A', "
        f"host='127.0.0.1', port={sensor.port}, adopted=True, raw_info={{'sleep_mode': True}}, "
        "credentials=Credentials(password='Sleepy-Pw-19'))"))
    await asyncio.to_thread(server.start)
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            assert (await client.get("/healthz")).json()["devices"]["online"] == 0  # asleep, never seen
            # The household's explicit action, while the device is awake (a button press).
            sensor.wake(30)  # returns the task of the whole wake; do not wait for it
            for _ in range(100):
                if sensor.awake:
                    break
                await asyncio.sleep(0.05)
            ws_url = server.url.replace("http://", "ws://") + "/shelly/ws"
            out = await asyncio.to_thread(server.manage, "shell", "-c", (
                "import asyncio, json; from devices.models import Device; "
                "from devices.runtime.sessions import DeviceConfig, make_adapter; "
                "from devices.drivers.http import make_client\n"
                "async def main():\n"
                f"    d = await Device.objects.aget(mac='{sensor.mac}')\n"
                "    async with make_client() as c:\n"
                f"        print(json.dumps(await make_adapter(DeviceConfig.from_device(d), c).point_outbound_websocket('{ws_url}')))\n"
                "asyncio.run(main())"))
            assert json.loads(out.strip().splitlines()[-1]) is True  # restart required, device rebooted
            await asyncio.sleep(2.5)  # the reboot it asked for
            await sensor.sleep()
            # Next wake: it connects out, pushes NotifyFullStatus, says Bye.
            sensor.wake(2)
            deadline, devices = time.monotonic() + 15, {}
            while time.monotonic() < deadline:
                devices = (await client.get("/healthz")).json()["devices"]
                if devices["online"] == 1:
                    break
                await asyncio.sleep(0.2)
            assert devices["online"] == 1
    finally:
        await sensor.stop()
        await asyncio.to_thread(server.stop)
