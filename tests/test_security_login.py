"""Login throttling per username + address, CSRF on state-changing requests, bounded bodies."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db
STRONG = "correct-horse-battery-42"


def _login(client, username, password, address):
    return client.post("/login/", {"username": username, "password": password}, REMOTE_ADDR=address)


def test_lockout_is_per_username_and_address(client, django_user_model, settings):
    django_user_model.objects.create_user("anna", password=STRONG)
    django_user_model.objects.create_user("ben", password=STRONG)
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert _login(client, "anna", "wrong-guess", "10.9.8.7").status_code == 200
    assert _login(client, "anna", "wrong-guess", "10.9.8.7").status_code == 429  # the limit
    # Now even the right password from that address is refused...
    locked = _login(client, "anna", STRONG, "10.9.8.7")
    assert locked.status_code == 429 and b"Too many attempts" in locked.content
    # ...but the household behind the same address is not locked out, nor is anna elsewhere.
    assert _login(Client(), "ben", STRONG, "10.9.8.7").status_code == 302
    assert _login(Client(), "anna", STRONG, "10.9.8.8").status_code == 302


def test_csrf_is_enforced(django_user_model):
    strict = Client(enforce_csrf_checks=True)
    assert strict.post("/onboarding/", {"username": "x", "password": STRONG, "password_again": STRONG}).status_code == 403
    django_user_model.objects.create_user("anna", password=STRONG)
    assert strict.post("/login/", {"username": "anna", "password": STRONG}).status_code == 403


def test_oversized_bodies_are_refused(client, django_user_model):
    django_user_model.objects.create_user("anna", password=STRONG)
    response = client.post("/login/", {"username": "anna", "password": "x" * (70 * 1024)})
    assert response.status_code == 400
