"""The real `manage.py serve`: daphne + runtime on one loop, Ctrl-C stops it cleanly, and a
second start finds the same data."""

from __future__ import annotations

import re

import httpx

from tests.servers import LiveServer

STRONG = "correct-horse-battery-42"


def test_serve_starts_stops_cleanly_and_keeps_data(tmp_path):
    server = LiveServer(tmp_path / "data").start()
    try:
        with httpx.Client(base_url=server.url, follow_redirects=False) as client:
            assert client.get("/").headers["location"] == "/onboarding/"
            page = client.get("/onboarding/")
            csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
            created = client.post("/onboarding/", data={"username": "anna", "password": STRONG,
                                                        "password_again": STRONG, "csrfmiddlewaretoken": csrf},
                                  headers={"Referer": server.url + "/onboarding/"})
            assert created.status_code == 302
            assert client.get("/").status_code == 200
            # Static files come from the same process.
            js = client.get("/static/vendor/htmx-2.0.10.min.js")
            assert js.status_code == 200 and b"htmx" in js.content
            assert "immutable" in js.headers["cache-control"]           # versioned by its name
            css = client.get("/static/css/homedash.css")
            # Ours keep their names across upgrades: revalidated every time, cheaply.
            assert css.headers["cache-control"] == "no-cache" and css.headers.get("last-modified")
            again = client.get("/static/css/homedash.css", headers={"If-Modified-Since": css.headers["last-modified"]})
            assert again.status_code == 304
            assert client.get("/healthz").json()["runtime"] == "running"
    finally:
        code = server.stop()
    assert code == 0, server.output
    assert "device runtime stopped" in server.output and "homedash stopped." in server.output

    again = LiveServer(tmp_path / "data").start()
    try:
        response = httpx.get(again.url + "/", follow_redirects=False)
        # The administrator from the first run is still there: no onboarding this time.
        assert response.headers["location"].startswith("/login/")
        assert again.ready_after < 15
    finally:
        assert again.stop() == 0
