from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import path
from django.views.generic import RedirectView

from devices import hooks, views

admin.site.site_header = "homedash administration"
admin.site.site_title = "homedash"

urlpatterns = [
    path("", views.home, name="home"),
    path("onboarding/", views.onboarding, name="onboarding"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", views.healthz, name="healthz"),
    path("hooks/mystrom/<str:secret>", hooks.mystrom_hook, name="mystrom-hook"),
    path("manifest.webmanifest", views.manifest, name="manifest"),
    path("favicon.ico", RedirectView.as_view(url=static("icons/icon-192.png"), permanent=True)),
    path("admin/", admin.site.urls),
]
