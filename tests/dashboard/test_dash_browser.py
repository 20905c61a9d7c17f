"""A real browser against a real `serve`, with simulated devices running in this test
process on 127.0.0.1 and adopted into the server's database beforehand: log in, see the
rooms, switch something and see the device change, change a device at the device and see
the page follow without a reload, a dead device's command says why, the page survives a
server restart, a phone-sized screen does not scroll sideways, and the console stays
clean.

The browser is started per module (not the session-wide fixture): sync Playwright keeps
an event loop marked as running in the main thread while it is open, which would break
async tests that pytest runs after this module.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from devices.demo import describe_fleet
from devices.simulator.fleet import Fleet
from tests.browser import CHROMIUM_ARGS, chromium_path, watch
from tests.servers import REPO, LiveServer

pytestmark = pytest.mark.browser
MODELS = ["WS2", "SNSW-001P16EU", "SHPLG-S", "SNSW-102P16EU:cover"]
PASSWORD = "browser-test-pw-1"


class FleetThread:
    """Simulated devices on their own event loop in a thread, so the (sync) browser test
    can drive them while they serve."""

    def __init__(self, models: list[str]) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fleet", daemon=True)
        self.thread.start()
        self.fleet = Fleet(models, seed=3, protect=True, update_period=2.0)
        self.run(self.fleet.start())

    def run(self, coro, timeout: float = 20.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn, *args):
        """Run a plain function of a simulated device on its loop and wait for it."""
        async def wrapper():
            result = fn(*args)
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                result = await result
            return result
        return self.run(wrapper())

    def by_model(self, model: str):
        return self.fleet.of_model(model.split(":")[0])[0]

    def close(self) -> None:
        self.run(self.fleet.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def household(tmp_path_factory):
    """The devices, and a `serve` whose database has them adopted (via `manage.py demo
    --prepare`, with their secrets as credentials)."""
    chromium_path()  # skip early when there is no browser
    data = tmp_path_factory.mktemp("dash-browser") / "data"
    fleet = FleetThread(MODELS)
    try:
        rows = fleet.run(describe_fleet(fleet.fleet))
        for row in rows:
            row["poll_interval"] = 1.0
        rows_file = data.parent / "rows.json"
        rows_file.write_text(json.dumps(rows))
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOMEDASH_")}
        env.update(HOMEDASH_DATA_DIR=str(data), HOMEDASH_DEMO="true", HOMEDASH_DISCOVERY="false")
        subprocess.run([sys.executable, "manage.py", "demo", "--prepare", str(rows_file), "--password", PASSWORD],
                       cwd=REPO, env=env, check=True, capture_output=True, timeout=60)
        server = LiveServer(data).start()
        try:
            yield server, fleet
        finally:
            server.stop()
    finally:
        fleet.close()


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def log_in(page, base: str) -> None:
    page.goto(base + "/login/")
    page.fill("input[name=username]", "demo")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")


def card(page, name: str, kind: str = "switch"):
    return page.locator(f"article.card.kind-{kind}", has=page.locator("h3", has_text=name)).first


def wait_until(predicate, timeout: float = 10.0, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def test_control_live_updates_errors_and_restart(household, chromium):
    server, fleet = household
    errors: list[str] = []
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = watch(context.new_page(), errors)
    log_in(page, server.url)
    assert page.locator("#room-1 h2").inner_text().strip().endswith("Living room")
    assert page.get_by_role("heading", name="Kitchen").is_visible()

    fridge_sim, fridge = fleet.by_model("SNSW-001P16EU"), card(page, "Fridge")
    fridge.locator(".presence.online").wait_for(timeout=15_000)
    # Switch from the page: the device changes, the card shows what the device confirmed.
    before = fridge_sim.switches[0].output
    fridge.locator("button.power-toggle").click()
    assert wait_until(lambda: fridge_sim.switches[0].output is (not before))
    expected = "true" if not before else "false"
    page.wait_for_selector(f"#{fridge.get_attribute('id')} button.power-toggle[aria-pressed='{expected}']")

    # Changed at the device (someone pressed its button): the page follows, no reload.
    coffee_sim, coffee = fleet.by_model("WS2"), card(page, "Coffee machine")
    coffee.locator(".presence.online").wait_for(timeout=15_000)
    page.evaluate("() => { window.__notReloaded = true; }")
    fleet.call(coffee_sim.flip)
    pressed = "true" if coffee_sim.relay else "false"
    page.wait_for_selector(f"#{coffee.get_attribute('id')} button.power-toggle[aria-pressed='{pressed}']", timeout=10_000)
    assert page.evaluate("() => window.__notReloaded === true")

    # A device that went away: the command says why, in words.
    kettle_sim, kettle = fleet.by_model("SHPLG-S"), card(page, "Kettle")
    kettle.locator(".presence.online").wait_for(timeout=15_000)
    fleet.run(kettle_sim.power_off())
    kettle.locator("button.power-toggle").click()
    note = page.locator("#toasts .toast", has_text="Kettle")
    note.wait_for(timeout=20_000)
    assert any(words in note.inner_text() for words in ("unreachable", "not answering"))
    # The card itself shows the device as it is: gone.
    kettle.locator(".presence.offline").wait_for(timeout=15_000)
    fleet.run(kettle_sim.power_on())

    assert errors == []

    # The server restarts: the socket comes back by itself and live updates continue.
    server.stop()
    server.start()
    fleet.call(coffee_sim.flip)
    pressed = "true" if coffee_sim.relay else "false"
    page.wait_for_selector(f"#{coffee.get_attribute('id')} button.power-toggle[aria-pressed='{pressed}']", timeout=30_000)
    assert page.evaluate("() => window.__notReloaded === true")
    context.close()
    # While the server was down, the browser reports its reconnection attempts (and htmx
    # the failed sockets); nothing else went wrong.
    assert [e for e in errors if "WebSocket connection to" not in e and e != "console error: [object Event]"] == []


def test_live_updates_change_cards_in_place_keeping_focus_and_sliders_honest(household, chromium):
    """A live update edits the card on the page rather than replacing it: the element the
    keyboard is on keeps the focus, and a slider the user already moved still follows
    the device (a moved range input no longer follows its value attribute)."""
    server, fleet = household
    errors: list[str] = []
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = watch(context.new_page(), errors)
    log_in(page, server.url)
    fridge_sim, fridge = fleet.by_model("SNSW-001P16EU"), card(page, "Fridge")
    fridge.locator(".presence.online").wait_for(timeout=15_000)
    fridge_id = fridge.get_attribute("id")
    page.evaluate("(id) => { window.__fridge = document.getElementById(id); }", fridge_id)
    fridge.locator("button.power-toggle").focus()
    before = fridge_sim.switches[0].output
    fleet.call(lambda: fridge_sim.set_output(0, not before, source="button"))
    shown = "true" if not before else "false"
    page.wait_for_selector(f"#{fridge_id} button.power-toggle[aria-pressed='{shown}']", timeout=10_000)
    assert page.evaluate("(id) => window.__fridge === document.getElementById(id)", fridge_id)
    assert page.evaluate("() => document.activeElement.classList.contains('power-toggle')")
    assert page.evaluate("(id) => document.getElementById(id).contains(document.activeElement)", fridge_id)

    blinds_sim, blinds = fleet.by_model("SNSW-102P16EU"), card(page, "Blinds", "cover")
    blinds.locator(".presence.online").wait_for(timeout=15_000)
    slider = blinds.locator("input[type=range]")
    # The user drags the slider but lets go somewhere else (no command): the value is
    # now "dirty"; then the cover moves at the wall switch.
    slider.evaluate("(el) => { el.value = '3'; }")
    target = 77 if int(slider.get_attribute("value")) != 77 else 23
    blinds_sim.cover_travel_time = 1.0
    fleet.call(lambda: blinds_sim.move_cover(0, target, source="button", positioning=True))
    assert wait_until(lambda: slider.evaluate("(el) => el.value") == str(target), timeout=15)
    assert blinds.locator("output").inner_text().strip() == f"{target} %"
    context.close()
    assert errors == []


def test_phone_layout_and_pages_without_console_errors(household, chromium):
    server, fleet = household
    errors: list[str] = []
    context = chromium.new_context(viewport={"width": 360, "height": 740}, has_touch=True, is_mobile=True)
    page = watch(context.new_page(), errors)
    log_in(page, server.url)
    card(page, "Fridge").locator(".presence.online").wait_for(timeout=15_000)
    no_sideways = "() => document.documentElement.scrollWidth <= window.innerWidth"
    assert page.evaluate(no_sideways)
    # Touch-sized controls.
    box = card(page, "Fridge").locator("button.power-toggle").bounding_box()
    assert box["height"] >= 44
    for path in ("/events/", "/inbox/"):
        page.goto(server.url + path)
        assert page.evaluate(no_sideways), path
    page.goto(server.url + "/")
    card(page, "Blinds", "cover").locator("h3 a").click()
    page.wait_for_selector("h1:has-text('Blinds')")
    page.locator("#live article.card").first.wait_for()
    assert page.evaluate(no_sideways)
    # Keyboard: the cover's buttons are reachable and labelled.
    assert page.get_by_role("button", name="Open").first.is_visible()
    assert page.get_by_label("Position").first.is_visible()
    context.close()
    assert errors == []
