"""Playwright driving Debian's Chromium (never a downloaded browser)."""

from __future__ import annotations

import os
import shutil

import pytest

from homedash.chromium import CHROMIUM_ARGS  # noqa: F401  (re-exported: one list, see there)


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed; `make test` installs it with apt-get in CI")
        pytest.skip("chromium is not installed (make test installs it when run as root)")
    return path


@pytest.fixture(scope="module")
def browser():
    # Module scope: Playwright's sync API keeps an event loop marked as running while it
    # lives, which would break asyncio tests collected after a session-wide browser.
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        yield instance
        instance.close()


@pytest.fixture
def page_errors():
    """Collect console errors and page errors (CSP violations show up here too)."""
    return []


def watch(page, errors: list[str]):
    page.on("console", lambda msg: errors.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on("response", lambda r: errors.append(f"HTTP {r.status} for {r.url}") if r.status >= 400 else None)
    return page
