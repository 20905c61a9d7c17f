"""The log console in a real browser against a real `serve`, with two simulated Shelly
devices in this test process: log in, pick both devices, start their logs, see live lines
of both (tagged by device), filter by level and by text, pause and resume, download the
buffered log — with no console error (a CSP violation would be one).

Playwright runs inside the test, not as a session fixture: sync Playwright keeps an event
loop marked as running in the main thread while it is open, which would break the async
tests pytest runs after this module.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from devices.simulator.shelly_rpc import ShellyRpc
from tests.browser import CHROMIUM_ARGS, chromium_path, watch
from tests.servers import LiveServer

pytestmark = pytest.mark.browser
PASSWORD = "Console-Pw-2026"
USER_PASSWORD = "browser-log-reader-77"


class SimThread:
    """Simulated devices on their own event loop, so the sync browser test can drive them."""

    def __init__(self, sims: list[ShellyRpc]) -> None:
        self.sims = sims
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="log-sims", daemon=True)
        self.thread.start()
        for sim in sims:
            self.run(sim.start())

    def run(self, coro, timeout: float = 20.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def log(self, sim: ShellyRpc, text: str, level: int) -> None:
        async def say():
            sim.log(text, level=level)
        self.run(say())

    def close(self) -> None:
        for sim in self.sims:
            self.run(sim.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def visible_lines(page) -> list[dict]:
    return page.evaluate("""() => Array.from(document.querySelectorAll('#log-lines .log-line'))
        .filter(el => el.offsetParent !== null)
        .map(el => ({cls: el.className, dev: (el.querySelector('.log-dev') || {}).textContent || '',
                     text: (el.querySelector('.log-text') || {}).textContent || ''}))""")


def test_console_shows_two_devices_live_filters_and_downloads(tmp_path):
    chromium_path()  # skip early when there is no browser
    hall = ShellyRpc("SNSW-001P16EU", password=PASSWORD, drift_period=None, minute_period=0, debug_rate=8.0)
    cellar = ShellyRpc("S3SW-001P16EU", drift_period=None, minute_period=0, debug_rate=8.0)
    sims = SimThread([hall, cellar])
    server = LiveServer(tmp_path / "data", extra_env={"HOMEDASH_DEBUG_LOG_GRACE": "5"})
    try:
        server.manage("migrate", "--noinput", "-v0")
        server.manage("shell", "-c", (
            "from django.contrib.auth import get_user_model; from devices.models import Device; "
            "from devices.credentials import Credentials\n"
            f"get_user_model().objects.create_user('anna', password='{USER_PASSWORD}', is_staff=True)\n"
            f"Device.objects.create(mac='{hall.mac}', vendor='shelly', generation=2, model_code='{hall.model}', "
            f"host='127.0.0.1', port={hall.port}, adopted=True, name='Hall plug', firmware='{hall.ver}', "
            f"credentials=Credentials(password='{PASSWORD}'))\n"
            f"Device.objects.create(mac='{cellar.mac}', vendor='shelly', generation=3, model_code='{cellar.model}', "
            f"host='127.0.0.1', port={cellar.port}, adopted=True, name='Cellar pump', firmware='{cellar.ver}')\n"))
        pks = server.manage("shell", "-c", (
            "from devices.models import Device\n"
            "print(','.join(str(d.pk) for d in Device.objects.order_by('name')))")).strip().splitlines()[-1]
        cellar_pk, hall_pk = pks.split(",")
        server.start()

        from playwright.sync_api import expect, sync_playwright

        errors: list[str] = []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
            context = browser.new_context(accept_downloads=True)
            page = watch(context.new_page(), errors)
            page.goto(server.url + "/login/?next=/logs/")
            page.fill("input[name=username]", "anna")
            page.fill("input[name=password]", USER_PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(server.url + "/logs/")

            page.check(f"input[name=device][value='{hall_pk}']")
            page.check(f"input[name=device][value='{cellar_pk}']")
            page.click("text=Show these devices")
            page.wait_for_url("**/logs/?device=*")
            for pk in (hall_pk, cellar_pk):
                page.click(f"#log-controls-{pk} button.log-start")
                expect(page.locator(f"#log-controls-{pk} button.log-stop")).to_be_visible()

            # Live lines of both devices, each tagged with its device.
            expect(page.locator("#log-lines .log-line .log-dev", has_text="Hall plug").first).to_be_visible(timeout=10000)
            expect(page.locator("#log-lines .log-line .log-dev", has_text="Cellar pump").first).to_be_visible(timeout=10000)
            sims.log(hall, "hall-error <b>not bold</b>", 0)
            sims.log(cellar, "cellar-error", 0)
            sims.log(cellar, "cellar-warning", 1)
            expect(page.locator("#log-lines .log-text", has_text="cellar-warning")).to_be_visible(timeout=5000)
            expect(page.locator("#log-lines .log-text", has_text="hall-error <b>not bold</b>")).to_be_visible()
            assert page.locator("#log-lines b").count() == 0   # device text is text, never markup

            # Level filter: errors only.
            page.select_option("select.log-level", "0")
            shown = [line for line in visible_lines(page) if "log-note" not in line["cls"]]
            assert shown and all("lv-0" in line["cls"] for line in shown)
            assert {line["dev"] for line in shown} == {"Hall plug", "Cellar pump"}
            # Text filter on top.
            page.fill("input.log-filter", "cellar-err")
            shown = [line for line in visible_lines(page) if "log-note" not in line["cls"]]
            assert [line["text"] for line in shown] == ["cellar-error"]
            page.fill("input.log-filter", "")
            page.select_option("select.log-level", "4")

            # Pause: nothing new on the page; resume: what came meanwhile arrives.
            page.click("button.log-pause")
            expect(page.locator("button.log-pause")).to_have_text("Resume")
            page.wait_for_timeout(300)
            sims.log(hall, "said-while-paused", 2)
            page.wait_for_timeout(600)
            assert page.locator("#log-lines .log-text", has_text="said-while-paused").count() == 0
            page.click("button.log-pause")
            expect(page.locator("#log-lines .log-text", has_text="said-while-paused")).to_have_count(1, timeout=5000)

            # Download what the server buffered.
            page.select_option("select.log-level", "1")
            with page.expect_download() as info:
                page.click("a.log-download")
            download = info.value
            assert download.suggested_filename.startswith("homedash-debug-") and download.suggested_filename.endswith(".log")
            body = open(download.path(), encoding="utf-8").read()
            assert "[Hall plug] error" in body and "hall-error <b>not bold</b>" in body
            assert "[Cellar pump] error" in body and "[Cellar pump] warn" in body
            assert " info " not in body   # the level filter went along

            page.click(f"#log-controls-{hall_pk} button.log-stop")
            expect(page.locator(f"#log-controls-{hall_pk} button.log-start")).to_be_visible()
            context.close()
            browser.close()
        assert errors == []
        assert hall.config["sys"]["debug"]["websocket"]["enable"] is False
    finally:
        server.stop()
        sims.close()
    # A clean stop of homedash put back the log that was still running.
    assert cellar.config["sys"]["debug"]["websocket"]["enable"] is False
