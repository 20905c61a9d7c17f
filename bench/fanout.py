"""Item 4 — fan-out: many websocket clients on the home page while many devices change.

The household is N Shelly Plus 1PM (Gen2; one switch card each on the home page, so N
channels on the page). C light Python websocket clients (aiohttp, all in the harness
process, logged in as the household's user, ``Origin`` set like a browser) connect to
``/ws/home/`` and wait for their snapshot. Then the simulator flips every device once per
second, phases spread evenly (N changes/s), marking each change in the simulator. Each
client notes ``time.time()`` when a message arrives and which cards it carries in which
state (a regex over the HTML fragment). Delivery delay = arrival − mark; a change is
*lost* for a client if the states that client was shown, in order, skip it
(`bench.push_latency.match`), or if it had not arrived when the run ended (after the drain
time). The publisher coalesces per
device per 100 ms (several changes of one device inside 100 ms leave as one message with
the latest state); with one change per device per second, coalescing merges no two flips,
so the expected loss is 0. CPU of serve, of the simulator and of the harness (the clients)
is read for the storm window.
"""

from __future__ import annotations

import asyncio
import re
import time

from bench.common import Figure, Section, cpu_seconds, fmt, login, median, percentile, profile_cumulative, profile_table
from bench.push_latency import KEY, Gen2Household, match_all

# A card's opening tag, whatever the order of its attributes.
CARD_TAG = re.compile(r'<article\b[^>]*>')
CARD_ID = re.compile(r'\sid="(channel-\d+)"')
CARD_CLASS = re.compile(r'\sclass="([^"]*)"')


def cards_in(html: str) -> list[tuple[str, str]]:
    """(dom id, classes) of every card in a message."""
    found = []
    for tag in CARD_TAG.findall(html):
        dom_id, classes = CARD_ID.search(tag), CARD_CLASS.search(tag)
        if dom_id and classes:
            found.append((dom_id.group(1), classes.group(1)))
    return found


class Client:
    def __init__(self) -> None:
        self.records: list[list] = []
        self.messages = 0
        self.snapshot = asyncio.Event()
        self.closed: str = ""

    async def run(self, session, url: str, headers: dict, cards: int, stop: asyncio.Event) -> None:
        try:
            async with session.ws_connect(url, headers=headers, max_msg_size=16 * 1024 * 1024, heartbeat=None) as ws:
                async for msg in ws:
                    t = time.time()
                    if msg.type != 1:  # aiohttp.WSMsgType.TEXT
                        continue
                    self.messages += 1
                    found = cards_in(msg.data)
                    if not self.snapshot.is_set():
                        if len(found) >= cards:
                            self.snapshot.set()
                        continue
                    for dom_id, classes in found:
                        self.records.append([dom_id, t, "is-on" in classes.split()])
                    if stop.is_set():
                        break
                self.closed = f"closed: {ws.close_code}"
        except Exception as exc:  # noqa: BLE001 - reported in the table
            self.closed = f"{type(exc).__name__}: {exc}"
            self.snapshot.set()


async def storm_runs(house: Gen2Household, f: dict) -> list[dict]:
    import aiohttp

    url = house.server.url.replace("http://", "ws://") + "/ws/home/"
    headers = {"Origin": house.server.url, "Cookie": "; ".join(f"{k}={v}" for k, v in house.cookies.items())}
    stop = asyncio.Event()
    clients = [Client() for _ in range(f["clients"])]
    results = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = []
        for i, client in enumerate(clients):
            tasks.append(asyncio.ensure_future(client.run(session, url, headers, house.devices, stop)))
            if i % 10 == 9:
                await asyncio.sleep(0.05)
        await asyncio.wait_for(asyncio.gather(*(c.snapshot.wait() for c in clients)), 120)
        broken = [c.closed for c in clients if c.closed]
        if broken:
            raise RuntimeError(f"{len(broken)} clients failed to connect: {broken[0]}")
        await asyncio.sleep(1.0)
        sim = house.sim
        for _ in range(f["runs"]):
            for c in clients:
                c.records = []
                c.messages = 0
            s_cpu0, h_cpu0, m_cpu0 = house.server.cpu(), time.process_time(), cpu_seconds(sim.pid)
            t0 = time.time()
            await asyncio.to_thread(sim.request, cmd="storm", macs=house.macs, period=1.0, seconds=f["seconds"])
            storm = await asyncio.to_thread(sim.request, cmd="wait_storm")
            await asyncio.sleep(f["drain"])
            wall = time.time() - t0
            s_cpu, h_cpu, m_cpu = house.server.cpu() - s_cpu0, time.process_time() - h_cpu0, cpu_seconds(sim.pid) - m_cpu0
            changes = (await asyncio.to_thread(sim.request, cmd="changes", since=t0))["changes"]
            latencies, lost, total = [], 0, 0
            for c in clients:
                lat, gone, n = match_all(changes, c.records, house.ids)
                latencies += lat
                lost += gone
                total += n
            results.append({"latencies": latencies, "lost": lost, "total": total, "changes": len(changes),
                            "messages": sum(c.messages for c in clients), "flips": storm.get("flips", 0),
                            "serve_cpu": 100 * s_cpu / wall, "client_cpu": 100 * h_cpu / wall,
                            "sim_cpu": 100 * m_cpu / wall, "wall": wall,
                            "disconnected": sum(1 for c in clients if c.closed)})
            await asyncio.sleep(1.0)
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return results


def profiled_run(house: Gen2Household, f: dict) -> str:
    """The same storm once more with serve under cProfile (after the measured runs: the
    profiler slows serve down), to say what dominates."""
    path = house.work / "serve-fanout.prof"
    house.server.stop()
    house.server.profile = path
    try:
        house.server.start()
        house.wait_online()
        house.cookies = login(house.server.url)
        seconds = f["profile"]
        result = asyncio.run(storm_runs(house, {**f, "runs": 1, "seconds": seconds}))[0]
    finally:
        house.server.stop()
        house.server.profile = None
    parts = profile_cumulative(path, {
        "rendering the cards (publisher → DeviceManager.render)": "devices/runtime/manager.py:render",
        "channel layer group_send (copies to every member)": "channels/layers.py:group_send",
        "consumers forwarding fragments (LiveConsumer.fragment)": "devices/consumers.py:fragment",
        "daphne writing websocket frames (WebSocketProtocol.serverSend)": "daphne/ws_protocol.py:serverSend",
        "device websocket sessions (ShellyRpcSession message handling)": "devices/drivers/shelly_rpc.py:_dispatch",
    })
    total = parts.pop("(everything, wall clock of the profiled process)")
    lines = [f"**Where serve's time goes** (a separate run of {seconds:g} s with serve under cProfile, "
             f"{result['changes']} changes; cProfile slows serve down, so only the shares mean something; "
             f"busy time = everything but waiting in epoll, here {total:.1f} s, start-up included). "
             "Cumulative seconds of the main paths (a path's time includes what it calls; coroutine "
             "time is counted per resumption, so these are indicative):", "",
             "| path | cumulative s | share of busy time |", "|---|---:|---:|"]
    for label, value in parts.items():
        lines.append(f"| {label} | {value:.1f} | {100 * value / total:.0f} % |")
    lines += ["", "Functions with the most own time:", "", profile_table(path)]
    return "\n".join(lines)


def run(mode, house: Gen2Household | None = None) -> Section:
    f = mode.fanout
    section = Section("fanout", "4. Fan-out: websocket clients on the home page while devices change",
                      __doc__.split("\n\n", 1)[1])
    started = time.monotonic()
    own = house is None
    if own:
        house = Gen2Household(f["devices"], name="fanout").__enter__()
    profile = ""
    try:
        results = asyncio.run(storm_runs(house, f))
        if f.get("profile"):
            profile = profiled_run(house, f)
    finally:
        if own:
            house.__exit__(None, None, None)
    n, c = house.devices, f["clients"]
    label = f"{c} clients, {n} channels, {n} changes/s"
    rows = ["| run | changes | deliveries expected | messages received | median delay ms | p90 | p99 | max "
            "| lost | serve CPU % | clients (harness) CPU % | simulator CPU % |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for i, r in enumerate(results):
        lat = r["latencies"]
        rows.append(f"| {i + 1} | {r['changes']} | {r['total']} | {r['messages']} | {fmt(median(lat))} "
                    f"| {fmt(percentile(lat, 90))} | {fmt(percentile(lat, 99))} | {fmt(max(lat) if lat else float('nan'))} "
                    f"| {r['lost']} | {fmt(r['serve_cpu'], 0)} | {fmt(r['client_cpu'], 0)} | {fmt(r['sim_cpu'], 0)} |")
    section.figures = [
        Figure(f"median delivery delay, {label}", "ms", [median(r["latencies"]) for r in results], "≤ 100 ms", 100.0),
        Figure(f"p99 delivery delay, {label}", "ms", [percentile(r["latencies"], 99) for r in results]),
        Figure("changes lost (summed over clients)", "", [r["lost"] for r in results],
               "0 beyond coalescing (expected 0 here)", 0.0, digits=0,
               note="of " + "/".join(str(r["total"]) for r in results) + " deliveries"),
        Figure("serve CPU during the storm", "% of one core", [r["serve_cpu"] for r in results], digits=0),
        Figure("client (harness) CPU during the storm", "% of one core", [r["client_cpu"] for r in results], digits=0,
               note="shares the 2 cores with serve"),
    ]
    section.extra = f"Per run ({f['seconds']:g} s of changes each, then {f['drain']:g} s to drain):\n\n" + "\n".join(rows)
    if profile:
        section.extra += "\n\n" + profile
    section.seconds = time.monotonic() - started
    return section
