"""Micro-benchmark: poll a simulated fleet with homedash's drivers and with the peer
libraries (python-mystrom, aioshelly on aiohttp), and print a markdown table.

    python bench/drivers_poll.py --devices 200 --seconds 10

Half the fleet are myStrom Switch CH v2, half Shelly Plus-era Gen1 1PMs (SHSW-PM). The
simulated fleet runs in a *subprocess*, so the CPU time measured here (``time.process_time``
of this process) is the client's alone. Every device is polled back to back by one worker
(one request in flight per device, as the runtime does); polls/s is therefore bounded by
how fast the single-process simulator answers, and the fair comparison is the CPU column.

As root the simulator gives every device its own loopback address on port 80
(127.0.x.y:80), which python-mystrom and aioshelly's Gen1 client need (both ignore ports).
Without root the devices share 127.0.0.1 on distinct ports; python-mystrom is then
pointed at the port by replacing its base URL, and aioshelly's Gen1 run is skipped.

python-mystrom sends ``Accept-Encoding`` (aiohttp's default), which the switches' CORS
protection refuses, so protection is switched off on every simulated switch for its run
(and back on afterwards). python-mystrom's ``get_state()`` also fetches ``/api/v1/info``
on every poll, so it makes two requests per poll; the table shows both.

Everything binds and talks to loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# ----------------------------------------------------------------------------- fleet (child)


FIRST_ADDRESS = "127.0.77.1"  # not the simulator's default 127.0.1.1, which the tests use


async def serve_fleet(devices: int, shared_address: bool = False, first_address: str = FIRST_ADDRESS) -> None:
    """Child process: start the fleet, print it as one JSON line, run until stdin closes."""
    import logging

    logging.disable(logging.WARNING)
    from devices.simulator.fleet import Fleet, may_own_addresses

    half = devices // 2
    specs = ["WS2"] * (devices - half) + ["SHSW-PM"] * half
    own = may_own_addresses() and not shared_address
    async with Fleet(specs, per_device_addresses=own, seed=7, first_address=first_address) as fleet:
        rows = [
            {"vendor": d.vendor, "model": d.model, "host": d.host, "port": d.port, "mac": d.mac}
            for d in fleet.devices
        ]
        print(json.dumps({"port80": own, "devices": rows}), flush=True)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = await reader.readline()
            if not line:
                break
            if line.strip() == b"cpu":
                print(json.dumps({"cpu": time.process_time()}), flush=True)


# ----------------------------------------------------------------------------- measuring


@dataclass
class Result:
    client: str
    devices: int
    seconds: float
    polls: int
    requests: int
    errors: int
    cpu: float
    note: str = ""

    def row(self) -> str:
        rate = self.polls / self.seconds if self.seconds else 0.0
        req_rate = self.requests / self.seconds if self.seconds else 0.0
        per_1000 = self.cpu / self.polls * 1000 if self.polls else float("nan")
        per_1000_req = self.cpu / self.requests * 1000 if self.requests else float("nan")
        return (
            f"| {self.client} | {self.devices} | {self.polls} | {self.errors} | {rate:,.0f} | {req_rate:,.0f} "
            f"| {per_1000:.3f} | {per_1000_req:.3f} | {self.note} |"
        )


Poller = Callable[[], Awaitable[int]]  # one poll; returns how many HTTP requests it made


async def measure(name: str, pollers: list[Poller], seconds: float, note: str = "") -> Result:
    # Warm up: one poll each (connection set-up, lazy imports) outside the measurement.
    await asyncio.gather(*(p() for p in pollers), return_exceptions=True)
    loop = asyncio.get_running_loop()
    stop = loop.time() + seconds
    polls = requests = errors = 0

    async def worker(poll: Poller) -> None:
        nonlocal polls, requests, errors
        while loop.time() < stop:
            try:
                made = await poll()
                requests += made
                polls += 1
            except Exception:  # noqa: BLE001 - peers raise all sorts; count, back off a bit
                errors += 1
                await asyncio.sleep(0.05)

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(p) for p in pollers))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return Result(name, len(pollers), wall, polls, requests, errors, cpu, note)


async def set_protection(rows: list[dict], enabled: bool) -> None:
    from devices.drivers import MyStrom, make_client

    async with make_client(max_connections=len(rows) or 1) as client:
        await asyncio.gather(*(MyStrom(client, r["host"], r["port"]).set_protection(enabled) for r in rows))


async def run(devices: int, seconds: float, shared_address: bool = False,
              first_address: str = FIRST_ADDRESS) -> list[Result]:
    import aiohttp
    import httpx

    from devices.drivers import MyStrom, ShellyGen1, make_client

    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--devices", str(devices), "--first-address", first_address]
        + (["--shared-address"] if shared_address else []),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO, text=True,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        fleet = json.loads(child.stdout.readline())
        rows = fleet["devices"]
        port80 = fleet["port80"]
        switches = [r for r in rows if r["vendor"] == "mystrom"]
        gen1 = [r for r in rows if r["vendor"] == "shelly"]
        results: list[Result] = []

        # -- homedash drivers (httpx)
        limits = dict(max_connections=len(rows), max_keepalive=len(rows))
        async with make_client(**limits, timeout=httpx.Timeout(10.0)) as client:
            ours_m = [MyStrom(client, r["host"], r["port"]) for r in switches]

            def mystrom_poll(d: MyStrom) -> Poller:
                async def poll() -> int:
                    await d.report()
                    return 1
                return poll

            results.append(await measure("homedash MyStrom.report()", [mystrom_poll(d) for d in ours_m], seconds,
                                         "parsed to ChannelState, energy via boot_id"))
            ours_g = [ShellyGen1(client, r["host"], r["port"]) for r in gen1]

            def gen1_poll(d: ShellyGen1) -> Poller:
                async def poll() -> int:
                    await d.poll()
                    return 1
                return poll

            results.append(await measure("homedash ShellyGen1.poll()", [gen1_poll(d) for d in ours_g], seconds,
                                         "parsed to channels + press events"))

        # -- the same driver on httpx's stock httpcore transport, to show what the lean
        #    transport saves
        async with make_client(**limits, timeout=httpx.Timeout(10.0), lean=False) as client:
            stock = [MyStrom(client, r["host"], r["port"]) for r in switches]
            results.append(await measure("homedash MyStrom.report(), httpcore transport",
                                         [mystrom_poll(d) for d in stock], seconds, "make_client(lean=False)"))

        # -- python-mystrom (aiohttp); protection off, it sends Accept-Encoding
        from pymystrom.switch import MyStromSwitch
        from yarl import URL

        await set_protection(switches, False)
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=len(rows))) as session:
                peers = []
                for r in switches:
                    sw = MyStromSwitch(r["host"], session)
                    if r["port"] != 80:
                        sw.uri = URL.build(scheme="http", host=r["host"], port=r["port"])
                    peers.append(sw)

                def pm_poll(sw: MyStromSwitch) -> Poller:
                    async def poll() -> int:
                        await sw.get_state()
                        return 2  # /report + /api/v1/info
                    return poll

                results.append(await measure("python-mystrom get_state()", [pm_poll(s) for s in peers], seconds,
                                             "CORS protection off; 2 requests per poll"))
        finally:
            await set_protection(switches, True)

        # -- aioshelly Gen1 (aiohttp)
        if port80:
            from aioshelly.block_device import COAP, BlockDevice
            from aioshelly.common import ConnectionOptions

            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=len(rows))) as session:
                coap = COAP()  # never initialised: no CoAP socket, HTTP polling only
                blocks = [BlockDevice(coap, session, ConnectionOptions(r["host"], device_mac=r["mac"])) for r in gen1]
                await asyncio.gather(*(b.update_shelly() for b in blocks), return_exceptions=True)

                def aio_poll(b: BlockDevice) -> Poller:
                    async def poll() -> int:
                        await b.update_status()
                        return 1
                    return poll

                results.append(await measure("aioshelly BlockDevice.update_status()", [aio_poll(b) for b in blocks],
                                             seconds, "JSON only, no channel parsing"))
        else:
            results.append(Result("aioshelly BlockDevice.update_status()", len(gen1), 0, 0, 0, 0, 0.0,
                                  "skipped: needs port 80 per device (run as root)"))

        child.stdin.write("cpu\n")
        child.stdin.flush()
        sim_cpu = json.loads(child.stdout.readline())["cpu"]
        results.append(Result("(simulator process, whole run)", len(rows), 0, 0, 0, 0, sim_cpu,
                              f"{sim_cpu:.1f} CPU s serving all runs"))
        return results
    finally:
        if child.stdin:
            child.stdin.close()
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--shared-address", action="store_true",
                        help="all devices on 127.0.0.1 with distinct ports, even as root")
    parser.add_argument("--first-address", default=FIRST_ADDRESS,
                        help=f"first per-device loopback address as root (default {FIRST_ADDRESS})")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve_fleet(args.devices, args.shared_address, args.first_address))
        return
    results = asyncio.run(run(args.devices, args.seconds, args.shared_address, args.first_address))
    print(f"\nPolling {args.devices} simulated devices ({args.devices - args.devices // 2} myStrom switches, "
          f"{args.devices // 2} Shelly Gen1) for {args.seconds:g} s per client; "
          f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; simulator in a subprocess.\n")
    print("| client | devices | polls | errors | polls/s | requests/s | client CPU s / 1000 polls | client CPU s / 1000 requests | note |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for result in results:
        if result.client.startswith("(simulator"):
            print(f"| {result.client} | {result.devices} | | | | | | | {result.note} |")
        elif result.seconds == 0:
            print(f"| {result.client} | {result.devices} | | | | | | | {result.note} |")
        else:
            print(result.row())


if __name__ == "__main__":
    main()
