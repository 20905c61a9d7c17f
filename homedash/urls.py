from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from devices import hooks, views
from devices import household, logviews

admin.site.site_header = "homedash administration"
admin.site.site_title = "homedash"

device_urls = [
    path("", views.device_detail, name="device"),
    path("health", views.device_health, name="device-health"),
    path("raw.json", views.device_raw, name="device-raw"),
    path("settings", views.device_settings, name="device-settings"),
    path("credentials", views.device_credentials, name="device-credentials"),
]

channel_urls = [
    path("command", views.channel_command, name="channel-command"),
    path("settings", views.channel_settings, name="channel-settings"),
]

inbox_urls = [
    path("", views.inbox, name="inbox"),
    path("scan", views.inbox_scan, name="inbox-scan"),
    path("add", views.inbox_add, name="inbox-add"),
    path("<int:pk>/adopt", views.inbox_adopt, name="inbox-adopt"),
    path("<int:pk>/ignore", views.inbox_ignore, name="inbox-ignore"),
    path("<int:pk>/move", views.inbox_move, name="inbox-move"),
]

urlpatterns = [
    path("", views.home, name="home"),
    path("devices/<int:pk>/", include(device_urls)),
    path("channels/<int:pk>/", include(channel_urls)),
    path("inbox/", include(inbox_urls)),
    path("events/", views.events, name="events"),
    path("devices/<int:pk>/logs/", include(logviews.device_log_urls)),
    path("logs/", include(logviews.console_urls)),
    path("household/", include(household.household_urls)),
    path("onboarding/", views.onboarding, name="onboarding"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", views.healthz, name="healthz"),
    path("hooks/mystrom/<str:secret>", hooks.mystrom_hook, name="mystrom-hook"),
    path("manifest.webmanifest", views.manifest, name="manifest"),
    path("favicon.ico", RedirectView.as_view(url=static("icons/icon-192.png"), permanent=True)),
    path("admin/", admin.site.urls),
]
