"""Per-account login slow-down, across addresses.

django-axes locks a username *from one address* after a few wrong passwords (settings:
AXES_*): an attacker who rotates addresses (any machine on the LAN can take many) is not
held up by it. Here every account counts its wrong passwords from anywhere; past
LOGIN_ACCOUNT_SLOWDOWN_AFTER of them, the next attempt at that account is refused unread
until a pause has passed since the last failure: 1 s, then doubling per further failure up
to LOGIN_ACCOUNT_SLOWDOWN_MAX. The count is forgotten after an hour without a failure.

The real user is never locked out for good: the pause is capped, and a browser that has
logged in to the account before carries a signed "known browser" cookie that the slow-down
lets through (axes still limits it per address). A refused attempt checks no password and
so counts as nothing, anywhere.

Counts live in Django's cache: per process with the default in-memory cache, shared when a
shared cache is configured. Only accounts that exist are counted, so guessing names cannot
grow it.
"""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_login_failed
from django.core import signing
from django.core.cache import cache
from django.dispatch import receiver
from django.shortcuts import render
from django.urls import reverse

log = logging.getLogger(__name__)

COOKIE = "homedash_known_browser"
COOKIE_SALT = "homedash.slowdown.known-browser"
COOKIE_AGE = 400 * 86400  # about the longest a browser keeps a cookie
COOKIE_ACCOUNTS = 8  # accounts one browser is remembered for
FORGET_AFTER = 3600  # seconds without a failure after which an account's count starts over
USERNAME_MAX = 150  # Django's own limit; longer names are not accounts

_lock = threading.Lock()
_now = time.time  # the clock (tests move it)


def _key(user_pk: int) -> str:
    return f"homedash:login-failures:{user_pk}"


def _after() -> int:
    return settings.LOGIN_ACCOUNT_SLOWDOWN_AFTER


def _account(username: object) -> int | None:
    if not isinstance(username, str) or not username or len(username) > USERNAME_MAX:
        return None
    model = get_user_model()
    return model._default_manager.filter(**{model.USERNAME_FIELD: username}).values_list("pk", flat=True).first()


def pause_after(failures: int) -> float:
    """Seconds an account waits after its latest failure, given how many it has had."""
    if failures < _after():
        return 0.0
    return float(min(2 ** min(failures - _after(), 30), settings.LOGIN_ACCOUNT_SLOWDOWN_MAX))


def wait_for(user_pk: int, now: float | None = None) -> float:
    """Seconds left before the account takes another attempt (0: go ahead)."""
    failures, last = cache.get(_key(user_pk), (0, 0.0))
    now = _now() if now is None else now
    return max(0.0, last + pause_after(failures) - now)


def record_failure(user_pk: int) -> int:
    with _lock:
        failures, last = cache.get(_key(user_pk), (0, 0.0))
        failures += 1
        cache.set(_key(user_pk), (failures, _now()), FORGET_AFTER)
    return failures


@receiver(user_login_failed, dispatch_uid="homedash.slowdown.failed")
def _count_failure(sender, credentials=None, request=None, **kwargs) -> None:
    pk = _account((credentials or {}).get("username"))
    if pk is None:
        return
    failures = record_failure(pk)
    if failures >= _after():
        log.warning("login: %d wrong passwords for one account; the next attempt waits %.0f s",
                    failures, pause_after(failures))


def _known_accounts(request) -> list[int]:
    try:
        raw = request.get_signed_cookie(COOKIE, salt=COOKIE_SALT, max_age=COOKIE_AGE)
    except (KeyError, signing.BadSignature):
        return []
    return [int(part) for part in raw.split(",") if part.isdigit()][:COOKIE_ACCOUNTS]


class AccountSlowdownMiddleware:
    """Refuses a log-in attempt while its account is in its pause (unless the browser is
    known to the account), and marks a browser as known when a log-in succeeds."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        is_login = request.method == "POST" and request.path == reverse("login")
        if is_login:
            pk = _account(request.POST.get("username"))
            if pk is not None and pk not in _known_accounts(request):
                wait = wait_for(pk)
                if wait > 0:
                    response = render(request, "registration/slowed_down.html", {"wait": int(wait) + 1}, status=429)
                    response["Retry-After"] = str(int(wait) + 1)
                    return response
        response = self.get_response(request)
        user = getattr(request, "user", None)
        if is_login and response.status_code in (302, 303) and user is not None and user.is_authenticated:
            known = [pk for pk in _known_accounts(request) if pk != user.pk]
            known = [user.pk, *known][:COOKIE_ACCOUNTS]
            response.set_signed_cookie(COOKIE, ",".join(map(str, known)), salt=COOKIE_SALT, max_age=COOKIE_AGE,
                                       httponly=True, samesite="Lax", secure=settings.SESSION_COOKIE_SECURE)
        return response
