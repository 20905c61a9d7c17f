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


@pytest.fixture
def clock(monkeypatch):
    """The slow-down's clock, moved by hand instead of sleeping."""
    from homedash import slowdown

    now = [1_000_000.0]
    monkeypatch.setattr(slowdown, "_now", lambda: now[0])
    return now


def test_an_account_guessed_at_from_many_addresses_slows_down(client, django_user_model, settings, clock):
    from axes.models import AccessAttempt

    from homedash.slowdown import pause_after, wait_for

    anna = django_user_model.objects.create_user("anna", password=STRONG)
    after = settings.LOGIN_ACCOUNT_SLOWDOWN_AFTER
    # One guess per address: axes (per name + address) never steps in.
    for n in range(after):
        assert _login(Client(), "anna", f"guess-{n}", f"10.1.0.{n + 1}").status_code == 200
    # The next attempt, from yet another address, is refused unread; even the right
    # password does not log in, and nothing is counted for it.
    attempts = AccessAttempt.objects.count()
    refused = _login(Client(), "anna", STRONG, "10.1.1.1")
    assert refused.status_code == 429 and b"Too many wrong passwords" in refused.content
    assert refused["Retry-After"] == "2" and "_auth_user_id" not in refused.wsgi_request.session
    assert AccessAttempt.objects.count() == attempts

    # After the pause one attempt goes through; each further failure doubles the pause.
    pauses = []
    for n in range(6):
        clock[0] += wait_for(anna.pk) + 0.01
        assert _login(Client(), "anna", f"again-{n}", f"10.1.2.{n + 1}").status_code == 200
        assert _login(Client(), "anna", f"again-{n}", f"10.1.3.{n + 1}").status_code == 429
        pauses.append(round(wait_for(anna.pk)))
    assert pauses == [2, 4, 8, 16, 32, 64]
    # Never more than the cap: the real user is held up, not locked out.
    assert pause_after(10_000) == settings.LOGIN_ACCOUNT_SLOWDOWN_MAX

    # The real user, from a new browser, gets in once the pause is over.
    clock[0] += wait_for(anna.pk) + 0.01
    assert _login(Client(), "anna", STRONG, "10.1.4.1").status_code == 302
    # Other accounts are not affected.
    django_user_model.objects.create_user("ben", password=STRONG)
    assert _login(Client(), "ben", STRONG, "10.1.1.1").status_code == 302


def test_a_browser_that_logged_in_before_is_not_held_up(client, django_user_model, settings, clock):
    django_user_model.objects.create_user("anna", password=STRONG)
    phone = Client()
    assert _login(phone, "anna", STRONG, "10.2.0.1").status_code == 302
    assert phone.cookies["homedash_known_browser"].value
    phone.post("/logout/")
    for n in range(settings.LOGIN_ACCOUNT_SLOWDOWN_AFTER + 3):
        _login(Client(), "anna", f"guess-{n}", f"10.2.1.{n + 1}")
    assert _login(Client(), "anna", STRONG, "10.2.2.1").status_code == 429  # a stranger's browser waits
    assert _login(phone, "anna", STRONG, "10.2.0.1").status_code == 302  # anna's phone does not
    # A forged cookie is worth nothing.
    forger = Client()
    forger.cookies["homedash_known_browser"] = "1:forged:signature"
    assert _login(forger, "anna", STRONG, "10.2.3.1").status_code == 429


def test_guessing_names_counts_nothing(django_user_model, settings, clock):
    from django.core.cache import cache

    django_user_model.objects.create_user("anna", password=STRONG)
    for n in range(settings.LOGIN_ACCOUNT_SLOWDOWN_AFTER * 3):
        assert _login(Client(), f"nobody-{n % 3}", "guess", f"10.3.0.{n + 1}").status_code == 200
    assert not any("login-failures" in key for key in getattr(cache, "_cache", {}))
    assert _login(Client(), "anna", STRONG, "10.3.1.1").status_code == 302
