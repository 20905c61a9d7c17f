"""Websocket routes of the live dashboard (mounted under /ws/ by homedash.asgi, behind the
Origin check and session authentication)."""

from __future__ import annotations

from django.urls import path

from devices.consumers import DeviceConsumer, HomeConsumer
from devices.logviews import LogConsumer

websocket_urlpatterns: list = [
    path("home/", HomeConsumer.as_asgi()),
    path("devices/<int:pk>/", DeviceConsumer.as_asgi()),
    path("logs/", LogConsumer.as_asgi()),  # ?devices=1,2: debug-log views
]
