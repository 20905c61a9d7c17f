"""Debug-log throughput: simulated Shelly devices streaming their debug logs through a real
`manage.py serve` to several "browsers" (websocket clients that behave like
static/js/logs.js: they acknowledge every frame), and a markdown table of what arrived.

    python bench/debuglog_throughput.py --quick          # ~20 s: 3 devices x 100 lines/s, 3 browsers
    python bench/debuglog_throughput.py                  # the target: 10 x 200 lines/s, 10 browsers, 10 min

Three processes: the simulated devices (a child of this script, so their CPU is their
own), the server (`serve` on a free loopback port, its CPU and RSS read from /proc), and
this script as the browsers. Every line a device sends carries its number and send time,
so the table can say how many lines each browser showed, how many it was told were
dropped, how many the device itself dropped (its own small buffer, as real firmware
does), how many vanished without a word (target: none), and the device-to-browser delay.

Everything binds and talks to loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

USER, USER_PASSWORD = "bench", "bench-debuglog-pw-1"
LINE = re.compile(r'<span class="log-dev">([^<]*)</span>.*?<span class="log-text">([^<]*)</span>', re.S)
DROPPED = re.compile(r'log-dropped[^"]*"><span class="log-dev">([^<]*)</span><span class="log-text">(\d+) lines? dropped \(([^)<]*)\)')
BENCH = re.compile(r"^bench (\d+) (\d+\.\d+)")


# ----------------------------------------------------------------------------- devices (child)
async def serve_devices(count: int, rate: float) -> None:
    """Child process: N simulated devices; commands on stdin (go, stop, peers, stats)."""
    import logging

    logging.disable(logging.WARNING)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "homedash.settings")
    from devices.simulator.shelly_rpc import ShellyRpc

    sims = [ShellyRpc("SNSW-001P16EU", drift_period=None, minute_period=0, debug_rate=0) for _ in range(count)]
    for sim in sims:
        await sim.start()
    print(json.dumps([{"mac": s.mac, "port": s.port} for s in sims]), flush=True)
    sent = [0] * count
    dropped_seen = [0] * count
    generating = asyncio.Event()

    async def generate(i: int, sim) -> None:
        # Lines in small bursts every 20 ms, at the asked rate on average.
        step, owed, last = 0.02, 0.0, time.monotonic()
        while True:
            await asyncio.sleep(step)
            now = time.monotonic()
            if not generating.is_set():
                last = now
                continue
            owed += (now - last) * rate
            last = now
            while owed >= 1:
                owed -= 1
                sent[i] += 1
                sim.log(f"bench {sent[i]} {time.time():.6f}", level=sent[i] % 3)
            dropped_seen[i] = max(dropped_seen[i], sim.debug_lines_dropped)

    tasks = [asyncio.ensure_future(generate(i, s)) for i, s in enumerate(sims)]
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        command = (await reader.readline()).strip()
        if not command:
            break
        if command == b"go":
            generating.set()
        elif command == b"stop":
            generating.clear()
        elif command == b"peers":
            print(json.dumps([len(s._debug_peers) for s in sims]), flush=True)
        elif command == b"stats":
            print(json.dumps({"sent": sent, "device_dropped": dropped_seen,
                              "cpu": time.process_time()}), flush=True)
    for task in tasks:
        task.cancel()
    for sim in sims:
        await sim.stop()


# ----------------------------------------------------------------------------- browsers
@dataclass
class Browser:
    shown: Counter = field(default_factory=Counter)       # device name -> bench lines shown
    reported: Counter = field(default_factory=Counter)    # device name -> lines reported dropped
    reasons: Counter = field(default_factory=Counter)     # why, in the marker's words -> lines
    delays_ms: Counter = field(default_factory=Counter)   # rounded delay -> count
    frames: int = 0
    bytes: int = 0
    out_of_order: int = 0
    last: dict = field(default_factory=dict)


async def browse(url: str, cookie: str, origin: str, stop: asyncio.Event, browser: Browser) -> None:
    from websockets.asyncio.client import connect

    async with connect(url, additional_headers={"Cookie": cookie, "Origin": origin}, max_size=None,
                       compression=None) as ws:
        while not stop.is_set():
            try:
                frame = await asyncio.wait_for(ws.recv(), 0.5)
            except asyncio.TimeoutError:
                continue
            now = time.time()
            browser.frames += 1
            browser.bytes += len(frame)
            for device, text in LINE.findall(frame):
                match = BENCH.match(unescape(text))
                if match is None:
                    continue
                number, sent_at = int(match.group(1)), float(match.group(2))
                browser.shown[device] += 1
                browser.delays_ms[round((now - sent_at) * 1000)] += 1
                if number <= browser.last.get(device, 0):
                    browser.out_of_order += 1
                browser.last[device] = number
            for device, count, why in DROPPED.findall(frame):
                browser.reported[device] += int(count)
                browser.reasons[why] += int(count)
            await ws.send('{"type":"ack"}')   # what logs.js does after every frame


# ----------------------------------------------------------------------------- server
def proc_sample(pid: int) -> tuple[float, float]:
    """(CPU seconds, RSS MiB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:")) / 1024
    return cpu, rss


def login(base: str):
    import httpx

    client = httpx.Client(base_url=base, trust_env=False)
    client.get("/login/")
    token = client.cookies["csrftoken"]
    answer = client.post("/login/", data={"username": USER, "password": USER_PASSWORD, "csrfmiddlewaretoken": token},
                         headers={"Referer": base + "/login/"})
    if "sessionid" not in client.cookies:
        raise RuntimeError(f"login failed: HTTP {answer.status_code}")
    return client


def pct(values: Counter, q: float) -> float:
    total = sum(values.values())
    if not total:
        return float("nan")
    seen = 0
    for value in sorted(values):
        seen += values[value]
        if seen >= q * total:
            return value
    return max(values)


async def run(args) -> None:
    from tests.servers import LiveServer

    child = subprocess.Popen([sys.executable, __file__, "--devices-child", str(args.devices), "--rate", str(args.rate)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)

    def ask(command: str):
        child.stdin.write(command + "\n")
        child.stdin.flush()
        if command in ("peers", "stats"):
            return json.loads(child.stdout.readline())
        return None

    devices = json.loads(child.stdout.readline())
    # Inside the harness's work directory when run from bench/run.py (removed with it).
    data = Path(tempfile.mkdtemp(prefix="hd-bench-logs-", dir=os.environ.get("HOMEDASH_BENCH_WORK")))
    server = LiveServer(data / "data", extra_env={"HOMEDASH_DEBUG_LOG_GRACE": "30", "HOMEDASH_LOG_LEVEL": "WARNING"})
    try:
        server.manage("migrate", "--noinput", "-v0")
        rows = ";".join(f"{d['mac']}:{d['port']}" for d in devices)
        out = server.manage("shell", "-c", (
            "from django.contrib.auth import get_user_model; from devices.models import Device\n"
            f"get_user_model().objects.create_user('{USER}', password='{USER_PASSWORD}', is_staff=True)\n"
            "pks = []\n"
            f"for i, row in enumerate('{rows}'.split(';')):\n"
            "    mac, port = row.split(':')\n"
            "    pks.append(Device.objects.create(mac=mac, vendor='shelly', generation=2, model_code='SNSW-001P16EU',"
            " host='127.0.0.1', port=int(port), adopted=True, name=f'dev{i:02d}').pk)\n"
            "print(','.join(map(str, pks)))"))
        pks = out.strip().splitlines()[-1]
        await asyncio.to_thread(server.start)
        pid = server.process.pid
        http = await asyncio.to_thread(login, server.url)
        for pk in pks.split(","):
            answer = http.post(f"/devices/{pk}/logs/start", data={"source": "websocket"},
                               headers={"X-CSRFToken": http.cookies["csrftoken"], "Referer": server.url + "/logs/"})
            if answer.status_code != 302:
                raise RuntimeError(f"start failed for device {pk}: HTTP {answer.status_code}")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and ask("peers") != [1] * args.devices:
            await asyncio.sleep(0.2)

        cookie = f"sessionid={http.cookies['sessionid']}"
        ws_url = server.url.replace("http://", "ws://") + f"/ws/logs/?devices={pks}"
        stop = asyncio.Event()
        browsers = [Browser() for _ in range(args.browsers)]
        tasks = [asyncio.ensure_future(browse(ws_url, cookie, server.url, stop, b)) for b in browsers]
        await asyncio.sleep(1.0)                    # the ring replay arrives; then the clock starts
        base = {b_i: (sum(b.shown.values())) for b_i, b in enumerate(browsers)}
        if any(base.values()):
            raise RuntimeError("bench lines before the start: the counts would be off")

        samples: list[tuple[float, float, float]] = []   # (t, cpu s, rss MiB)
        started = time.monotonic()
        samples.append((0.0, *proc_sample(pid)))
        ask("go")
        period = min(10.0, max(1.0, args.seconds / 20))
        while time.monotonic() - started < args.seconds:
            await asyncio.sleep(period)
            samples.append((time.monotonic() - started, *proc_sample(pid)))
        ask("stop")
        await asyncio.sleep(3.0)                    # let what is in flight arrive
        stats = ask("stats")
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for pk in pks.split(","):
            http.post(f"/devices/{pk}/logs/stop", headers={"X-CSRFToken": http.cookies["csrftoken"],
                                                           "Referer": server.url + "/logs/"})
    finally:
        server.stop()
        child.stdin.close()
        child.wait(10)

    report(args, stats, browsers, samples)


def report(args, stats: dict, browsers: list[Browser], samples) -> None:
    sent = sum(stats["sent"])
    device_dropped = sum(stats["device_dropped"])
    shown = [sum(b.shown.values()) for b in browsers]
    reported = [sum(b.reported.values()) for b in browsers]
    # Dropped markers count every kind of line (homedash's notes too); bench lines are
    # nearly all of them, so "unreported" can only be over-, never under-stated here.
    unreported = [max(0, sent - device_dropped - s - r) for s, r in zip(shown, reported)]
    delays = Counter()
    for b in browsers:
        delays.update(b.delays_ms)
    duration = samples[-1][0]
    # CPU per window between samples; "first" and "last" quarter of the run compared.
    windows = [((c2 - c1) / (t2 - t1) * 100, t2) for (t1, c1, _), (t2, c2, _) in zip(samples, samples[1:]) if t2 > t1]
    quarter = max(1, len(windows) // 4)
    cpu_first = statistics.mean(w for w, _ in windows[:quarter])
    cpu_last = statistics.mean(w for w, _ in windows[-quarter:])
    rss = [r for _, _, r in samples]
    rss_q = rss[min(len(rss) - 1, max(1, len(rss) // 4))]
    mean = statistics.mean
    print(f"\nDebug logs: {args.devices} devices x {args.rate:g} lines/s, {args.browsers} browsers, "
          f"{duration:.0f} s (serve on loopback; devices in a separate process)\n")
    print("| measure | value | target |")
    print("|---|---:|---|")
    print(f"| lines sent by the devices | {sent:,} ({sent / max(duration, 1e-9):,.0f}/s) | |")
    print(f"| dropped by the devices themselves (their 200-line buffer) | {device_dropped:,} | |")
    print(f"| shown per browser (mean, min) | {mean(shown):,.0f}, {min(shown):,} | |")
    print(f"| reported as dropped per browser (mean, max) | {mean(reported):,.0f}, {max(reported):,} | |")
    reasons = Counter()
    for b in browsers:
        reasons.update(b.reasons)
    if reasons:
        words = ", ".join(f"{why}: {n / len(browsers):,.0f}" for why, n in reasons.most_common())
        print(f"| why they were dropped (per browser) | {words} | |")
    print(f"| lost without a report (max over browsers) | {max(unreported):,} | 0 |")
    print(f"| out of order / duplicated | {sum(b.out_of_order for b in browsers)} | 0 |")
    print(f"| device-to-browser delay median / p95 / max | {pct(delays, .5):.0f} / {pct(delays, .95):.0f} / "
          f"{max(delays) if delays else float('nan'):.0f} ms | median < 300 ms |")
    print(f"| frames per browser per second | {mean(b.frames for b in browsers) / max(duration, 1e-9):.1f} | |")
    print(f"| server CPU, first / last quarter | {cpu_first:.0f} % / {cpu_last:.0f} % of one core | flat |")
    print(f"| server RSS at start / after a quarter / end / max | {rss[0]:.0f} / {rss_q:.0f} / {rss[-1]:.0f} / "
          f"{max(rss):.0f} MiB | flat |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 devices x 100 lines/s, 3 browsers, 15 s")
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--rate", type=float, default=200.0, help="lines per second per device")
    parser.add_argument("--browsers", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--devices-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.devices_child is not None:
        asyncio.run(serve_devices(args.devices_child, args.rate))
        return
    if args.quick:
        args.devices, args.rate, args.browsers, args.seconds = 3, 100.0, 3, 15.0
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
