"""Item 1 — push latency: a simulated Gen2+ device changes state → the card in a real
browser shows it.

The household is N Shelly Plus 1PM (Gen2, one switch each; homedash follows them over
their websocket). The simulator process flips every device's switch once per period,
phases spread evenly (50 devices, 1 s: 50 changes/s), and marks each change with
``time.time()`` inside ``set_output`` before the device pushes its NotifyStatus. Each page
(Playwright + Debian Chromium, one browser context per "browser", all in one Chromium
process) runs a MutationObserver installed before any page script; it notes
``performance.timeOrigin + performance.now()`` when a card (``article#channel-<pk>``) is
inserted or changes its classes, and whether it shows the switch on. A change's latency
is the first time the card shows the new state after the mark, matched in order (see
``match``); all processes share the machine's clock.

"10 browsers open" is measured two ways. *All Chromium pages on this machine*: ten
visible pages in one headless Chromium, which on a 2-core machine renders all ten
itself (a page costs Chromium ~3 ms of CPU per frame here even for a one-word change,
so 10 pages × 50 changes/s ask for more than the two cores). *1 Chromium page + 9
sessions*: one page measures while nine more logged-in websocket sessions on
``/ws/home/`` (the fan-out item's clients, in a thread of the harness) receive and read
every card a browser would — the server carries ten open pages, and the other nine
pages' rendering, which in a household happens on nine other devices, stays off this
machine. The sessions' own delivery delays are in the table too.
"""

from __future__ import annotations

import bisect
import os
import time
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.common import (Figure, Section, Server, SimHouse, cpu_seconds, descendants_cpu, fmt, login, median,
                          percentile, work_dir)

MODEL = "SNSW-001P16EU"   # Shelly Plus 1PM
KEY = "switch:0"

OBSERVER = """
window.__obs = [];
window.__snapshots = 0;
// The page says when it has applied a live message (the snapshot on connect is the first).
document.addEventListener('homedash:live', () => { window.__snapshots++; });
new MutationObserver((mutations) => {
  const t = (performance.timeOrigin + performance.now()) / 1000;
  const card = (n) => n.nodeType === 1 && n.tagName === 'ARTICLE' && n.id && n.id.startsWith('channel-');
  for (const m of mutations) {
    // A card is either replaced (inserted anew) or updated in place (its class changes).
    if (m.type === 'attributes') {
      if (card(m.target)) window.__obs.push([m.target.id, t, m.target.classList.contains('is-on')]);
    } else {
      for (const n of m.addedNodes) if (card(n)) window.__obs.push([n.id, t, n.classList.contains('is-on')]);
    }
  }
}).observe(document, {childList: true, subtree: true, attributes: true, attributeFilter: ['class']});
"""


def match(marks: list[tuple[float, bool]], obs: list[tuple[float, bool]]) -> tuple[list[float], int]:
    """Latencies (s) of one channel's changes, and how many were never shown.

    marks: (time, new state) in time order, alternating states (every change flips the
    switch); obs: (time, state shown) in arrival order. One page receives its updates in
    order over one websocket, so the states it showed, reduced to the moments the shown
    state changed, are the changes in order minus those it never got. Each shown change
    is matched with the earliest pending change to that state made before it was shown;
    pending changes skipped over were never shown (coalesced or lost), and so are changes
    still pending at the end. Re-renders showing the same state are ignored."""
    if not marks:
        return [], 0
    latencies, lost = [], 0
    shown = not marks[0][1]          # the state before the first change
    i = 0
    for t_obs, state in obs:
        if state is shown or i >= len(marks):
            continue
        j = i
        while j < len(marks) and not (marks[j][1] is state and marks[j][0] <= t_obs):
            j += 1
        if j == len(marks):
            continue                 # a stale re-render from before the first change
        lost += j - i
        latencies.append(t_obs - marks[j][0])
        shown = state
        i = j + 1
    lost += len(marks) - i
    return latencies, lost


def match_all(changes: list[list], observations: list[list], ids: dict[tuple[str, str], int]
              ) -> tuple[list[float], int, int]:
    """changes: [mac, channel, on, t, source] from the simulator; observations: [dom id, t,
    on]. Returns (latencies in ms, lost, total changes)."""
    marks: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    for mac, channel, on, t, _source in changes:
        pk = ids.get((mac, f"switch:{channel}"))
        if pk is not None:
            marks[f"channel-{pk}"].append((t, bool(on)))
    seen: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    for dom_id, t, on in observations:
        seen[dom_id].append((t, bool(on)))
    latencies, lost, total = [], 0, 0
    for dom_id, channel_marks in marks.items():
        channel_marks.sort()
        obs = sorted(seen.get(dom_id, []))
        lat, gone = match(channel_marks, obs)
        latencies += [x * 1000 for x in lat]
        lost += gone
        total += len(channel_marks)
    return latencies, lost, total


class Gen2Household:
    """Simulator process + `serve` with the devices adopted + logged-in cookies."""

    def __init__(self, devices: int, name: str = "gen2", profile: Path | None = None) -> None:
        self.profile = profile
        self.devices = devices
        self.work = work_dir(name)
        self.stack = ExitStack()

    def __enter__(self) -> Gen2Household:
        try:
            self.sim = self.stack.enter_context(SimHouse([MODEL], self.devices, self.work, poll_interval=5.0))
            self.server = Server(self.work / "data", profile=self.profile)
            self.server.prepare(self.sim.rows)
            self.stack.enter_context(self.server)
            self.server.start()
            self.macs = [r["mac"] for r in self.sim.rows]
            self.ids = self.server.wait_for_channels({(m, KEY) for m in self.macs})
            self.wait_online()
            self.cookies = login(self.server.url)
        except BaseException:
            self.stack.close()
            raise
        return self

    def wait_online(self, timeout: float = 60.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = httpx.get(self.server.url + "/healthz", timeout=5).json()
            if body.get("devices", {}).get("online", 0) >= self.devices:
                return
            time.sleep(0.2)

    def __exit__(self, *exc: Any) -> None:
        self.stack.close()


class Browsers:
    """n logged-in pages on the home page, each in its own browser context (own
    websocket), in one headless Chromium."""

    def __init__(self, playwright, url: str, cookies: dict[str, str]) -> None:
        from bench.common import chromium_path
        from homedash.chromium import CHROMIUM_ARGS

        self.url = url
        self.cookies = cookies
        self.browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        self.pages: list = []
        self.contexts: list = []
        self.errors: list[str] = []

    def open(self, n: int, cards: int) -> None:
        fresh = []
        while len(self.pages) < n:
            context = self.browser.new_context(viewport={"width": 1280, "height": 900})
            context.add_cookies([{"name": k, "value": v, "url": self.url} for k, v in self.cookies.items()])
            context.add_init_script(OBSERVER)
            page = context.new_page()
            page.on("pageerror", lambda exc: self.errors.append(str(exc)))
            page.goto(self.url + "/")
            self.contexts.append(context)
            self.pages.append(page)
            fresh.append(page)
        # Connected: the page applied the snapshot it gets on connect.
        # (Polled from here: the page's CSP forbids wait_for_function's string eval.)
        for page in fresh:
            deadline = time.monotonic() + 30
            while page.evaluate("window.__snapshots") < 1:
                if time.monotonic() > deadline:
                    raise RuntimeError("a page never applied its snapshot (no homedash:live event in 30 s)")
                time.sleep(0.05)

    def close_extra(self, keep: int) -> None:
        while len(self.pages) > keep:
            self.pages.pop().close()
            self.contexts.pop().close()

    def take(self) -> list[list[list]]:
        """Observations of every page since the last take."""
        return [page.evaluate("(() => { const o = window.__obs; window.__obs = []; return o; })()")
                for page in self.pages]

    def close(self) -> None:
        self.browser.close()


class Sessions:
    """Further open pages as the server sees them: logged-in websocket sessions on
    ``/ws/home/`` (the fan-out item's clients, on their own event loop in a thread of the
    harness), each getting and reading every card a browser would. With them, one
    Chromium page measures what a household with that many open pages sees, without the
    other pages' rendering competing for this machine's two cores — in a household every
    browser renders on its own device."""

    def __init__(self, house: Gen2Household, n: int) -> None:
        import asyncio
        import threading

        from bench.fanout import Client

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="sessions", daemon=True)
        self.thread.start()
        self.clients = [Client() for _ in range(n)]
        self.stop_event = asyncio.Event()
        url = house.server.url.replace("http://", "ws://") + "/ws/home/"
        headers = {"Origin": house.server.url, "Cookie": "; ".join(f"{k}={v}" for k, v in house.cookies.items())}

        async def start():
            import aiohttp

            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
            self.tasks = [asyncio.ensure_future(c.run(self.session, url, headers, house.devices, self.stop_event))
                          for c in self.clients]
            await asyncio.wait_for(asyncio.gather(*(c.snapshot.wait() for c in self.clients)), 60)
            broken = [c.closed for c in self.clients if c.closed]
            if broken:
                raise RuntimeError(f"{len(broken)} sessions failed to connect: {broken[0]}")

        self.call(start())

    def call(self, coro, timeout: float = 90.0):
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def take(self) -> list[list[list]]:
        async def take():
            out = [c.records for c in self.clients]
            for c in self.clients:
                c.records = []
            return out
        return self.call(take())

    def close(self) -> None:
        import asyncio

        async def stop():
            self.stop_event.set()
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            await self.session.close()
        try:
            self.call(stop(), timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


def storm_run(house: Gen2Household, browsers: Browsers, seconds: float, period: float, drain: float,
              sessions: Sessions | None = None) -> dict:
    browsers.take()
    if sessions is not None:
        sessions.take()
    pid = house.server.pid
    chrome0 = descendants_cpu(os.getpid(), "chrom")
    cpu0, t0 = cpu_seconds(pid), time.time()
    house.sim.request(cmd="storm", macs=house.macs, period=period, seconds=seconds)
    storm = house.sim.request(cmd="wait_storm")
    time.sleep(drain)  # let the last changes arrive
    wall = time.time() - t0
    cpu = cpu_seconds(pid) - cpu0
    chrome = descendants_cpu(os.getpid(), "chrom") - chrome0
    changes = house.sim.request(cmd="changes", since=t0)["changes"]
    pages = browsers.take()
    latencies, lost, total = [], 0, 0
    for obs in pages:
        lat, gone, n = match_all(changes, obs, house.ids)
        latencies += lat
        lost += gone
        total += n
    session_latencies, session_lost = [], 0
    for obs in (sessions.take() if sessions is not None else []):
        lat, gone, _n = match_all(changes, obs, house.ids)
        session_latencies += lat
        session_lost += gone
    return {"latencies": latencies, "lost": lost, "total": total, "flips": storm.get("flips", 0),
            "session_latencies": session_latencies, "session_lost": session_lost,
            "sim_late_ms": storm.get("late_ms"), "cpu_pct": 100 * cpu / wall, "chromium_pct": 100 * chrome / wall, "neg": sum(1 for x in latencies if x < 0)}


FLOOR_PAGE = """<!doctype html><meta charset="utf-8"><title>floor</title><p id="word">0</p>
<script>let n = 0; setInterval(() => { document.getElementById('word').textContent = String(++n); }, 20);</script>"""


def chromium_floor(browsers: Browsers, seconds: float) -> float:
    """Chromium's own cost of showing 50 changes a second: an empty page (not homedash's)
    that changes one word every 20 ms, % of one core over all Chromium processes. Ten
    visible pages cost at least ten times this, whatever the page does."""
    context = browsers.browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.set_content(FLOOR_PAGE)
        time.sleep(1.0)
        c0, t0 = descendants_cpu(os.getpid(), "chrom"), time.time()
        time.sleep(seconds)
        return 100 * (descendants_cpu(os.getpid(), "chrom") - c0) / (time.time() - t0)
    finally:
        context.close()


def setup_label(pages: int, sessions: int) -> str:
    if sessions:
        return (f"{pages + sessions} browsers ({pages} Chromium page{'s' if pages > 1 else ''} + "
                f"{sessions} session{'s' if sessions > 1 else ''})")
    if pages == 1:
        return "1 browser"
    return f"{pages} browsers (all Chromium pages on this machine)"


def run(mode, house: Gen2Household | None = None) -> Section:
    from playwright.sync_api import sync_playwright

    p = mode.push
    section = Section("push", "1. Push latency: device change → DOM updated in a real browser", __doc__.split("\n\n", 1)[1])
    started = time.monotonic()
    with ExitStack() as stack:
        if house is None:
            house = stack.enter_context(Gen2Household(p["devices"]))
        pw = stack.enter_context(sync_playwright())
        browsers = Browsers(pw, house.server.url, house.cookies)
        stack.callback(browsers.close)
        rows = ["| setup | run | changes × Chromium pages | median ms | p90 ms | p99 ms | max ms | not shown "
                "| sessions: median / p99 ms, not shown | serve CPU % of one core | Chromium CPU % (all its processes) |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
        for pages, extra in p["setups"]:
            browsers.close_extra(pages)
            browsers.open(pages, cards=house.devices)
            sessions = Sessions(house, extra) if extra else None
            try:
                medians, p99s, losts, cpus, chromes = [], [], [], [], []
                for r in range(p["runs"]):
                    res = storm_run(house, browsers, p["seconds"], p["period"], p["drain"], sessions)
                    lat, slat = res["latencies"], res["session_latencies"]
                    medians.append(median(lat))
                    p99s.append(percentile(lat, 99))
                    losts.append(res["lost"])
                    cpus.append(res["cpu_pct"])
                    chromes.append(res["chromium_pct"])
                    others = (f"{fmt(median(slat))} / {fmt(percentile(slat, 99))}, {res['session_lost']}"
                              if sessions is not None else "")
                    rows.append(f"| {setup_label(pages, extra)} | {r + 1} | {res['total']} | {fmt(median(lat))} "
                                f"| {fmt(percentile(lat, 90))} | {fmt(percentile(lat, 99))} "
                                f"| {fmt(max(lat) if lat else float('nan'))} | {res['lost']} | {others} "
                                f"| {fmt(res['cpu_pct'], 0)} | {fmt(res['chromium_pct'], 0)} |")
            finally:
                if sessions is not None:
                    sessions.close()
            changes_per_s = house.devices / p["period"]
            label = f"{setup_label(pages, extra)}, {house.devices} devices × 1 change/{p['period']:g} s"
            section.figures += [
                Figure(f"median, {label}", "ms", medians, "≤ 25 ms", 25.0),
                Figure(f"p99, {label}", "ms", p99s, "≤ 100 ms", 100.0),
                Figure(f"changes not shown, {label}", "", losts, "0", 0.0, digits=0,
                       note=f"{changes_per_s:g} changes/s for {p['seconds']:g} s per run"),
                Figure(f"serve CPU, {label}", "% of one core", cpus, digits=0),
                Figure(f"Chromium CPU (all its processes), {label}", "% of one core", chromes, digits=0,
                       note="the machine has 200 %"),
            ]
        browsers.close_extra(0)
        floors = [chromium_floor(browsers, min(p["seconds"], 8.0)) for _ in range(p["runs"])]
        section.figures.append(Figure(
            "Chromium CPU for an empty page changing one word 50×/s (not homedash)", "% of one core", floors, digits=0,
            note="the floor per visible page on this machine; ten such pages need ten times this"))
        if browsers.errors:
            rows.append("")
            rows.append(f"Page errors seen: {len(browsers.errors)} (first: `{browsers.errors[0][:160]}`)")
        section.extra = ("Per run (every change × every Chromium page is one sample; the sessions column is "
                         "the same for the websocket sessions):\n\n" + "\n".join(rows))
    section.seconds = time.monotonic() - started
    return section
