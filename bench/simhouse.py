"""Benchmark-only runner of a simulated household in its own process.

    python bench/simhouse.py --models SNSW-001P16EU --count 50 --rows rows.json

Starts ``devices.simulator.fleet.Fleet`` on 127.0.0.1 (ephemeral ports), writes one row per
device (``devices.demo.describe_fleet``: what ``manage.py demo --prepare`` adopts) to
``--rows``, prints one JSON line ``{"ready": ...}`` and then answers JSON-line commands on
stdin, one JSON line each on stdout (logging goes to stderr):

    {"cmd": "storm", "macs": [...], "period": 1.0, "seconds": 10}
        every listed Gen2+ device flips switch 0 once per ``period`` (phases spread evenly),
        in the background; the answer comes at once
    {"cmd": "wait_storm"}              until the storm is over: flips done, worst lateness
    {"cmd": "changes", "since": t}     every switch-output change of a Gen2+ device since
                                       t: [mac, channel, on, time.time(), source]
    {"cmd": "stats"}                   this process's CPU seconds and requests served
    {"cmd": "quit"}

The change time is taken in ``ShellyRpc.set_output`` *before* the device commits the new
state (and pushes its NotifyStatus), so a measured delay includes the simulator's own
push. Everything binds loopback; the process ends when stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "homedash.settings")

CHANGES: list[list] = []


def _hook_set_output() -> None:
    from devices.simulator.shelly_rpc import ShellyRpc

    original = ShellyRpc.set_output

    def set_output(self, channel, on, *, source, toggle_after=None):
        before = self.switches[channel].output
        mark = time.time()
        original(self, channel, on, source=source, toggle_after=toggle_after)
        if before != on:
            CHANGES.append([self.mac, channel, bool(on), mark, source])

    ShellyRpc.set_output = set_output


class House:
    def __init__(self, fleet) -> None:
        self.fleet = fleet
        self.storm_task: asyncio.Task | None = None
        self.storm_result: dict = {}

    async def storm(self, macs: list[str], period: float, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        devices = [self.fleet.by_mac(m) for m in macs]
        n = max(1, len(devices))
        start = loop.time() + 0.05
        flips = 0
        late = 0.0
        end = start + seconds
        k = 0
        while True:
            for i, dev in enumerate(devices):
                at = start + k * period + period * i / n
                if at >= end:
                    break
                delay = at - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                late = max(late, loop.time() - at)
                try:
                    dev.flip(0)
                    flips += 1
                except Exception as exc:  # noqa: BLE001 - report, keep storming
                    print(f"flip {dev.mac}: {exc}", file=sys.stderr)
            else:
                k += 1
                continue
            break
        self.storm_result = {"flips": flips, "late_ms": round(late * 1000, 1)}

    async def handle(self, message: dict) -> dict:
        cmd = message.get("cmd")
        if cmd == "storm":
            self.storm_result = {}
            self.storm_task = asyncio.ensure_future(
                self.storm(list(message["macs"]), float(message.get("period", 1.0)), float(message["seconds"])))
            return {"started": time.time()}
        if cmd == "wait_storm":
            if self.storm_task is not None:
                await self.storm_task
            return dict(self.storm_result)
        if cmd == "changes":
            since = float(message.get("since", 0.0))
            return {"changes": [c for c in CHANGES if c[3] >= since]}
        if cmd == "clear":
            CHANGES.clear()
            return {"ok": True}
        if cmd == "stats":
            return {"cpu": time.process_time(), "requests": sum(d.requests_total for d in self.fleet.devices)}
        return {"error": f"unknown command {cmd!r}"}


async def main(args) -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    import django

    django.setup()
    _hook_set_output()
    from devices.demo import describe_fleet
    from devices.simulator.fleet import Fleet

    models = [m for m in args.models.split(",") if m]
    fleet = Fleet(models, count=args.count, seed=args.seed, update_period=args.update_period)
    await fleet.start()
    try:
        rows = await describe_fleet(fleet)
        for row in rows:
            row["poll_interval"] = args.poll_interval
        Path(args.rows).write_text(json.dumps(rows))
        house = House(fleet)
        # The devices live as long as the process: keep them out of full GC passes, whose
        # pauses would land between a change's mark and its push (serve does the same).
        gc.collect()
        gc.freeze()
        print(json.dumps({"ready": True, "devices": len(fleet.devices), "pid": os.getpid()}), flush=True)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = await reader.readline()
            if not line:
                break
            try:
                message = json.loads(line)
            except ValueError:
                print(json.dumps({"error": "not JSON"}), flush=True)
                continue
            if message.get("cmd") == "quit":
                break
            reply = await house.handle(message)
            print(json.dumps(reply), flush=True)
    finally:
        await fleet.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", required=True, help="comma-separated model codes; repeated up to --count")
    parser.add_argument("--count", type=int, default=None)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--rows", required=True)
    parser.add_argument("--poll-interval", type=float, default=5.0)
    parser.add_argument("--update-period", type=float, default=15.0)
    asyncio.run(main(parser.parse_args()))
