"""The demo household: simulated devices (devices.simulator) adopted into rooms, with a
demo login. Used by `manage.py demo`, by the browser tests and by `make screenshots`.

Two halves, so a test can run the devices in its own process and the server in another:
`describe_fleet()` asks running simulated devices who they are (async, no database), and
`prepare_database()` writes the rooms, the user and the devices (sync, no network).
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

log = logging.getLogger(__name__)

DEMO_USER = "demo"
DEMO_PASSWORD = "demo-household"

# Rooms in the order the dashboard shows them, with the admin's icon names.
ROOMS = [("Living room", "sofa"), ("Kitchen", "kitchen"), ("Bedroom", "bed"), ("Bathroom", "bath"),
         ("Office", "desk"), ("Hallway", "hall"), ("Garden", "garden")]

# Where each model of the household mix lives and what the household calls it. Switch
# loads are the simulator's (a coffee machine draws like one); names follow the load.
LAYOUT: dict[str, tuple[str, str]] = {
    "WS2": ("Kitchen", "Coffee machine"),
    "WSE": ("Bathroom", "Dehumidifier"),
    "WSW": ("Office", "Desk lamp"),
    "LCS": ("Living room", "TV"),
    "WRB": ("Bedroom", "Bedside lamp"),
    "WRS": ("Living room", "LED strip"),
    "WMS": ("Hallway", "Motion sensor"),
    "WBS": ("Hallway", "Door button"),
    "SHSW-PM": ("Office", "Heater"),
    "SHSW-25": ("Bedroom", "Shutter"),
    "SHPLG-S": ("Kitchen", "Kettle"),
    "SHDM-2": ("Living room", "Ceiling light"),
    "SHRGBW2": ("Garden", "Garden lights"),
    "SHHT-1": ("Bathroom", "Climate"),
    "SNSW-001P16EU": ("Kitchen", "Fridge"),
    "SNSW-102P16EU": ("Living room", "Blinds"),
    "SPSW-104PE16EU": ("Office", "Power strip"),
    "SNSN-0013A": ("Bedroom", "Climate"),
    "SNSN-0024X": ("Living room", "Scene buttons"),
    "SPEM-003CEBEU": ("Hallway", "Main meter"),
    "S3SW-001P16EU": ("Garden", "Pond pump"),
    "S4SW-001P16EU": ("Garden", "Fountain"),
}
# Found on the network but not adopted: what the inbox shows in the demo.
INBOX_MODELS = ("SHPLG-S", "WS2")


def model_of(sim) -> str:
    return getattr(sim, "literal", "") or str(sim.model)


def is_sleeper(sim) -> bool:
    spec = getattr(sim, "spec", None)
    return (bool(getattr(sim, "sleeping", False)) or bool(getattr(spec, "sleeping", False))
            or type(sim).__name__ == "MyStromButton")


async def describe_fleet(fleet, *, inbox: int = 0) -> list[dict[str, Any]]:
    """One row per running simulated device: identity as the device reports it (probed
    over HTTP with the drivers, like discovery would), its address and secret, and where
    it goes in the household. The last `inbox` devices are left un-adopted."""
    from devices.drivers import probe
    from devices.drivers.errors import AuthRequired, DeviceError
    from devices.drivers.http import make_client
    from devices.drivers.mystrom import MyStrom

    rows = []
    async with make_client() as client:
        for index, sim in enumerate(fleet.devices):
            model = model_of(sim)
            adopt = index < len(fleet.devices) - inbox
            room, name = LAYOUT.get(model, (None, sim.name)) if adopt else (None, "")
            row: dict[str, Any] = {
                "mac": sim.mac, "vendor": sim.vendor, "host": sim.host, "port": sim.port, "secret": sim.secret or "",
                "room": room, "name": name, "adopt": adopt, "sleeping": is_sleeper(sim),
                "generation": None, "model_code": str(sim.model), "model_name": getattr(sim, "label", "") or model,
                "firmware": "", "raw_info": {}, "auth_required": bool(sim.secret),
            }
            if sim.vendor == "shelly":
                row["generation"] = getattr(sim, "gen", 1)
            if row["sleeping"]:
                row["raw_info"] = {"sleep_mode": True, "type": sim.model}
            else:
                try:
                    try:
                        info = await probe(client, sim.host, sim.port)
                    except AuthRequired:
                        # A myStrom token hides even the info endpoint: the household typed it.
                        info = await MyStrom(client, sim.host, sim.port, token=sim.secret).info()
                except DeviceError as exc:
                    log.warning("demo device %s did not answer: %s", sim.mac, exc)
                else:
                    row.update(generation=info.generation if info.vendor == "shelly" else None,
                               model_code=str(info.type_code or info.model), model_name=info.model_name or model,
                               firmware=info.firmware or "", raw_info=info.raw,
                               auth_required=bool(info.auth_enabled or sim.secret))
            rows.append(row)
    return rows


def prepare_database(rows: list[dict[str, Any]], *, username: str = DEMO_USER, password: str = DEMO_PASSWORD,
                     staff: bool = True) -> dict[str, int]:
    """Rooms, the demo user and the devices (adopted with their secrets as credentials, or
    waiting in the inbox). Idempotent: a second run updates addresses (the simulator's
    ports change every start) and keeps everything the household changed since."""
    from django.contrib.auth import get_user_model
    from django.db import transaction

    from devices.credentials import Credentials
    from devices.models import Device, DeviceEvent, Room

    User = get_user_model()
    with transaction.atomic():
        rooms = {}
        for order, (room_name, icon) in enumerate(ROOMS):
            room, _ = Room.objects.get_or_create(name=room_name, defaults={"order": order, "icon": icon})
            rooms[room_name] = room
        user, created = User.objects.get_or_create(username=username, defaults={"is_staff": staff, "is_superuser": staff})
        if created or not user.check_password(password):
            user.set_password(password)
            user.save()
        counts = {"adopted": 0, "inbox": 0}
        for row in rows:
            device = Device.objects.filter(mac=row["mac"]).first()
            fresh = device is None
            if fresh:
                device = Device(mac=row["mac"], vendor=row["vendor"],
                                found_by=Device.FoundBy.MDNS if row["vendor"] == "shelly" else Device.FoundBy.UDP)
            device.host, device.port = row["host"], row["port"]
            device.generation = row.get("generation")
            device.model_code = str(row.get("model_code") or "")[:40]
            device.model_name = str(row.get("model_name") or "")[:80]
            device.firmware = str(row.get("firmware") or "")[:80]
            device.raw_info = row.get("raw_info") or {}
            device.auth_required = bool(row.get("auth_required"))
            secret = row.get("secret") or ""
            if secret:
                device.credentials = (Credentials(token=secret) if row["vendor"] == "mystrom"
                                      else Credentials(username="admin", password=secret))
            if fresh:
                device.name = row.get("name") or ""
                device.room = rooms.get(row.get("room") or "") if row.get("adopt") else None
                device.adopted = bool(row.get("adopt"))
                device.poll_interval = float(row.get("poll_interval") or 2.0)
            device.save()
            if fresh:
                DeviceEvent.objects.create(device=device, kind="discovered", detail=f"found at {device.address} (demo)")
            counts["adopted" if device.adopted else "inbox"] += 1
    return counts


def hook_url(base: str, secret: str) -> str:
    """What a myStrom button's generic action points at (`get://` = plain GET)."""
    return f"get://{base.split('://', 1)[-1].rstrip('/')}/hooks/mystrom/{secret}"


def backfill_history(hours: int = 24, step: int = 300, seed: int = 1) -> int:
    """Demo only: a made-up day of power readings for every metered channel that has no
    history yet, so the device page's chart has something to show on a fresh demo. Shaped
    like a household: a fridge cycles, lamps and the TV are on in the evening, the meter
    follows all of it."""
    import math
    from datetime import timedelta

    from django.utils import timezone

    from devices.models import Channel, Reading

    now = timezone.now()
    start = now - timedelta(hours=hours)
    made = []
    for channel in Channel.objects.filter(device__adopted=True, kind__in=["switch", "light", "meter"]).select_related("device"):
        if Reading.objects.filter(channel=channel, metric=Reading.Metric.POWER, ts__lt=now - timedelta(minutes=30)).exists():
            continue
        rng = random.Random(f"{seed}:{channel.device.mac}:{channel.key}")
        last = (channel.last_state or {}).get("power_w")
        nominal = float(last) if isinstance(last, (int, float)) and last > 5 else rng.uniform(30, 250)
        evening = rng.uniform(17, 19.5), rng.uniform(21.5, 23.5)
        morning = rng.uniform(6, 7.5), rng.uniform(7.5, 9)
        for i in range(int(hours * 3600 // step)):
            ts = start + timedelta(seconds=i * step)
            hour = timezone.localtime(ts).hour + timezone.localtime(ts).minute / 60
            if channel.kind == "meter":
                value = 180 + 350 * (math.sin((hour - 13) / 24 * 2 * math.pi) + 1) + rng.uniform(0, 250)
                if evening[0] <= hour <= evening[1]:
                    value += 900
            elif channel.device.name == "Fridge":
                value = nominal if (i % 6) < 2 else 1.2
            else:
                on = morning[0] <= hour <= morning[1] or evening[0] <= hour <= evening[1]
                value = nominal * rng.uniform(0.9, 1.1) if on else 0.0
            made.append(Reading(channel=channel, metric=Reading.Metric.POWER, ts=ts, value=round(value, 1)))
    Reading.objects.bulk_create(made, batch_size=2000)
    return len(made)


async def household_life(fleet, stop: asyncio.Event, *, every: float = 90.0, rng: random.Random | None = None) -> None:
    """Now and then somebody presses a button: the demo shows live events without anyone
    touching it. Switches are left alone (nobody likes a fridge that turns itself off)."""
    from asgiref.sync import sync_to_async

    rng = rng or random.Random(7)
    buttons = [d for d in fleet.devices if hasattr(d, "press") and (model_of(d) in ("WBS", "SNSN-0024X"))]
    # Right after start: the sleepers report once and every button is pressed once, so
    # their cards are not empty; then a day of history for the charts.
    try:
        await asyncio.wait_for(stop.wait(), 3.0)
        return
    except asyncio.TimeoutError:
        pass
    for sim in fleet.devices:
        try:
            if is_sleeper(sim) and hasattr(sim, "wake") and model_of(sim) != "WBS":
                result = sim.wake()
                if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                    await result
            if sim in buttons:
                result = sim.press(0, "single")
                if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                    await result
        except Exception:
            log.exception("waking demo device %s failed", sim.mac)
    try:
        await asyncio.wait_for(stop.wait(), 5.0)
        return
    except asyncio.TimeoutError:
        pass
    try:
        await sync_to_async(backfill_history)()
    except Exception:
        log.exception("demo history could not be written")
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), every * rng.uniform(0.5, 1.5))
            return
        except asyncio.TimeoutError:
            pass
        if buttons:
            sim = rng.choice(buttons)
            try:
                result = sim.press(rng.randrange(4) if model_of(sim) == "SNSN-0024X" else 0,
                                   rng.choice(("single", "double", "long")))
                if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                    await result
            except Exception:  # a demo nicety must never take the demo down
                log.exception("demo button press failed")
