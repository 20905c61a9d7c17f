"""Websocket routes. The live dashboard's consumers register here."""

websocket_urlpatterns: list = []
