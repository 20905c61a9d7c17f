"""Shared by the security tests: the dashboard's household (Anna staff, Ben controls the
kitchen, Cara views the kitchen, Dora has no rooms), with every device pointed at a closed
port on this machine so nothing ever leaves it, plus an inbox device and a spare member."""

from __future__ import annotations

import socket

from django.contrib.auth import get_user_model
from django.test import Client

from devices.models import Device
from tests.dashboard.conftest import House, build_house

ROLES = ["anonymous", "outsider", "viewer", "controller", "staff"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_secure_house() -> House:
    house = build_house(get_user_model())
    Device.objects.update(host="127.0.0.1", port=closed_port())
    house.waiting = Device.objects.create(mac="AABBCC0000F1", vendor="shelly", generation=2, model_code="SNSW-001X16EU",
                                          host="127.0.0.1", port=closed_port(), adopted=False)
    house.button = Device.objects.create(mac="AABBCC0000F2", vendor="mystrom", model_code="104", host="127.0.0.1",
                                         port=closed_port(), name="Door button", room=house.kitchen, adopted=True)
    house.eve = get_user_model().objects.create_user("eve", password="pw-eve-123456")
    for d in (house.plug, house.lamp, house.shutter, house.loose):
        d.refresh_from_db()
    return house


def user_for(house: House, role: str):
    return {"anonymous": None, "outsider": house.dora, "viewer": house.cara, "controller": house.ben,
            "staff": house.anna}[role]


def client_for(house: House, role: str) -> Client:
    client = Client()
    user = user_for(house, role)
    if user is not None:
        client.force_login(user)
    return client
