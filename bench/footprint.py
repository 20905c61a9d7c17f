"""Item 5 — footprint: resident memory of `serve` and its start-up time.

`serve` runs as a subprocess with its own data directory (SQLite, in-memory channel layer,
discovery off because nothing is on a LAN here). *Idle*: the household user and rooms,
no devices. *With N devices*: N simulated devices of the household mix (every kind
homedash handles: myStrom switches, bulb, strip, PIR, button; Shelly Gen1 relays, dimmer,
RGBW, roller, H&T; Gen2+ Plus/Pro/Gen3/Gen4 switches, cover, EM, sensors — repeated up to
N) adopted into rooms, followed at their 5 s poll interval or over their websocket. RSS is
`VmRSS` from `/proc/<pid>/status`, sampled once a second after the household has settled;
the table gives the median of the samples. Start-up time is from `Popen` to the first
`/healthz` answer that says the runtime is running (polled every 20 ms), including the
`migrate` check `serve` does first; it is measured on repeated starts of the same data
directory.
"""

from __future__ import annotations

import time

from bench.common import Figure, Section, Server, SimHouse, fmt, median, work_dir


def household_models() -> list[str]:
    from devices.simulator.fleet import household_mix

    return [str(s) for s in household_mix()]


def measure(server: Server, settle: float, samples: int) -> list[float]:
    time.sleep(settle)
    values = []
    for _ in range(samples):
        values.append(server.rss())
        time.sleep(1.0)
    return values


def run(mode) -> Section:
    f = mode.footprint
    section = Section("footprint", "5. Footprint: memory and start-up", __doc__.split("\n\n", 1)[1])
    started = time.monotonic()
    rows = ["| household | starts | ready after s (each start) | RSS MB (samples) | channels |",
            "|---|---:|---|---|---:|"]
    # Idle.
    work = work_dir("footprint-idle")
    server = Server(work / "data")
    server.prepare([])
    ready, rss = [], []
    for i in range(f["idle_starts"]):
        with server:
            ready.append(server.start())
            if i == 0:
                rss = measure(server, f["settle"], f["samples"])
    rows.append(f"| idle (no devices) | {len(ready)} | {', '.join(fmt(x, 2) for x in ready)} "
                f"| {', '.join(fmt(x, 0) for x in rss)} | 0 |")
    section.figures += [
        Figure("RSS idle", "MB", [median(rss)], digits=0, note="median of the samples"),
        Figure("ready after start, idle", "s", ready, "≤ 3 s", 3.0, digits=2),
    ]
    for n in f["sizes"]:
        work = work_dir(f"footprint-{n}")
        with SimHouse(household_models(), n, work) as sim:
            server = Server(work / "data")
            server.prepare(sim.rows)
            starts = 3 if n == 200 else 1
            ready, rss, channels = [], [], 0
            for i in range(starts):
                with server:
                    ready.append(server.start())
                    if i == 0:
                        rss = measure(server, f["settle"], f["samples"])
                        (channels,), = server.query("SELECT count(*) FROM devices_channel")
            rows.append(f"| {n} devices (household mix) | {len(ready)} | {', '.join(fmt(x, 2) for x in ready)} "
                        f"| {', '.join(fmt(x, 0) for x in rss)} | {channels} |")
            target, limit = ("≤ 100 MB", 100.0) if n == 200 else ("", None)
            section.figures.append(Figure(f"RSS with {n} devices adopted", "MB", [median(rss)], target, limit, digits=0,
                                          note=f"{channels} channels; median of {len(rss)} samples"))
            if n == 200:
                section.figures.append(Figure(f"ready after start, {n} devices", "s", ready, "≤ 3 s", 3.0, digits=2))
            elif ready:
                section.figures.append(Figure(f"ready after start, {n} devices", "s", ready, digits=2))
    section.extra = ("For comparison: Home Assistant's measured steady state on a Raspberry Pi is about 485 MB "
                     "(the issue's figure, not measured here).\n\n" + "\n".join(rows))
    section.seconds = time.monotonic() - started
    return section
