"""What devices send us by themselves.

* myStrom buttons and motion sensors call an action URL — they cannot authenticate, so the
  URL carries a per-device secret: `/hooks/mystrom/<secret>`. The secret is compared in
  constant time against every device's, unknown secrets get the same 404 as any unknown
  page (nothing reveals which devices exist), and calls are rate limited per address.
* Sleeping Shelly Gen2+ devices connect out to `/shelly/ws` when they wake and push
  `NotifyFullStatus`. The device does not authenticate either, so the connection must come
  from the address of an adopted sleeping device and its first frame's `src` must name that
  device (its MAC); a socket is also bounded in count, silence, frame size and frame rate.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections import Counter, OrderedDict

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.http import Http404, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from devices.discovery.identify import parse_ip
from devices.drivers.shelly_rpc import merge_status, parse_rpc_events, parse_rpc_status, parse_rpc_system
from devices.drivers.types import ChannelState, Event, as_float, as_int, mac_from_shelly_id, normalise_mac
from devices.runtime.manager import report
from homedash.limits import CLOSE, CLOSE_FLOOD, CLOSE_TOO_BIG, DROP, MessageBudget

log = logging.getLogger(__name__)

# myStrom generic-action codes (button firmware enum and the PIR documentation).
MYSTROM_ACTIONS = {
    1: "single", 2: "double", 3: "long", 4: "touch", 5: "wheel", 6: "battery", 11: "wheel_final",
    13: "report", 8: "motion", 9: "motion_end", 14: "motion_night", 15: "motion_twilight", 16: "motion_day",
    28: "over", 29: "under",
}
HOOK_RATE = 20        # calls per address per window
HOOK_WINDOW = 10.0    # seconds
MAX_ADDRESSES = 1024  # bounded rate-limit table
MAX_FRAME = 32 * 1024  # characters; a full status of the largest sleeper is a few KiB


class RateLimiter:
    """A fixed-window counter per key, bounded in size (oldest keys are forgotten)."""

    def __init__(self, rate: int, window: float, size: int = MAX_ADDRESSES) -> None:
        self.rate, self.window, self.size = rate, window, size
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def allow(self, key: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        start, count = self._seen.get(key, (now, 0))
        if now - start >= self.window:
            start, count = now, 0
        count += 1
        self._seen[key] = (start, count)
        self._seen.move_to_end(key)
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return count <= self.rate


hook_limiter = RateLimiter(HOOK_RATE, HOOK_WINDOW)


def _device_by_secret(secret: str):
    from devices.models import Device

    match = None
    # Every device's secret is compared, matched or not: the time taken does not depend
    # on which (or whether any) device matches.
    for pk, candidate in Device.objects.filter(adopted=True).values_list("pk", "webhook_secret"):
        if hmac.compare_digest(candidate.encode(), secret.encode()):
            match = pk
    return Device.objects.filter(pk=match).first() if match is not None else None


def mystrom_report(params) -> tuple[list[ChannelState], list[Event]]:
    """Turn an action-URL call into channel states and events. Every value is untrusted."""
    mac = normalise_mac(params.get("mac")) or ""
    code = as_int(params.get("action"))
    kind = MYSTROM_ACTIONS.get(code, "action") if code is not None else "action"
    channels: list[ChannelState] = []
    events: list[Event] = []
    battery = as_float(params.get("battery"))
    if battery is not None and 0 <= battery <= 100:
        channels.append(ChannelState(key="button", kind="button", battery_pct=battery))
    if kind.startswith("motion"):
        light = as_float(params.get("value"))
        channels.append(ChannelState(key="motion", kind="sensor", motion=kind != "motion_end"))
        if light is not None and 0 <= light <= 65535:
            channels.append(ChannelState(key="light", kind="sensor", illuminance_lux=light))
        events.append(Event(device=mac, channel="motion", kind=kind))
    elif kind not in ("battery", "report"):
        wheel = as_int(params.get("wheel"))
        value = wheel if wheel is not None and -127 <= wheel <= 127 else None
        events.append(Event(device=mac, channel="button", kind=kind, value=value))
    return channels, events


@csrf_exempt
async def mystrom_hook(request, secret: str):
    if request.method not in ("GET", "POST"):
        raise Http404
    address = request.META.get("REMOTE_ADDR", "")
    if not hook_limiter.allow(address):
        return HttpResponse("slow down", status=429, content_type="text/plain")
    if len(secret) > 64:
        raise Http404
    device = await sync_to_async(_device_by_secret)(secret)
    if device is None or device.vendor != "mystrom":
        raise Http404
    params = request.GET if request.method == "GET" else (request.POST if request.POST else request.GET)
    if normalise_mac(params.get("mac")) not in (None, device.mac):
        raise Http404  # another device's call with this device's secret: refuse
    channels, events = mystrom_report(params)
    await report(device.pk, channels, events=events, source="push")
    # Buttons blink green on HTTP 200.
    return HttpResponse("ok", content_type="text/plain")


# ----------------------------------------------------------------------------- /shelly/ws
# Who may keep a socket open here, and for how long. The device does not authenticate, so
# the only things that tell it apart are its address (that of an adopted sleeping device)
# and its first frame (which must name that device).
SLEEPER_SOCKETS = 32             # open at once, all devices together
SLEEPER_SOCKETS_PER_DEVICE = 2   # a device has one; a second covers a reconnect racing the old close
HELLO_TIMEOUT = 5.0              # seconds to the first frame: a device sends its full status at once
FRAME_RATE = 5.0                 # frames a second, after a burst of...
FRAME_BURST = 20                 # ...this many (a wake sends a full status and a few changes)
SLEEPERS_TTL = 2.0               # seconds the table of sleepers' addresses is reused
CLOSE_NOT_THIS_DEVICE = 4403     # the first frame does not name the device at this address
CLOSE_IDLE = 4408                # silent for too long
_refusals_logged = RateLimiter(1, 60.0)   # one warning per address a minute, not one per attempt
_closes_logged = RateLimiter(1, 60.0)     # the same per address and close code


def _ip(text) -> str | None:
    """A normalised IP address (an IPv4-mapped IPv6 one as IPv4), None for anything else."""
    address = parse_ip(str(text).strip("[]"))
    if address is None:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)


def _sleepers_by_address() -> dict[str, dict[str, int]]:
    """{address: {MAC: device pk}} of the adopted sleeping Shelly Gen2+ devices, as the
    runtime judges "sleeping" (what the device told us at adoption). A device known by a
    host name instead of an address cannot be matched to a connection and is left out."""
    from devices.models import Device
    from devices.runtime.sessions import DeviceConfig

    table: dict[str, dict[str, int]] = {}
    rows = Device.objects.filter(adopted=True, vendor="shelly", generation__gte=2).values_list(
        "pk", "mac", "generation", "model_code", "host", "port", "raw_info")
    for pk, mac, generation, model_code, host, port, raw_info in rows:
        config = DeviceConfig(pk=pk, mac=mac, vendor="shelly", generation=generation, model_code=model_code or "",
                              host=host, port=port, raw_info=raw_info if isinstance(raw_info, dict) else {})
        address = _ip(host)
        if address is not None and config.sleeping:
            table.setdefault(address, {})[mac] = pk
    return table


class _Sleepers:
    """The table above, read at most every SLEEPERS_TTL seconds however many connect."""

    def __init__(self) -> None:
        self.table: dict[str, dict[str, int]] = {}
        self.read_at = float("-inf")

    async def at(self, address: str) -> dict[str, int]:
        now = time.monotonic()
        if now - self.read_at > SLEEPERS_TTL:
            if self.read_at != float("-inf"):
                self.read_at = now  # connects meanwhile use the table we have (if any)
            try:
                self.table = await database_sync_to_async(_sleepers_by_address)()
            except BaseException:
                self.read_at = float("-inf")
                raise
            self.read_at = time.monotonic()
        return self.table.get(address, {})

    def forget(self) -> None:
        self.read_at = float("-inf")


sleepers = _Sleepers()


@receiver(post_save, sender="devices.Device", dispatch_uid="homedash-sleepers-saved")
@receiver(post_delete, sender="devices.Device", dispatch_uid="homedash-sleepers-deleted")
def _device_changed(sender, **kwargs):
    sleepers.forget()  # a device adopted, moved or removed here counts at its next connect


_open: Counter[str] = Counter()   # open (or opening) sleeper sockets per address


class ShellyOutboundConsumer(AsyncWebsocketConsumer):
    """The endpoint a sleeping Shelly's `ws.server` points at.

    Refused at the handshake (HTTP 403) unless it comes from the address of an adopted
    sleeping device and there is room (SLEEPER_SOCKETS in all, SLEEPER_SOCKETS_PER_DEVICE
    for each sleeper at that address).
    Then closed with an application code when:
      4403  the first frame does not name the device at this address (its `src`)
      4408  nothing arrived for HELLO_TIMEOUT seconds before the first frame, or for
            settings.SLEEPER_SOCKET_IDLE seconds after it
      4413  a frame is larger than MAX_FRAME (past 64 KiB daphne cuts the connection itself)
      4429  frames keep coming faster than FRAME_RATE after a burst of FRAME_BURST
    """

    address: str | None = None
    device_pk: int | None = None
    device_mac: str = ""
    closing = False
    watchdog: asyncio.Task | None = None

    async def __call__(self, scope, receive, send):
        # However the socket ends (a close, daphne cancelling us), its place is given back.
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._leave()

    async def dispatch(self, message):
        if message.get("type") == "websocket.receive":
            # Frames are checked before anything else: skip channels' thread hop (closing
            # stale database connections) that it does before every handler.
            await self.websocket_receive(message)
            return
        await super().dispatch(message)

    async def connect(self):
        self.status = {}
        self.expected: dict[str, int] = {}
        address = _ip((self.scope.get("client") or [None])[0])
        if address is None or sum(_open.values()) >= SLEEPER_SOCKETS:
            self._refused(address, "too many sockets" if address else "no address")
            await self.close()  # before accept: daphne answers the handshake with 403
            return
        self.address = address
        _open[address] += 1    # taken before the look-up, so a burst of connects cannot overrun
        self.expected = await sleepers.at(address)
        # Sleepers normally have an address each; the simulator's share one.
        if not self.expected or _open[address] > SLEEPER_SOCKETS_PER_DEVICE * len(self.expected):
            self._refused(address, "too many sockets" if self.expected else "not an adopted sleeping device's address")
            self._leave()
            await self.close()
            return
        subprotocols = self.scope.get("subprotocols") or []
        await self.accept("json-rpc" if "json-rpc" in subprotocols else None)
        self.last_frame = time.monotonic()
        self.budget = MessageBudget(FRAME_RATE, FRAME_BURST)
        self.watchdog = asyncio.ensure_future(self._close_when_silent())

    def _leave(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        if self.address is not None:
            _open[self.address] -= 1
            if _open[self.address] <= 0:
                del _open[self.address]
            self.address = None

    @staticmethod
    def _refused(address: str | None, why: str) -> None:
        if _refusals_logged.allow(address or "?"):
            log.warning("outbound websocket from %s refused: %s", address, why)

    async def _close_when_silent(self) -> None:
        while not self.closing:
            limit = HELLO_TIMEOUT if self.device_pk is None else float(settings.SLEEPER_SOCKET_IDLE)
            left = self.last_frame + limit - time.monotonic()
            if left <= 0:
                await self._close(CLOSE_IDLE, "silent")
                return
            await asyncio.sleep(left)

    async def _close(self, code: int, why: str) -> None:
        if self.closing:
            return
        self.closing = True
        if why != "silent" and _closes_logged.allow(f"{self.address} {code}"):
            log.warning("outbound websocket from %s (%s) closed: %s", self.address, self.device_mac or "?", why)
        await self.close(code=code)

    async def disconnect(self, code):
        self.closing = True
        self._leave()

    async def receive(self, text_data=None, bytes_data=None):
        if self.closing:
            return  # frames already on their way after our close: dropped unread
        self.last_frame = time.monotonic()
        verdict = self.budget.spend()
        if verdict == CLOSE:
            await self._close(CLOSE_FLOOD, f"more than {FRAME_RATE:g} frames a second")
            return
        if verdict == DROP:
            return
        if text_data is not None and len(text_data) > MAX_FRAME:
            await self._close(CLOSE_TOO_BIG, f"a frame of {len(text_data)} characters")
            return
        frame = None
        if text_data is not None:
            try:
                frame = json.loads(text_data)
            except ValueError:
                frame = None
        if not isinstance(frame, dict):
            if self.device_pk is None:
                await self._close(CLOSE_NOT_THIS_DEVICE, "the first frame is not a device's JSON frame")
            return
        if self.device_pk is None and not self._identify(frame):
            await self._close(CLOSE_NOT_THIS_DEVICE, f"the first frame names {str(frame.get('src'))[:40]!r}")
            return
        method = frame.get("method")
        params = frame.get("params") if isinstance(frame.get("params"), dict) else {}
        if method == "NotifyFullStatus":
            self.status = {k: v for k, v in params.items() if k != "ts"}
            await report(self.device_pk, parse_rpc_status(self.status), system=parse_rpc_system(self.status),
                         raw=self.status, source="push")
        elif method == "NotifyStatus":
            patch = {k: v for k, v in params.items() if k != "ts"}
            merge_status(self.status, patch)
            await report(self.device_pk, parse_rpc_status(self.status, list(patch)), source="push")
        elif method == "NotifyEvent":
            await report(self.device_pk, events=parse_rpc_events(params, device=self.device_mac), source="push")
        elif "id" in frame and method:
            # The device asks us something; we serve nothing over this socket.
            await self.send(json.dumps({"id": frame.get("id"), "src": "homedash",
                                        "error": {"code": 404, "message": "not implemented"}}))

    def _identify(self, frame) -> bool:
        """The first frame's `src` ("shellyplusht-<MAC>") must be the device adopted at the
        address this socket comes from."""
        mac = mac_from_shelly_id(frame.get("src"))
        if mac is None or mac not in self.expected:
            return False
        self.device_pk, self.device_mac = self.expected[mac], mac
        return True
