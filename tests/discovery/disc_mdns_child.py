"""Runs inside the private network namespace (see disc_netns.py): simulated Shelly devices
of every generation serve HTTP on their own 127.0.0.x:80 and announce themselves over mDNS
exactly as the real ones do; our browser must find each one once, by MAC. Prints JSON."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time


async def main() -> dict:
    assert os.environ.get("HOMEDASH_PRIVATE_NETNS") == "1", "only inside the private namespace"
    from devices.discovery.identify import make_probe_client
    from devices.discovery.mdns import ShellyBrowser
    from devices.simulator.shelly_gen1 import ShellyGen1
    from devices.simulator.shelly_rpc import ShellyRpc
    from devices.simulator import mdns as sim_mdns

    devices = [
        ShellyGen1("SHSW-PM", host="127.0.0.11", port=80),
        ShellyGen1("SHSW-25", host="127.0.0.12", port=80),
        ShellyRpc("SNSW-001P16EU", host="127.0.0.13", port=80, name="1PM Plus"),
        ShellyRpc("SPSW-104PE16EU", host="127.0.0.14", port=80, name="4PM Pro"),
        ShellyRpc("S3SW-001P16EU", host="127.0.0.15", port=80, name="1PM Gen3"),
        ShellyRpc("S4SW-001P16EU", host="127.0.0.16", port=80, name="1PM Gen4", password="garten-42"),
    ]
    expected = {d.mac: (getattr(d, "gen", 1), d.host) for d in devices}
    for device in devices:
        await device.start()
    found: list[dict] = []
    all_found = asyncio.Event()

    async def on_found(candidate) -> None:
        found.append({"mac": candidate.mac, "generation": candidate.info.generation, "host": candidate.host,
                      "port": candidate.port, "model": candidate.info.model, "confirmed": candidate.confirmed,
                      "auth": candidate.info.auth_enabled})
        if {f["mac"] for f in found} >= set(expected):
            all_found.set()

    advertisement = await sim_mdns.advertise(devices, "127.0.0.1")
    started = time.monotonic()
    async with make_probe_client() as client:
        browser = ShellyBrowser(client, on_found, interfaces=["127.0.0.1"], allow_loopback=True)
        await browser.start()
        try:
            await asyncio.wait_for(all_found.wait(), 20)
        except TimeoutError:
            pass
        elapsed = time.monotonic() - started
        # Give duplicates (the second instance of each Gen2+ device, re-announcements) a
        # moment to arrive and be folded.
        await asyncio.sleep(1.0)
        await browser.stop()
        stats = {"sightings": browser.sightings, "probes": browser.probes, "dropped": browser.dropped}
    await advertisement.close()
    for device in devices:
        await device.stop()
    return {
        "expected": {mac: {"generation": gen, "host": host} for mac, (gen, host) in expected.items()},
        "found": found,
        "instances": len(advertisement.names),
        "seconds": round(elapsed, 2),
        **stats,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
    sys.stdout.flush()
