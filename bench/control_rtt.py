"""Item 2 — control round trip: click in the browser → the simulated device changed → the
card shows the confirmed state, beside the bare device round trip.

Same household and page set-up as item 1 (Shelly Plus 1PM, Gen2, followed over their
websocket), no background changes. The page clicks a card's power toggle from inside the
page (``button.click()`` right after reading ``performance.timeOrigin + performance.now()``),
htmx posts to ``channel-command``, the view hands the command to the runtime, the runtime
sends ``Switch.Set`` over the device's websocket, waits for the confirmed state and answers
with the card. The MutationObserver notes when the card with the new state is inserted
(from the command's answer or the live push, whichever comes first); the simulator marks
when the switch changed. The *bare* round trip is homedash's own driver
(``ShellyRpcSession.switch_set``, the same websocket RPC the runtime uses) called from the
harness process, straight at a simulated device: request → device changed → answer.
Clicks and bare calls alternate, on the same devices.
"""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import ExitStack

from bench.common import Figure, Section, fmt, median, percentile
from bench.push_latency import KEY, Browsers, Gen2Household


class BareDriver:
    """homedash's Gen2 driver on its own event loop in a thread (sync Playwright owns the
    main thread's loop)."""

    def __init__(self, rows: list[dict]) -> None:
        from devices.drivers.shelly_rpc import ShellyRpcSession

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bare-driver", daemon=True)
        self.thread.start()
        self.sessions = {r["mac"]: ShellyRpcSession(r["host"], r["port"], device=r["mac"]) for r in rows}
        self.run(self._start())

    def run(self, coro, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> None:
        for session in self.sessions.values():
            await session.start()
        for session in self.sessions.values():
            await session.wait_connected(10)

    async def _set(self, mac: str, on: bool) -> tuple[float, float]:
        session = self.sessions[mac]
        t0 = time.time()
        await session.switch_set(0, on)
        return t0, time.time()

    def set(self, mac: str, on: bool) -> tuple[float, float]:
        return self.run(self._set(mac, on))

    async def _status(self, mac: str) -> bool:
        status = await self.sessions[mac].call("Switch.GetStatus", {"id": 0})
        return bool(status.get("output"))

    def output(self, mac: str) -> bool:
        return self.run(self._status(mac))

    def close(self) -> None:
        async def stop_all():
            await asyncio.gather(*(s.stop() for s in self.sessions.values()), return_exceptions=True)

        try:
            self.run(stop_all())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


CLICK = """(id) => {
  const button = document.querySelector('#' + id + ' button.power-toggle');
  if (!button) return null;
  const t = performance.timeOrigin + performance.now();
  button.click();
  return t / 1000;
}"""


def wait_shown(page, dom_id: str, state: bool, since: float, timeout: float = 10.0) -> float | None:
    """Poll the page's observations for the card with `state` inserted after `since`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = page.evaluate("""([id, state, since]) => {
            for (const o of window.__obs) if (o[0] === id && o[2] === state && o[1] >= since) return o[1];
            return null; }""", [dom_id, state, since])
        if found is not None:
            return found
        time.sleep(0.005)
    return None


def device_changed(house: Gen2Household, mac: str, state: bool, since: float, timeout: float = 5.0) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m, _channel, on, t, _source in house.sim.request(cmd="changes", since=since)["changes"]:
            if m == mac and bool(on) is state:
                return t
        time.sleep(0.01)
    return None


def run(mode, house: Gen2Household | None = None) -> Section:
    from playwright.sync_api import sync_playwright

    c = mode.control
    section = Section("control", "2. Control round trip: click → device → confirmed card", __doc__.split("\n\n", 1)[1])
    started = time.monotonic()
    with ExitStack() as stack:
        if house is None:
            house = stack.enter_context(Gen2Household(mode.push["devices"]))
        pw = stack.enter_context(sync_playwright())
        browsers = Browsers(pw, house.server.url, house.cookies)
        stack.callback(browsers.close)
        browsers.open(1, cards=house.devices)
        page = browsers.pages[0]
        bare = BareDriver([r for r in house.sim.rows])
        stack.callback(bare.close)
        per_run = {k: [] for k in ("total", "to_device", "to_card", "bare", "bare_to_device", "adds", "ratio")}
        rows = ["| run | clicks | click → card ms (median, p90, max) | click → device | device → card "
                "| bare round trip ms (median, p90, max) | failures |", "|---:|---:|---|---:|---:|---|---:|"]
        for r in range(c["runs"]):
            total, to_device, to_card, bare_rt, bare_dev = [], [], [], [], []
            failures = 0
            for i in range(c["clicks"]):
                mac = house.macs[i % len(house.macs)]
                dom_id = f"channel-{house.ids[(mac, KEY)]}"
                state = not bare.output(mac)
                page.evaluate("window.__obs = []")
                t_click = page.evaluate(CLICK, dom_id)
                shown = wait_shown(page, dom_id, state, t_click) if t_click is not None else None
                changed = device_changed(house, mac, state, t_click or time.time())
                if shown is None or changed is None:
                    failures += 1
                else:
                    total.append((shown - t_click) * 1000)
                    to_device.append((changed - t_click) * 1000)
                    to_card.append((shown - changed) * 1000)
                time.sleep(0.25)
                # The bare driver, on the next device: request → changed → answer.
                other = house.macs[(i + 1) % len(house.macs)]
                target = not bare.output(other)
                t0, t1 = bare.set(other, target)
                bare_rt.append((t1 - t0) * 1000)
                changed = device_changed(house, other, target, t0)
                if changed is not None:
                    bare_dev.append((changed - t0) * 1000)
                time.sleep(0.25)
            m_total, m_bare = median(total), median(bare_rt)
            per_run["total"].append(m_total)
            per_run["to_device"].append(median(to_device))
            per_run["to_card"].append(median(to_card))
            per_run["bare"].append(m_bare)
            per_run["bare_to_device"].append(median(bare_dev))
            per_run["adds"].append(m_total - m_bare)
            per_run["ratio"].append(m_total / m_bare if m_bare else float("nan"))
            rows.append(f"| {r + 1} | {len(total)} | {fmt(m_total)}, {fmt(percentile(total, 90))}, "
                        f"{fmt(max(total) if total else float('nan'))} | {fmt(median(to_device))} | {fmt(median(to_card))} "
                        f"| {fmt(m_bare)}, {fmt(percentile(bare_rt, 90))}, {fmt(max(bare_rt) if bare_rt else float('nan'))} "
                        f"| {failures} |")
        section.figures = [
            Figure("click → confirmed card (homedash)", "ms", per_run["total"],
                   note=f"{c['clicks']} clicks per run"),
            Figure("  of which click → device changed", "ms", per_run["to_device"]),
            Figure("  of which device changed → card shown", "ms", per_run["to_card"]),
            Figure("bare device round trip (driver → simulator → answer)", "ms", per_run["bare"]),
            Figure("  of which request → device changed", "ms", per_run["bare_to_device"]),
            Figure("ratio homedash / bare", "×", per_run["ratio"], digits=2),
            Figure("homedash adds (click → card minus bare)", "ms", per_run["adds"], "≤ 20 ms", 20.0),
        ]
        section.extra = "Per run (medians over the clicks of the run):\n\n" + "\n".join(rows)
    section.seconds = time.monotonic() - started
    return section
