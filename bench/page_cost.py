"""Item 6 — page cost: the home page's server time and size at two household sizes.

Households of the household mix (see item 5) adopted into rooms and followed live; the
page is fetched by the logged-in staff user (who sees every room) over one keep-alive
connection, after a warm-up request, one request at a time. The warm-up request itself is
reported apart as *first page*: the first page after start, when every card is drawn
(nothing cached yet; the same happens to the cards that changed while no page was open).
*Server time* is the time to
the last byte as the client sees it on loopback (the server is otherwise only doing its
background device work). *Server CPU per page* is the serve process's CPU during the
requests minus its background rate measured just before, divided by the requests.
*HTML* is the page's size uncompressed (what the targets count); *sent* is what went over
the wire to this client, which accepts gzip like every browser (homedash compresses pages
for clients that do). "Channels" are the cards on the page.
"""

from __future__ import annotations

import re
import time

from bench.common import Figure, Section, Server, SimHouse, fmt, login, median, percentile, work_dir
from bench.footprint import household_models


def measure(server: Server, cookies: dict, requests: int) -> dict:
    import httpx

    with httpx.Client(base_url=server.url, cookies=cookies, timeout=30.0,
                      headers={"Accept-Encoding": "gzip, deflate"}) as client:
        start = time.perf_counter()
        first = client.get("/")
        first.raise_for_status()
        first_ms = (time.perf_counter() - start) * 1000
        body = first.content  # decoded: the HTML itself
        sent = first.num_bytes_downloaded
        # Background CPU rate of the serve process (device work) just before.
        c0, t0 = server.cpu(), time.monotonic()
        time.sleep(2.0)
        background = (server.cpu() - c0) / (time.monotonic() - t0)
        times = []
        c0, t0 = server.cpu(), time.monotonic()
        for _ in range(requests):
            start = time.perf_counter()
            reply = client.get("/")
            reply.read()
            times.append((time.perf_counter() - start) * 1000)
        wall = time.monotonic() - t0
        cpu = server.cpu() - c0 - background * wall
    return {"times": times, "first_ms": first_ms, "cpu_ms": max(0.0, cpu) / requests * 1000, "bytes": len(body),
            "sent": sent, "encoding": first.headers.get("content-encoding", "none"),
            "cards": len(re.findall(rb'<article id="channel-', body))}


def run(mode, households: list | None = None) -> Section:
    p = mode.page
    section = Section("page", "6. Page cost: the home page", __doc__.split("\n\n", 1)[1])
    started = time.monotonic()
    rows = ["| household | channels on the page | time ms (median, p90, max) | first page ms | server CPU ms / page "
            "| HTML kB | sent kB (encoding) |",
            "|---|---:|---|---:|---:|---:|---:|"]
    results = []
    if households:
        for house in households:
            results.append((f"{house.devices} Gen2 devices", measure(house.server, house.cookies, p["requests"])))
    for n in p["sizes"]:
        work = work_dir(f"page-{n}")
        with SimHouse(household_models(), n, work) as sim:
            server = Server(work / "data")
            server.prepare(sim.rows)
            with server:
                server.start()
                server.wait_channel_count(n, timeout=120, settle=4.0)
                results.append((f"{n} devices (household mix)", measure(server, login(server.url), p["requests"])))
    for label, r in results:
        t = r["times"]
        rows.append(f"| {label} | {r['cards']} | {fmt(median(t))}, {fmt(percentile(t, 90))}, {fmt(max(t))} "
                    f"| {fmt(r['first_ms'])} | {fmt(r['cpu_ms'])} | {fmt(r['bytes'] / 1000)} "
                    f"| {fmt(r['sent'] / 1000)} ({r['encoding']}) |")
    biggest = max((r["cards"] for _, r in results), default=0)
    for label, r in results:
        big = r["cards"] == biggest and r["cards"] >= 200
        section.figures += [
            Figure(f"home page time, {r['cards']} channels", "ms", r["times"], "≤ 100 ms at 300 channels" if big else "",
                   100.0 if big else None, spread_kind="p10–p90", note=f"{len(r['times'])} requests; {label}"),
            Figure(f"home page HTML, {r['cards']} channels", "kB", [r["bytes"] / 1000], "≤ 300 kB" if big else "",
                   300.0 if big else None, digits=0,
                   note=f"uncompressed; sent {r['sent'] / 1000:.0f} kB ({r['encoding']})"),
        ]
    section.extra = "\n".join(rows)
    section.seconds = time.monotonic() - started
    return section
