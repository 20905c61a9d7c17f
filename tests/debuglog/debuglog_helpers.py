"""Shared pieces of the debug-log tests: a hub running in a real Runtime of this process,
simulated Shelly devices adopted into the database, the household's cast (staff, a member
allowed to read logs, a member who is not) and log sockets on the real ASGI application."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from html import unescape

from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

from devices import runtime as runtime_module
from devices.credentials import Credentials
from devices.debuglogs import install_hub
from devices.models import Device, Room, RoomAccess
from devices.runtime import Runtime
from devices.simulator.shelly_rpc import ShellyRpc

ORIGIN = (b"origin", b"http://127.0.0.1")
LINE_RE = re.compile(r'<div class="log-line ([^"]*)">(.*?)</div>', re.S)
TEXT_RE = re.compile(r'<span class="log-text">(.*?)</span>', re.S)
DEV_RE = re.compile(r'<span class="log-dev">(.*?)</span>', re.S)
DROPPED_RE = re.compile(r"(\d+) lines? dropped")


async def until(predicate, timeout: float = 5.0, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return bool(predicate())


@contextlib.asynccontextmanager
async def running_hub(tmp_path, **options):
    """A Runtime with only the debug-log hub, installed as this process's runtime (so views
    and consumers reach it in-process, as under `serve`)."""
    options.setdefault("grace", 30.0)
    options.setdefault("flush_period", 0.05)
    options.setdefault("state_path", tmp_path / "debuglogs.json")
    rt = Runtime()
    hub = install_hub(rt, **options)
    runtime_module.install(rt)
    await rt.start()
    await asyncio.wait_for(hub.ready.wait(), 5)
    try:
        yield hub
    finally:
        await rt.stop()
        runtime_module.install(None)


def shelly(**kw) -> ShellyRpc:
    kw.setdefault("drift_period", None)
    kw.setdefault("minute_period", 0)
    kw.setdefault("debug_rate", 20.0)
    return ShellyRpc(kw.pop("model", "SNSW-001P16EU"), **kw)


async def adopt(sim: ShellyRpc, *, name: str, room: Room | None = None, password: str | None = None) -> Device:
    return await Device.objects.acreate(
        mac=sim.mac, vendor="shelly", generation=sim.gen, model_code=sim.model, model_name=sim.label,
        host=sim.host, port=sim.port, name=name, room=room, adopted=True, firmware=sim.ver,
        auth_required=bool(password), credentials=Credentials(password=password) if password else Credentials())


def _cast():
    User = get_user_model()
    room = Room.objects.create(name="Hall")
    staff = User.objects.create_user("anna", password="x", is_staff=True)
    reader = User.objects.create_user("ben", password="x")
    reader.user_permissions.add(Permission.objects.get(codename="read_debug_logs"))
    RoomAccess.objects.create(room=room, user=reader, level=RoomAccess.Level.VIEW)
    outsider = User.objects.create_user("carla", password="x")
    RoomAccess.objects.create(room=room, user=outsider, level=RoomAccess.Level.CONTROL)
    return {"room": room, "staff": staff, "reader": reader, "outsider": outsider}


async def cast() -> dict:
    return await sync_to_async(_cast)()


def _session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def open_log(pks, user) -> tuple[WebsocketCommunicator, bool]:
    headers = [ORIGIN]
    if user is not None:
        headers.append((b"cookie", await sync_to_async(_session_cookie)(user)))
    from homedash.asgi import application

    path = "/ws/logs/?devices=" + ",".join(str(pk) for pk in pks)
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect(timeout=3)
    return communicator, connected


class Reader:
    """What a log page would show: lines (device, classes, text) and drop markers, from
    the frames of one socket. Acknowledges frames like static/js/logs.js unless told not to."""

    def __init__(self, communicator: WebsocketCommunicator, *, ack: bool = True) -> None:
        self.communicator = communicator
        self.ack = ack
        self.lines: list[tuple[str, str, str]] = []   # (device, classes, text)
        self.dropped = 0
        self.frames = 0
        self.closed: int | None = None
        self.raw: list[str] = []

    def take(self, frame: str) -> None:
        self.frames += 1
        self.raw.append(frame)
        for classes, body in LINE_RE.findall(frame):
            text = unescape(TEXT_RE.search(body).group(1)) if TEXT_RE.search(body) else ""
            dev = unescape(DEV_RE.search(body).group(1)) if DEV_RE.search(body) else ""
            if "log-dropped" in classes:
                self.dropped += int(DROPPED_RE.search(text).group(1))
            else:
                self.lines.append((dev, classes, text))

    async def read(self, predicate=lambda r: False, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate(self) and time.monotonic() < deadline:
            # Not receive_output(timeout=...): its timeout cancels the application.
            if self.communicator.future.done():
                self.communicator.future.result()
                return predicate(self)
            try:
                message = await asyncio.wait_for(self.communicator.output_queue.get(),
                                                 min(0.3, max(0.01, deadline - time.monotonic())))
            except asyncio.TimeoutError:
                continue
            if message["type"] == "websocket.close":
                self.closed = message.get("code")
                return predicate(self)
            self.take(message.get("text", ""))
            if self.ack:
                await self.communicator.send_to(text_data='{"type":"ack"}')
        return predicate(self)

    def texts(self, device: str | None = None) -> list[str]:
        return [t for d, _, t in self.lines if device is None or d == device]
