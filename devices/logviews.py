"""Debug logs in the browser: the console page, the device page's log panel, start / stop /
pin / download, and the websocket that carries the lines (``/ws/logs/?devices=1,2``).

Who may read a device's debug log is decided by `devices.access.may_read_logs` only: at
every view, and once when the log socket connects (the socket then joins the device's
log group, ``device.<pk>.log``, for as long as it is open, and nothing else).

The socket forwards the hub's pre-rendered, escaped lines. Because daphne has no
backpressure, it keeps its own: the page acknowledges every frame, and at most a few
frames (and bytes) may be unacknowledged; whatever arrives beyond that is dropped and
the page shows "N lines dropped". Sequence numbers from the hub make every other loss
(ring overflow, channel layer full) visible the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone as dt_timezone
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from django.conf import settings
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models.signals import m2m_changed
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from devices import access, debuglogs
from devices.models import AuditEntry, Device
from homedash.limits import CLOSE_FLOOD, DROP, OK, MessageBudget

log = logging.getLogger(__name__)

MAX_DEVICES = 16            # devices one console (and one socket) follows at once
MAX_INBOUND = 256           # bytes: a browser only says ack, pause, resume
INBOUND_RATE = 5.0          # messages a second besides acks of our frames...
INBOUND_BURST = 20          # ...after this many at once; a socket that keeps going is closed (4429)
IN_FLIGHT_FRAMES = 8        # frames sent but not yet acknowledged by the page...
IN_FLIGHT_BYTES = 1024 * 1024   # ...and their size: what a slow browser may cost us
COALESCE = 0.02             # seconds to gather the batches of several devices into one frame
FRAME_LINES = 250           # lines per frame when replaying the ring
FRAME_BYTES = 256 * 1024    # most HTML in one frame of live lines
GEN1_FILE_CAP = 512 * 1024  # bytes of a Gen1 debug log file we show
FIRST_SAFE_FIRMWARE = (1, 0, 0)  # before this, /debug/log needs no password (shelly.md §4.2)

CLOSE_BAD_REQUEST = 4400
CLOSE_LOGGED_OUT = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_ACCESS_CHANGED = 4000

# The only markup the socket writes itself: constant wrappers around lines the hub escaped.
OOB_OPEN = mark_safe('<div hx-swap-oob="beforeend:#log-lines">')
OOB_CLOSE = mark_safe("</div>")
_DROPPED = ('<div class="log-line log-dropped dev-c{}"><span class="log-dev">{}</span>'
            '<span class="log-text">{} line{} dropped ({})</span></div>')

REFUSED_WORDS = ("Debug logs are for the household's administrators and for whoever they gave the "
                 "“May read device debug logs” permission.")


def _active(user) -> bool:
    return bool(user is not None and getattr(user, "is_authenticated", False) and getattr(user, "is_active", False))


def parse_device_list(values: list[str]) -> list[int] | None:
    """``["1,2", "7"]`` -> [1, 2, 7]; None when anything is not a device number or there
    are too many."""
    pks: list[int] = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            if not part.isdigit() or len(part) > 12:
                return None
            pk = int(part)
            if pk not in pks:
                pks.append(pk)
    return pks if len(pks) <= MAX_DEVICES else None


def firmware_version(text: str) -> tuple[int, int, int] | None:
    """``"20231107-164738/1.0.8-g7d56a4e"`` or ``"1.0.8"`` -> (1, 0, 8)."""
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", (text or "").rsplit("/", 1)[-1])
    return tuple(int(g) for g in match.groups()) if match else None  # type: ignore[return-value]


def streams_to_anyone(device: Device) -> bool:
    version = firmware_version(device.firmware)
    return version is not None and version < FIRST_SAFE_FIRMWARE


def live_capable(device: Device) -> bool:
    return device.vendor == Device.Vendor.SHELLY and (device.generation or 1) >= 2


# ----------------------------------------------------------------------------- access helpers
def _log_device(request, pk: int, *, action: str | None = None) -> Device:
    """The device, if this user may read its debug log. A refused start/stop/pin is
    recorded in the audit trail."""
    device = Device.objects.select_related("room").filter(pk=pk, adopted=True).first()
    if device is None:
        raise Http404("No such device.")
    if not access.may_read_logs(request.user, device):
        if action is not None:
            AuditEntry.record(request=request, action=action, device=device, result=AuditEntry.Result.DENIED,
                              detail="not allowed to read debug logs")
        raise PermissionDenied(REFUSED_WORDS)
    return device


def _readable_devices(user) -> list[Device]:
    devices = Device.objects.select_related("room").filter(adopted=True, vendor=Device.Vendor.SHELLY,
                                                          generation__gte=2).order_by("name", "mac")
    return [d for d in devices if access.may_read_logs(user, d)]


def _download_query(pks: list[int]) -> str:
    return "&".join(f"device={pk}" for pk in pks)


def _status_map(result: dict, pks: list[int]) -> dict[int, dict]:
    statuses = {s["pk"]: s for s in result.get("logs") or [] if isinstance(s, dict) and "pk" in s}
    for pk in pks:
        statuses.setdefault(pk, {"pk": pk, "active": False, "state": "unknown", "error": result.get("error", ""),
                                 "udp_available": False})
    return statuses


def _controls_context(device: Device, status: dict, *, next_url: str, message: str = "", ok: bool = True) -> dict:
    started = status.get("started_at")
    return {"device": device, "log": status, "colour": debuglogs.colour_of(device.pk), "next": next_url,
            "message": message, "ok": ok, "streams_to_anyone": streams_to_anyone(device),
            "started": datetime.fromtimestamp(started, dt_timezone.utc) if isinstance(started, (int, float)) else None,
            "grace_left": round(status["grace_left"]) if isinstance(status.get("grace_left"), (int, float)) else None}


def _is_htmx(request) -> bool:
    return request.headers.get("HX-Request") == "true"


def _next_url(request, device: Device) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                                  require_https=request.is_secure()):
        return target
    return reverse("device", args=[device.pk])


# ----------------------------------------------------------------------------- console
def _console_plan(request) -> tuple[list[Device], list[Device]]:
    if not access.may_read_logs(request.user):
        raise PermissionDenied(REFUSED_WORDS)
    devices = _readable_devices(request.user)
    chosen = parse_device_list(request.GET.getlist("device")) or []
    by_pk = {d.pk: d for d in devices}
    return devices, [by_pk[pk] for pk in chosen if pk in by_pk]


@login_required
@require_GET
@never_cache
async def console(request):
    devices, chosen = await sync_to_async(_console_plan)(request)
    pks = [d.pk for d in chosen]
    statuses = _status_map(await debuglogs.ask({"type": "log.status", "pks": pks}), pks) if pks else {}
    here = request.get_full_path()
    for device in devices:
        device.log_colour = debuglogs.colour_of(device.pk)
    grace = int(getattr(settings, "DEBUG_LOG_GRACE", debuglogs.GRACE))
    context = {
        "grace_words": f"{grace // 60} minutes" if grace >= 120 and grace % 60 == 0 else f"{grace} seconds",
        "devices": devices,
        "chosen": chosen,
        "chosen_pks": set(pks),
        "controls": [_controls_context(d, statuses[d.pk], next_url=here) for d in chosen],
        "viewer": {"pks_csv": ",".join(map(str, pks)), "download_query": _download_query(pks)} if pks else None,
    }
    return await sync_to_async(render)(request, "logs/console.html", context)


# ----------------------------------------------------------------------------- device panel
@login_required
@require_GET
@never_cache
async def device_panel(request, pk: int):
    """The debug-log panel of a device page (loaded by `templates/logs/device_panel.html`).
    ``?open=1`` shows the live log inside it; without, the socket (if any) closes."""
    device = await sync_to_async(_log_device)(request, pk)
    status = (await debuglogs.ask({"type": "log.status", "pks": [pk]})) if live_capable(device) else {}
    if device.vendor != Device.Vendor.SHELLY:
        return HttpResponse("")  # myStrom devices have no debug log: no panel at all
    context = {
        "device": device,
        "live_capable": live_capable(device),
        "gen1": (device.generation or 1) == 1,
        "open": request.GET.get("open") == "1",
        "viewer": {"pks_csv": str(pk), "download_query": _download_query([pk])},
    }
    if live_capable(device):
        context.update(_controls_context(device, _status_map(status, [pk])[pk], next_url=reverse("device", args=[pk])))
    return await sync_to_async(render)(request, "logs/partials.html#panel", context)


@login_required
@require_GET
@never_cache
async def controls(request, pk: int):
    """The start/stop controls of one device as they are now (polled while a log runs)."""
    device = await sync_to_async(_log_device)(request, pk)
    if not live_capable(device):
        raise Http404("This device has no live debug log.")
    status = _status_map(await debuglogs.ask({"type": "log.status", "pks": [pk]}), [pk])[pk]
    html = await sync_to_async(render_to_string)(
        "logs/partials.html#controls", _controls_context(device, status, next_url=_next_url(request, device)),
        request=request)
    return HttpResponse(html)


async def _control(request, pk: int, action: str, message: dict, detail: str) -> HttpResponse:
    device = await sync_to_async(_log_device)(request, pk, action=action)
    user = await request.auser()
    if not live_capable(device):
        result = {"ok": False, "error": "live debug logs need a Shelly Gen2 or newer"}
    else:
        result = await debuglogs.ask({**message, "pk": pk, "by": user.get_username()})
    ok = bool(result.get("ok"))
    words = str(result.get("message") or result.get("error") or ("done" if ok else "failed"))[:300]
    await sync_to_async(AuditEntry.record)(request=request, action=action, device=device,
                                           result=AuditEntry.Result.OK if ok else AuditEntry.Result.FAILED,
                                           detail=f"{detail}: {words}" if detail else words)
    next_url = _next_url(request, device)
    if not _is_htmx(request):
        return redirect(next_url)
    status = _status_map(await debuglogs.ask({"type": "log.status", "pks": [pk]}), [pk])[pk]
    html = await sync_to_async(render_to_string)(
        "logs/partials.html#controls", _controls_context(device, status, next_url=next_url, message=words, ok=ok),
        request=request)
    return HttpResponse(html, status=200)


@login_required
@require_POST
async def start_log(request, pk: int):
    source = request.POST.get("source") or "websocket"
    if source not in debuglogs.SOURCES:
        return HttpResponse("source must be websocket or udp", status=400, content_type="text/plain")
    pinned = request.POST.get("pinned") == "1"
    return await _control(request, pk, "debuglog.start", {"type": "log.start", "source": source, "pinned": pinned},
                          f"over {source}" + (", pinned" if pinned else ""))


@login_required
@require_POST
async def stop_log(request, pk: int):
    return await _control(request, pk, "debuglog.stop", {"type": "log.stop"}, "")


@login_required
@require_POST
async def pin_log(request, pk: int):
    pinned = request.POST.get("pinned") == "1"
    return await _control(request, pk, "debuglog.pin", {"type": "log.pin", "pinned": pinned},
                          "pin" if pinned else "unpin")


# ----------------------------------------------------------------------------- download
def _download_plan(request) -> list[Device]:
    if not access.may_read_logs(request.user):
        raise PermissionDenied(REFUSED_WORDS)
    pks = parse_device_list(request.GET.getlist("device"))
    if not pks:
        raise Http404("Choose one or more devices.")
    return [_log_device(request, pk) for pk in pks]


@login_required
@require_GET
@never_cache
async def download(request):
    """What is buffered for these devices, as a .log file (plain text: nothing in it is
    ever interpreted by the browser)."""
    devices = await sync_to_async(_download_plan)(request)
    level = request.GET.get("level", "")
    max_level = int(level) if level in ("0", "1", "2", "3", "4") else None
    result = await debuglogs.ask({"type": "log.dump", "pks": [d.pk for d in devices], "max_level": max_level})
    if not result.get("ok"):
        return HttpResponse(f"No log: {result.get('error', 'failed')}", status=503, content_type="text/plain; charset=utf-8")
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M%S")
    response = HttpResponse(result.get("text", ""), content_type="text/plain; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="homedash-debug-{stamp}.log"'
    return response


# ----------------------------------------------------------------------------- Gen1
async def fetch_gen1_debug_file(device: Device) -> dict:
    """What a Gen1 device offers: its debug log file, when debug is on in its settings.
    homedash never switches that on for a Gen1 device."""
    import httpx

    from devices.drivers import http
    from devices.drivers.errors import DeviceError
    from devices.drivers.gate import gate_for
    from devices.drivers.shelly_gen1 import ShellyGen1

    from devices.runtime.manager import address_problem

    problem = await address_problem(device)  # before the password goes out
    if problem is not None:
        return {"error": f"address refused: {problem}"}
    creds = device.credentials
    username, password = getattr(creds, "username", "") or "admin", getattr(creds, "password", "") or None
    # The device's one turn (drivers/gate.py), as for the runtime's polls of it.
    gate = gate_for(mac=device.mac, host=device.host, port=device.port)
    async with http.make_client() as client:
        try:
            settings = await ShellyGen1(client, device.host, device.port, username=username, password=password,
                                        device=device.mac, gate=gate).settings()
            if not settings.get("debug_enable"):
                return {"enabled": False}
            async with gate:
                reply = await http.request(client, "GET", http.base_url(device.host, device.port) + "/debug/log",
                                           host=device.host, cap=GEN1_FILE_CAP,
                                           auth=httpx.BasicAuth(username, password) if password else None)
        except DeviceError as exc:
            return {"error": debuglogs.describe(exc)}
    if reply.status == 404:
        return {"enabled": True, "missing": True}
    if reply.status != 200:
        return {"enabled": True, "error": f"the device answered HTTP {reply.status}"}
    return {"enabled": True, "text": reply.body.decode("utf-8", "replace").replace("\x00", "")}


@login_required
@require_GET
@never_cache
async def gen1_file(request, pk: int):
    device = await sync_to_async(_log_device)(request, pk)
    if not (device.vendor == Device.Vendor.SHELLY and (device.generation or 1) == 1):
        raise Http404("Only Shelly Gen1 devices keep a debug log file.")
    result = await fetch_gen1_debug_file(device)
    return await sync_to_async(render)(request, "logs/gen1_file.html", {"device": device, "result": result})


device_log_urls = [
    path("", device_panel, name="device-log-panel"),
    path("controls", controls, name="device-log-controls"),
    path("start", start_log, name="device-log-start"),
    path("stop", stop_log, name="device-log-stop"),
    path("pin", pin_log, name="device-log-pin"),
    path("file", gen1_file, name="device-log-file"),
]

console_urls = [
    path("", console, name="logs"),
    path("download", download, name="logs-download"),
]


# ----------------------------------------------------------------------------- the socket
@dataclass
class Watched:
    pk: int
    name: str
    last: int | None = None     # newest line number shown (None: waiting for the replay)
    token: int = 0              # which replay we wait for
    replay_at: int | None = None   # newest line of the replay so far
    dropped: int = 0            # lines lost since the last marker
    why: str = ""


def _log_plan(user, pks: list[int]) -> dict[int, str] | tuple[str, int]:
    devices = {d.pk: d for d in Device.objects.filter(pk__in=pks, adopted=True)}
    if len(devices) != len(pks):
        return "One of these devices does not exist (any more).", CLOSE_NOT_FOUND
    for device in devices.values():
        if not access.may_read_logs(user, device):
            return REFUSED_WORDS, CLOSE_FORBIDDEN
    return {pk: str(devices[pk])[: debuglogs.MAX_NAME] for pk in pks}


class LogConsumer(AsyncWebsocketConsumer):
    """One open log view. Joins the log groups of its devices at connect, after asking
    `access`, and leaves them when the view closes."""

    watched: dict[int, Watched]

    async def dispatch(self, message):
        kind = message.get("type")
        if kind in ("log.batch", "websocket.receive"):
            # Many a second and never the database: skip channels' thread hop that closes
            # stale database connections before every handler.
            await getattr(self, get_handler_name(message))(message)
            return
        if not hasattr(self, get_handler_name(message)):
            return  # someone else's message type on the user group: not ours to handle
        await super().dispatch(message)

    async def connect(self):
        self.inbound = MessageBudget(INBOUND_RATE, INBOUND_BURST)
        self.flooded = False
        self.watched = {}
        self.groups_joined: list[str] = []
        self.paused = False
        self.in_flight: deque[int] = deque()
        self.in_flight_bytes = 0
        self.outbox: list[tuple[Watched, list[str]]] = []
        self.flusher: asyncio.Task | None = None
        self.refresher: asyncio.Task | None = None
        # Accept first, then close with our code: a refused handshake looks like a network
        # failure (1006) to the browser, and htmx-ext-ws would retry forever.
        await self.accept()
        user = self.scope.get("user")
        if not _active(user):
            await self.refuse("Log in to read debug logs.", CLOSE_LOGGED_OUT)
            return
        from devices.consumers import flooded_users, user_group

        if flooded_users.active(user.pk):
            await self.close(code=CLOSE_FLOOD)  # back after a flood (logs.js retries with backoff)
            return
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        pks = parse_device_list(query.get("devices", []))
        if not pks:
            await self.refuse(f"Choose between 1 and {MAX_DEVICES} devices.", CLOSE_BAD_REQUEST)
            return
        plan = await database_sync_to_async(_log_plan)(user, pks)
        if isinstance(plan, tuple):
            await self.refuse(*plan)
            return
        self.watched = {pk: Watched(pk, name) for pk, name in plan.items()}
        self.groups_joined = [debuglogs.log_group(pk) for pk in pks] + [user_group(user.pk)]
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        for w in self.watched.values():
            await self._ask_replay(w, None)
        self.refresher = asyncio.ensure_future(self._refresh_forever())

    async def refuse(self, text: str, code: int) -> None:
        await self.send(text_data=render_to_string("logs/partials.html#refusal", {"text": text}))
        await self.close(code=code)

    async def _ask_replay(self, w: Watched, since: int | None) -> None:
        w.token += 1
        w.last = w.replay_at = None
        await debuglogs.tell({"type": "log.watch", "pk": w.pk, "channel": self.channel_name, "replay": True,
                              "since": since, "token": w.token})

    async def _refresh_forever(self) -> None:
        """Say "still watching" to the hub (a hub in another process forgets silent viewers)
        and re-join the groups, whose membership expires in the channel layer."""
        while True:
            await asyncio.sleep(debuglogs.WATCH_REFRESH)
            for group in self.groups_joined:
                await self.channel_layer.group_add(group, self.channel_name)
            for w in self.watched.values():
                await debuglogs.tell({"type": "log.watch", "pk": w.pk, "channel": self.channel_name})

    async def disconnect(self, code):
        for task in (getattr(self, "refresher", None), getattr(self, "flusher", None)):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)
        for pk in getattr(self, "watched", {}):
            with contextlib.suppress(Exception):
                await debuglogs.tell({"type": "log.unwatch", "pk": pk, "channel": self.channel_name})

    # ---------------------------------------------------------------- from the page
    async def receive(self, text_data=None, bytes_data=None):
        if self.flooded:
            return  # closing: what is still on its way is dropped unread
        message = None
        if text_data is not None and len(text_data) <= MAX_INBOUND:
            with contextlib.suppress(ValueError):
                message = json.loads(text_data)
        kind = message.get("type") if isinstance(message, dict) else None
        # An ack of a frame we sent is free (the page acks every frame, and we send only a
        # few ahead); everything else — pause, resume, garbage — is held to a budget.
        if not (kind == "ack" and self.in_flight):
            verdict = self.inbound.spend()
            if verdict == DROP:
                return
            if verdict != OK:
                self.flooded = True
                log.warning("closing a debug-log socket: more than %g messages a second", INBOUND_RATE)
                from devices.consumers import flooded_users

                flooded_users.start(getattr(self.scope.get("user"), "pk", None))
                await self.close(code=CLOSE_FLOOD)
                return
        if message is None:
            return
        if kind == "ack":
            if self.in_flight:
                self.in_flight_bytes -= self.in_flight.popleft()
            if any(w.dropped for w in self.watched.values()) and not self.outbox and not self.paused:
                await self.flush()   # say promptly that lines were lost
        elif kind == "pause" and not self.paused:
            await self.flush()
            self.paused = True
        elif kind == "resume" and self.paused:
            self.paused = False
            # Lines that came while paused wait in the hub's ring; what the ring no longer
            # has shows up as dropped.
            for w in self.watched.values():
                await self._ask_replay(w, w.last if w.last is not None else None)
        # anything else (homedash.js asks any socket for a "refresh") changes nothing

    # ---------------------------------------------------------------- from the hub
    async def log_batch(self, event):
        w = self.watched.get(event.get("pk"))
        if w is None:
            return
        lines = event.get("lines") or []
        first = int(event.get("first") or 0)
        if event.get("replay"):
            if event.get("token") != w.token:
                return
            since, until = event.get("since"), int(event.get("until") or 0)
            if w.replay_at is not None:
                expected = w.replay_at + 1
            else:
                expected = since + 1 if isinstance(since, int) else None
            if expected is not None:
                missing = (first - expected) if lines else (until + 1 - expected)
                if missing > 0:
                    w.dropped += missing
                    w.why = "more than the server keeps came while paused"
            if lines:
                w.replay_at = first + len(lines) - 1
            if w.dropped and not lines:
                await self._send_parts(self._marker(w))
            for start in range(0, len(lines), FRAME_LINES):
                # Not held to the in-flight budget: a replay is bounded by the ring.
                await self._send_parts(self._marker(w) + lines[start:start + FRAME_LINES])
            if event.get("final", True):
                w.last, w.replay_at = until, None
            return
        if w.last is None or self.paused:
            return
        last = first + len(lines) - 1
        if last <= w.last:
            return
        if first > w.last + 1:
            w.dropped += first - w.last - 1
            w.why = "the server could not keep up"
        else:
            lines = lines[w.last + 1 - first:]
        w.last = last
        self.outbox.append((w, lines))
        if self.flusher is None or self.flusher.done():
            self.flusher = asyncio.ensure_future(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(COALESCE)
        await self.flush()

    async def flush(self) -> None:
        """Send what is waiting, in frames of at most FRAME_BYTES, unless the page is too
        far behind: then the lines are dropped (and counted), never queued."""
        outbox, self.outbox = self.outbox, []
        frame: list[str] = []
        size = 0
        for w, lines in outbox:
            if self._behind():
                w.dropped += len(lines)
                w.why = "the browser could not keep up"
                continue
            frame += self._marker(w)
            for i, html in enumerate(lines):
                if frame and size + len(html) > FRAME_BYTES:
                    await self._send_parts(frame)
                    frame, size = [], 0
                    if self._behind():
                        w.dropped += len(lines) - i
                        w.why = "the browser could not keep up"
                        break
                frame.append(html)
                size += len(html)
        if not self._behind():
            for w in self.watched.values():   # drops with no lines after them yet
                frame += self._marker(w)
        if frame:
            await self._send_parts(frame)

    def _behind(self) -> bool:
        return len(self.in_flight) >= IN_FLIGHT_FRAMES or self.in_flight_bytes >= IN_FLIGHT_BYTES

    def _marker(self, w: Watched) -> list[str]:
        if not w.dropped:
            return []
        html = format_html(_DROPPED, debuglogs.colour_of(w.pk), w.name, w.dropped, "" if w.dropped == 1 else "s",
                           w.why or "lost on the way")
        w.dropped, w.why = 0, ""
        return [html]

    async def _send_parts(self, parts: list[str]) -> None:
        if not parts:
            return
        text = OOB_OPEN + "".join(parts) + OOB_CLOSE
        self.in_flight.append(len(text))
        self.in_flight_bytes += len(text)
        await self.send(text_data=text)

    # ---------------------------------------------------------------- revocation
    async def session_revoked(self, event):
        session = self.scope.get("session")
        if event.get("session_key") in (None, getattr(session, "session_key", None)):
            await self.close(code=CLOSE_LOGGED_OUT)

    async def access_changed(self, event):
        await self.close(code=CLOSE_ACCESS_CHANGED)


# Reading logs is a permission of its own: granting or taking it (to a user or a group)
# must reach the open log sockets like a change of room access does.
def _permissions_changed(sender, instance, action, pk_set=None, reverse=False, model=None, **kwargs):
    if action not in ("post_add", "post_remove", "post_clear"):
        return
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from devices.consumers import _send_to_users

    User = get_user_model()
    if isinstance(instance, User):
        users = [instance.pk]
    elif isinstance(instance, Group):
        users = list(instance.user_set.values_list("pk", flat=True))
    else:  # permission.user_set / permission.group_set changed: pk_set holds users or groups
        if model is User:
            users = list(pk_set or [])
        else:
            users = list(User.objects.filter(groups__in=pk_set or []).values_list("pk", flat=True))
    _send_to_users(users, {"type": "access.changed"})


def _connect_permission_signals() -> None:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    m2m_changed.connect(_permissions_changed, sender=get_user_model().user_permissions.through,
                        dispatch_uid="homedash-log-user-permissions")
    m2m_changed.connect(_permissions_changed, sender=Group.permissions.through,
                        dispatch_uid="homedash-log-group-permissions")


_connect_permission_signals()
