"""The browser the tests, benchmarks and screenshots drive resolves nothing but loopback, so
a run makes no outside lookup (Chromium's own background fetches included), and pages on
loopback still load."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from homedash.chromium import CHROMIUM_ARGS, HOST_RESOLVER_RULES
from tests.browser import browser  # noqa: F401  (fixture)

pytestmark = pytest.mark.browser


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        body = b"<!doctype html><title>loopback</title><p id=hello>hello from loopback</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def loopback_page():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_one_list_of_flags_with_the_resolver_rule():
    assert f"--host-resolver-rules={HOST_RESOLVER_RULES}" in CHROMIUM_ARGS
    assert HOST_RESOLVER_RULES.startswith("MAP * ~NOTFOUND")
    assert '"' not in HOST_RESOLVER_RULES  # no shell in between: quotes would be part of the rule
    assert sum(a.startswith("--disable-features=") for a in CHROMIUM_ARGS) == 1


def test_loopback_loads_and_other_names_do_not_resolve(browser, loopback_page):  # noqa: F811
    port = loopback_page
    page = browser.new_page()
    try:
        for host in ("127.0.0.1", "localhost"):
            page.goto(f"http://{host}:{port}/")
            assert page.text_content("#hello") == "hello from loopback", host
        # A name under .localhost is answered by Chromium itself with a loopback address,
        # without asking DNS: it would reach the server above if the rule were missing, so
        # its failure shows the rule is in force, not that this machine has no DNS.
        for url in (f"http://homedash-probe.localhost:{port}/", "http://accounts.google.com/",
                    "http://example.invalid-name.test/"):
            started = time.monotonic()
            with pytest.raises(Exception, match="ERR_NAME_NOT_RESOLVED"):
                page.goto(url, timeout=10_000)
            assert time.monotonic() - started < 5, url  # refused at once, no lookup timed out
    finally:
        page.close()
