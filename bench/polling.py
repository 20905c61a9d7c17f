"""Item 3 — polling cost, at two levels.

*Drivers* (`bench/drivers_poll.py`, run here several times, each run with a fresh
simulated fleet in a subprocess): half myStrom Switch CH v2, half Shelly 1PM (Gen1); every
client polls every device back to back, one request in flight per device, for a fixed time,
and its CPU time (`time.process_time()` of the harness, which runs nothing else meanwhile)
is divided by the polls it made. The peers poll the same fleet in the same run:
python-mystrom `get_state()` and aioshelly `BlockDevice.update_status()`, both on aiohttp.
As root every device gets its own loopback address on port 80 (both peers ignore ports).
"Maximum sustainable polls/s on one core" is derived: 1000 / (CPU s per 1000 polls); the
measured rates are bounded by the one-process simulator, not by the clients.

*Runtime*: a real `manage.py serve` following N adopted devices (half myStrom switches,
half Shelly 1PM Gen1) at their 5 s poll interval, as a household would run it: polling,
parsing, state store, publisher (rendering the cards of what changed), persister (state,
readings once a minute, batches every 2 s). After a warm-up, the serve process's CPU
(`/proc/<pid>/stat`) is read over consecutive windows that together span more than a
minute (so the once-a-minute readings are in); the polls are counted by the simulator.
"""

from __future__ import annotations

import asyncio
import time

from bench.common import Figure, Section, Server, SimHouse, fmt, median, work_dir

CLIENTS = {
    "homedash MyStrom.report()": ("homedash_mystrom", "myStrom"),
    "homedash ShellyGen1.poll()": ("homedash_gen1", "Gen1"),
    "homedash MyStrom.report(), httpcore transport": ("homedash_mystrom_stock", "myStrom"),
    "python-mystrom get_state()": ("pymystrom", "myStrom"),
    "aioshelly BlockDevice.update_status()": ("aioshelly", "Gen1"),
}


def drivers(mode) -> tuple[list[Figure], str]:
    from bench import drivers_poll

    p = mode.polling
    per_1000: dict[str, list[float]] = {}
    per_req: dict[str, list[float]] = {}
    rates: dict[str, list[float]] = {}
    notes: dict[str, str] = {}
    errors: dict[str, int] = {}
    for _ in range(p["drivers_runs"]):
        results = asyncio.run(drivers_poll.run(p["drivers_devices"], p["drivers_seconds"]))
        for r in results:
            if r.client.startswith("(") or r.seconds == 0 or not r.polls:
                notes.setdefault(r.client, r.note)
                continue
            per_1000.setdefault(r.client, []).append(r.cpu / r.polls * 1000)
            per_req.setdefault(r.client, []).append(r.cpu / r.requests * 1000)
            rates.setdefault(r.client, []).append(r.polls / r.seconds)
            errors[r.client] = errors.get(r.client, 0) + r.errors
            notes[r.client] = r.note
    figures: list[Figure] = []
    rows = ["| client | CPU s / 1000 polls (median) | CPU s / 1000 requests | polls/s measured | errors | note |",
            "|---|---:|---:|---:|---:|---|"]
    for client, values in per_1000.items():
        figures.append(Figure(f"{client}: CPU s per 1000 polls", "s", values, digits=3, note=notes.get(client, "")))
        rows.append(f"| {client} | {fmt(median(values), 3)} | {fmt(median(per_req[client]), 3)} "
                    f"| {fmt(median(rates[client]), 0)} | {errors.get(client, 0)} | {notes.get(client, '')} |")
    for client, note in notes.items():
        if client not in per_1000:
            rows.append(f"| {client} | | | | | {note} |")
    for client, values in per_1000.items():
        if client.startswith("homedash") and "httpcore" not in client:
            figures.append(Figure(f"{client}: max sustainable polls/s on one core (derived)", "polls/s",
                                  [1000 / v for v in values], lower_is_better=False, digits=0))
    # Against the peers: the same kind of device, the same run.
    pairs = [("homedash MyStrom.report()", "python-mystrom get_state()"),
             ("homedash ShellyGen1.poll()", "aioshelly BlockDevice.update_status()")]
    for ours, peer in pairs:
        if ours in per_1000 and peer in per_1000:
            ratios = [a / b for a, b in zip(per_1000[ours], per_1000[peer])]
            figures.append(Figure(f"CPU per poll, {ours.split()[1]} / {peer.split()[0]}", "×", ratios,
                                  "< 1 (less CPU per poll than the peer)", 1.0, digits=2,
                                  note="per run, same fleet"))
    table = (f"Drivers, {p['drivers_devices']} devices, {p['drivers_seconds']:g} s per client, "
             f"{p['drivers_runs']} runs:\n\n" + "\n".join(rows))
    return figures, table


def runtime(mode) -> tuple[list[Figure], str]:
    p = mode.polling
    n, interval = p["runtime_devices"], p["runtime_interval"]
    work = work_dir("polling-runtime")
    with SimHouse(["WS2", "SHSW-PM"], n, work, poll_interval=interval) as sim:
        server = Server(work / "data")
        server.prepare(sim.rows)
        with server:
            server.start()
            time.sleep(p["runtime_warmup"])
            cpu_pct, ms_per_poll, polls_per_s = [], [], []
            for _ in range(p["runtime_windows"]):
                s0, c0, t0 = sim.request(cmd="stats"), server.cpu(), time.monotonic()
                time.sleep(p["runtime_window"])
                s1, c1, t1 = sim.request(cmd="stats"), server.cpu(), time.monotonic()
                polls = s1["requests"] - s0["requests"]
                cpu = c1 - c0
                cpu_pct.append(100 * cpu / (t1 - t0))
                polls_per_s.append(polls / (t1 - t0))
                ms_per_poll.append(1000 * cpu / polls if polls else float("nan"))
            rss = server.rss()
    expected = n / interval
    figures = [
        Figure(f"serve following {n} devices at {interval:g} s: CPU", "% of one core", cpu_pct,
               "< 25 % (for 1000 devices)", 25.0 if n >= 1000 else None, digits=1,
               note=f"{p['runtime_windows']} windows of {p['runtime_window']:g} s"),
        Figure(f"serve: polls/s achieved (expected {expected:g})", "polls/s", polls_per_s, digits=0),
        Figure("serve: CPU s per 1000 polls (everything included)", "s", ms_per_poll, digits=3),
    ]
    if n < 1000:
        figures[0].target = f"< 25 % at 1000 devices (this run: {n})"
    table = (f"Runtime: {n} devices ({n - n // 2} myStrom WS2, {n // 2} Shelly 1PM Gen1), poll interval {interval:g} s, "
             f"serve RSS at the end {rss:.0f} MB. CPU % per window: " + ", ".join(fmt(x, 1) for x in cpu_pct) + ".")
    return figures, table


def run(mode) -> Section:
    section = Section("polling", "3. Polling cost: homedash's drivers and runtime beside python-mystrom and aioshelly",
                      __doc__.split("\n\n", 1)[1])
    started = time.monotonic()
    parts = []
    try:
        figs, table = drivers(mode)
        section.figures += figs
        parts.append(table)
    except Exception as exc:  # noqa: BLE001 - the runtime half still tells something
        parts.append(f"Drivers: not measured ({type(exc).__name__}: {exc}).")
        section.error = f"drivers: {type(exc).__name__}: {exc}"
    figs, table = runtime(mode)
    section.figures += figs
    parts.append(table)
    section.extra = "\n\n".join(parts)
    section.seconds = time.monotonic() - started
    return section
