"""Pages go out gzip-compressed to clients that accept it, with every security header
still on them; streaming responses and websockets are left alone."""

from __future__ import annotations

import gzip
import re

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import get_user_model
from django.http import HttpResponse, StreamingHttpResponse
from django.test import Client, RequestFactory

from homedash.middleware import CompressPagesMiddleware
from tests.dashboard.conftest import build_house

CSRF = re.compile(r'"X-CSRFToken": "[^"]+"|name="csrfmiddlewaretoken" value="[^"]+"')


@pytest.mark.django_db
def test_pages_are_compressed_for_clients_that_accept_it(as_user, house):
    client = as_user(house.anna)
    plain = client.get("/")
    packed = client.get("/", HTTP_ACCEPT_ENCODING="gzip, deflate, br")
    assert not plain.has_header("Content-Encoding")
    assert packed["Content-Encoding"] == "gzip" and "Accept-Encoding" in packed["Vary"]
    assert int(packed["Content-Length"]) == len(packed.content)
    page = gzip.decompress(packed.content).decode()
    # The same page (CSRF tokens are masked anew for every response).
    assert CSRF.sub("", page) == CSRF.sub("", plain.content.decode())
    assert len(packed.content) < len(page) / 3
    # BREACH: Django pads the gzip header with a random file name (FNAME flag set).
    assert packed.content[:2] == b"\x1f\x8b" and packed.content[3] & 0x08
    for header in ("Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options", "Referrer-Policy",
                   "Permissions-Policy", "Cache-Control"):
        assert packed.get(header) == plain.get(header), header


@pytest.mark.django_db
def test_other_pages_and_htmx_answers(as_user, house):
    client = as_user(house.anna)
    for url in (f"/devices/{house.plug.pk}/", "/admin/devices/device/", "/events/"):
        page = client.get(url, HTTP_ACCEPT_ENCODING="gzip")
        assert page["Content-Encoding"] == "gzip" and page["X-Frame-Options"] == "DENY", url
    # A small htmx answer goes out compressed only when that makes it smaller (the BREACH
    # padding adds up to 100 bytes): either way the browser gets the same fragment.
    health = client.get(f"/devices/{house.plug.pk}/health", HTTP_ACCEPT_ENCODING="gzip")
    body = gzip.decompress(health.content) if health.get("Content-Encoding") == "gzip" else health.content
    assert b'id="health"' in body and int(health["Content-Length"]) == len(health.content)


def test_streaming_responses_are_left_alone():
    request = RequestFactory().get("/", HTTP_ACCEPT_ENCODING="gzip")
    stream = CompressPagesMiddleware(lambda r: StreamingHttpResponse(iter([b"x" * 5000, b"y" * 5000])))(request)
    assert not stream.has_header("Content-Encoding")
    assert b"".join(stream.streaming_content) == b"x" * 5000 + b"y" * 5000
    page = CompressPagesMiddleware(lambda r: HttpResponse(b"x" * 5000))(request)
    assert page["Content-Encoding"] == "gzip" and gzip.decompress(page.content) == b"x" * 5000


def test_compression_wraps_everything_that_writes_a_body():
    """Outermost but for SecurityMiddleware (headers only): it compresses what the views
    and every other middleware produced, after they are done with the body."""
    middleware = settings.MIDDLEWARE
    assert middleware.index("homedash.middleware.CompressPagesMiddleware") == 1
    assert middleware[0] == "django.middleware.security.SecurityMiddleware"


@pytest.mark.django_db(transaction=True)
async def test_websocket_messages_stay_plain_text():
    from homedash.asgi import application

    house = await sync_to_async(build_house)(get_user_model())

    def session():
        client = Client()
        client.force_login(house.anna)
        return client.cookies["sessionid"].value

    key = await sync_to_async(session)()
    communicator = WebsocketCommunicator(application, "/ws/home/", headers=[
        (b"origin", b"http://127.0.0.1"), (b"cookie", f"sessionid={key}".encode()),
        (b"accept-encoding", b"gzip, deflate")])
    connected, _ = await communicator.connect(timeout=3)
    assert connected
    snapshot = await communicator.receive_from(timeout=3)
    assert snapshot.startswith("<article") and f'id="channel-{house.plug_ch.pk}"' in snapshot
    await communicator.disconnect()
