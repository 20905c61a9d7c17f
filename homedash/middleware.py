"""Request-wide rules: send a fresh install to onboarding, and the security headers every
page carries."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.middleware.gzip import GZipMiddleware
from django.shortcuts import redirect
from django.urls import reverse

# Paths that must work before the first user exists.
_OPEN_PREFIXES = ("/onboarding/", "/static/", "/healthz", "/manifest.webmanifest", "/favicon.ico", "/hooks/")


class OnboardingMiddleware:
    """Until someone has created the first administrator, every page leads to onboarding.
    Once a user exists this costs nothing more: the answer is remembered."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.has_users = False

    def __call__(self, request):
        if not self.has_users and not request.path.startswith(_OPEN_PREFIXES):
            self.has_users = get_user_model().objects.exists()
            if not self.has_users:
                return redirect(reverse("onboarding"))
        return self.get_response(request)


# No inline scripts or styles anywhere: htmx runs with allowEval=false and its indicator
# styles ship in our CSS, so the policy needs neither unsafe-inline nor unsafe-eval.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


class SecurityHeadersMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        # The admin uses a few inline scripts and styles; it keeps Django's defaults.
        if not request.path.startswith("/admin/"):
            response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
        return response


class CompressPagesMiddleware(GZipMiddleware):
    """Pages, htmx answers and JSON go out gzip-compressed to clients that accept it (a
    home page of 300 cards shrinks more than tenfold: phones on a weak Wi-Fi notice).
    Django's GZipMiddleware pads the gzip header with random bytes against BREACH, and
    CSRF tokens in pages are masked per request.

    Streaming responses are left alone: gzip holds data back until it has a block to
    emit, which would stall anything streamed live. (Static files never pass through
    middleware; websockets are not HTTP responses.)"""

    def process_response(self, request, response):
        if response.streaming:
            return response
        return super().process_response(request, response)
