"""Pages and htmx actions. Function views, one template per page, fragments reused by the
live updates."""

from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model, login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import Count, Q
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from devices import access, runtime as runtime_module
from devices.models import AuditEntry, Device


class OnboardingForm(forms.Form):
    username = forms.CharField(max_length=150, initial="admin", widget=forms.TextInput(attrs={"autocomplete": "username"}))
    password = forms.CharField(widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}))
    password_again = forms.CharField(label="Password (again)", widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}))

    def clean(self):
        data = super().clean()
        if data.get("password") and data.get("password") != data.get("password_again"):
            raise ValidationError("The two passwords differ.")
        if data.get("password"):
            user = get_user_model()(username=data.get("username", ""))
            try:
                validate_password(data["password"], user)
            except ValidationError as exc:
                self.add_error("password", exc)
        return data


@never_cache
def onboarding(request):
    """Create the first administrator. Exists only while the database has no user at all."""
    User = get_user_model()
    if User.objects.exists():
        raise Http404("homedash is already set up")
    form = OnboardingForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = User.objects.create_superuser(username=form.cleaned_data["username"], email="",
                                             password=form.cleaned_data["password"])
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        AuditEntry.record(request=request, action="onboarding.admin_created", detail=user.get_username())
        return redirect("home")
    return render(request, "onboarding.html", {"form": form})


@login_required
def home(request):
    rooms = access.visible_rooms(request.user)
    return render(request, "devices/home.html", {"rooms": rooms})


@require_GET
@never_cache
def healthz(request):
    """For monitoring: 200 when the database answers; says whether the runtime runs."""
    body = {"status": "ok"}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        counts = Device.objects.aggregate(
            n_adopted=Count("id", filter=Q(adopted=True)),
            n_inbox=Count("id", filter=Q(adopted=False, ignored=False)),
            n_online=Count("id", filter=Q(adopted=True, online=True)),
        )
        body["database"] = "ok"
        body["devices"] = {key.removeprefix("n_"): value for key, value in counts.items()}
    except Exception as exc:  # the point of a health check is to report this, not crash
        body.update(status="error", database=f"unavailable: {type(exc).__name__}")
    rt = runtime_module.current()
    body["runtime"] = "running" if rt is not None and rt.running else "stopped"
    return JsonResponse(body, status=200 if body["status"] == "ok" else 503)


@require_GET
def manifest(request):
    """Web-app manifest so the dashboard can be installed to a phone's home screen."""
    from django.templatetags.static import static

    return JsonResponse(
        {
            "name": "homedash",
            "short_name": "homedash",
            "start_url": "/",
            "display": "standalone",
            "background_color": "#111827",
            "theme_color": "#111827",
            "icons": [
                {"src": static("icons/icon-192.png"), "sizes": "192x192", "type": "image/png"},
                {"src": static("icons/icon-512.png"), "sizes": "512x512", "type": "image/png"},
            ],
        },
        content_type="application/manifest+json",
    )
