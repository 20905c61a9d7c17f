"""A fixed household for the dashboard tests (healthchecks' cast): Anna runs homedash
(staff), Ben may control the kitchen, Cara may only look at the kitchen, Dora has no
access at all. The kitchen has a plug and a light, the garden a cover; a sensor waits in
no room."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.utils import timezone

from devices.models import Channel, Device, Room, RoomAccess


@dataclass
class House:
    anna: object
    ben: object
    cara: object
    dora: object
    kitchen: Room
    garden: Room
    plug: Device
    lamp: Device
    shutter: Device
    loose: Device
    plug_ch: Channel
    lamp_ch: Channel
    cover_ch: Channel
    sensor_ch: Channel


def build_house(User) -> House:
    anna = User.objects.create_user("anna", password="pw-anna-12345", is_staff=True)
    ben = User.objects.create_user("ben", password="pw-ben-123456")
    cara = User.objects.create_user("cara", password="pw-cara-12345")
    dora = User.objects.create_user("dora", password="pw-dora-12345")
    kitchen = Room.objects.create(name="Kitchen", order=1, icon="kitchen")
    garden = Room.objects.create(name="Garden", order=2, icon="garden")
    RoomAccess.objects.create(room=kitchen, user=ben, level=RoomAccess.Level.CONTROL)
    RoomAccess.objects.create(room=kitchen, user=cara, level=RoomAccess.Level.VIEW)
    now = timezone.now()
    plug = Device.objects.create(mac="AABBCC000001", vendor="shelly", generation=2, model_code="SNSW-001P16EU",
                                 model_name="Shelly Plus 1PM", host="10.0.0.11", name="Kettle plug", room=kitchen,
                                 adopted=True, online=True, last_seen=now, firmware="1.4.4",
                                 raw_status={"switch:0": {"output": True, "apower": 1200.5}})
    lamp = Device.objects.create(mac="AABBCC000002", vendor="mystrom", model_code="102", model_name="Bulb",
                                 host="10.0.0.12", name="Table lamp", room=kitchen, adopted=True, online=True, last_seen=now)
    shutter = Device.objects.create(mac="AABBCC000003", vendor="shelly", generation=1, model_code="SHSW-25",
                                    host="10.0.0.13", name="Garden shutter", room=garden, adopted=True, online=False,
                                    last_seen=now)
    loose = Device.objects.create(mac="AABBCC000004", vendor="shelly", generation=1, model_code="SHHT-1",
                                  host="10.0.0.14", name="Attic climate", adopted=True, online=True, last_seen=now)
    plug_ch = Channel.objects.create(device=plug, key="switch:0", kind="switch", last_state_at=now,
                                     last_state={"key": "switch:0", "kind": "switch", "on": True, "power_w": 1200.5,
                                                 "energy_wh": 5000.0, "temperature_c": 41.0})
    lamp_ch = Channel.objects.create(device=lamp, key="light", kind="light", last_state_at=now,
                                     last_state={"key": "light", "kind": "light", "on": False, "brightness_pct": 40.0,
                                                 "colour": [120.0, 100.0, 40.0], "colour_mode": "hsv"})
    cover_ch = Channel.objects.create(device=shutter, key="roller:0", kind="cover", last_state_at=now,
                                      last_state={"key": "roller:0", "kind": "cover", "position_pct": 30.0,
                                                  "moving": "stopped"})
    sensor_ch = Channel.objects.create(device=loose, key="sensor:0", kind="sensor", last_state_at=now,
                                       last_state={"key": "sensor:0", "kind": "sensor", "temperature_c": 18.5,
                                                   "humidity_pct": 55.0, "battery_pct": 80.0})
    return House(anna, ben, cara, dora, kitchen, garden, plug, lamp, shutter, loose, plug_ch, lamp_ch, cover_ch, sensor_ch)


@pytest.fixture
def house(django_user_model) -> House:
    return build_house(django_user_model)


@pytest.fixture
def as_user(client):
    """as_user(user) -> the test client, logged in as that user."""

    def login(user):
        client.force_login(user)
        return client

    return login
