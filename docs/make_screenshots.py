"""`make screenshots`: the README's pictures, from the demo household.

Starts `manage.py demo` in a throw-away data directory, logs in with Playwright (Debian's
Chromium), and saves the home and a device page on a phone and a desktop, light and dark,
into docs/screenshots/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from homedash.chromium import CHROMIUM_ARGS  # noqa: E402
from tests.servers import free_port  # noqa: E402

OUT = REPO / "docs" / "screenshots"
VIEWPORTS = {"phone": {"width": 390, "height": 844}, "desktop": {"width": 1366, "height": 900}}


def start_demo(data_dir: Path, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMEDASH_")}
    env.update(HOMEDASH_DATA_DIR=str(data_dir), HOMEDASH_DEMO="true", HOMEDASH_DISCOVERY="false",
               HOMEDASH_TIME_ZONE=os.environ.get("HOMEDASH_TIME_ZONE", "Europe/Zurich"), PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, "manage.py", "demo", "--port", str(port)], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"demo exited early:\n{process.stdout.read()}")
        try:
            health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).json()
            if health.get("runtime") == "running" and health["devices"]["online"] >= 15:
                return process
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.3)
    process.kill()
    raise SystemExit("the demo did not come up in 60 s")


def main() -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium is not installed (apt-get install chromium)")
    OUT.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="homedash-shots-") as tmp:
        demo = start_demo(Path(tmp) / "data", port)
        try:
            time.sleep(14)  # wake-ups, button presses and the day of history the demo adds
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
                for scheme in ("light", "dark"):
                    for name, viewport in VIEWPORTS.items():
                        context = browser.new_context(viewport=viewport, color_scheme=scheme,
                                                      device_scale_factor=2 if name == "phone" else 1)
                        page = context.new_page()
                        page.goto(base + "/login/")
                        page.fill("input[name=username]", "demo")
                        page.fill("input[name=password]", "demo-household")
                        page.click("button[type=submit]")
                        page.wait_for_url(base + "/")
                        page.wait_for_timeout(1500)
                        page.screenshot(path=str(OUT / f"home-{name}-{scheme}.png"), full_page=name == "desktop")
                        # A device with a bit of everything: the living room's dimmer.
                        page.goto(base + page.locator(".kind-light h3 a", has_text="Ceiling light").first.get_attribute("href"))
                        page.wait_for_timeout(1000)
                        page.screenshot(path=str(OUT / f"device-{name}-{scheme}.png"), full_page=name == "desktop")
                        context.close()
                browser.close()
        finally:
            demo.terminate()
            try:
                demo.wait(20)
            except subprocess.TimeoutExpired:
                demo.kill()
    for path in sorted(OUT.glob("*.png")):
        print(path.relative_to(REPO))


if __name__ == "__main__":
    main()
