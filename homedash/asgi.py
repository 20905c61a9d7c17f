"""ASGI entry point: HTTP through Django (bodies capped before they are read), websockets
through Channels with session auth and an Origin check against ALLOWED_HOSTS."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "homedash.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

# Django must be set up before anything imports models (consumers, auth middleware).
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from django.conf import settings  # noqa: E402
from django.urls import path, re_path  # noqa: E402

from devices.hooks import ShellyOutboundConsumer  # noqa: E402
from devices.routing import websocket_urlpatterns  # noqa: E402

from homedash.limits import BodyLimit  # noqa: E402

application = ProtocolTypeRouter(
    {
        # A body larger than any form homedash has is refused before it is read.
        "http": BodyLimit(django_asgi_app, settings.REQUEST_BODY_LIMIT),
        "websocket": URLRouter(
            [
                # Sleeping Shelly devices connect out to us; they send no Origin and no
                # cookie, and are identified by their frames and address instead.
                path("shelly/ws", ShellyOutboundConsumer.as_asgi()),
                # Browsers: session auth, and only from the hosts we answer to.
                re_path(r"^ws/", AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))),
            ]
        ),
    }
)
