"""A real browser against a real `serve`: onboarding, the empty dashboard, the admin; no
console errors (a CSP violation by htmx would show up as one); no horizontal scrolling
on a phone."""

from __future__ import annotations

import pytest

from tests.browser import browser, watch  # noqa: F401  (fixture)
from tests.servers import LiveServer

pytestmark = pytest.mark.browser
STRONG = "correct-horse-battery-42"


@pytest.fixture
def server(tmp_path):
    with LiveServer(tmp_path / "data") as live:
        yield live


def test_onboarding_to_empty_dashboard_on_a_phone(browser, server):  # noqa: F811
    errors: list[str] = []
    context = browser.new_context(viewport={"width": 360, "height": 740})
    page = watch(context.new_page(), errors)
    page.goto(server.url + "/")
    assert page.url.endswith("/onboarding/")
    page.fill("input[name=username]", "anna")
    page.fill("input[name=password]", STRONG)
    page.fill("input[name=password_again]", STRONG)
    page.click("button[type=submit]")
    page.wait_for_url(server.url + "/")
    assert page.get_by_text("No rooms yet").is_visible()
    # htmx loaded with eval disabled and did not trip the Content-Security-Policy.
    assert page.evaluate("() => typeof htmx !== 'undefined' && htmx.config.allowEval === false")
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    page.click("text=Admin")
    page.wait_for_url("**/admin/")
    assert "Site administration" in page.content()
    context.close()
    assert errors == []
