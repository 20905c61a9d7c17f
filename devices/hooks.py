"""What devices send us by themselves.

* myStrom buttons and motion sensors call an action URL — they cannot authenticate, so the
  URL carries a per-device secret: `/hooks/mystrom/<secret>`. The secret is compared in
  constant time against every device's, unknown secrets get the same 404 as any unknown
  page (nothing reveals which devices exist), and calls are rate limited per address.
* Sleeping Shelly Gen2+ devices connect out to `/shelly/ws` when they wake and push
  `NotifyFullStatus`. The device does not authenticate either, so the frame's `src` must
  name an adopted device (its MAC) and the connection must come from that device's address.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections import OrderedDict

from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.http import Http404, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from devices.drivers.shelly_rpc import merge_status, parse_rpc_events, parse_rpc_status, parse_rpc_system
from devices.drivers.types import ChannelState, Event, as_float, as_int, mac_from_shelly_id, normalise_mac
from devices.runtime.manager import report

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
MAX_FRAME = 64 * 1024  # a full status of the largest sleeper is a few KiB


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


def _adopted_by_mac(mac: str):
    from devices.models import Device

    return Device.objects.filter(mac=mac, adopted=True, vendor="shelly").first()


class ShellyOutboundConsumer(AsyncWebsocketConsumer):
    """The endpoint a sleeping Shelly's `ws.server` points at."""

    device = None
    status: dict

    async def connect(self):
        self.status = {}
        subprotocols = self.scope.get("subprotocols") or []
        await self.accept("json-rpc" if "json-rpc" in subprotocols else None)

    async def receive(self, text_data=None, bytes_data=None):
        if text_data is None or len(text_data) > MAX_FRAME:
            await self.close(code=1009)
            return
        try:
            frame = json.loads(text_data)
        except ValueError:
            return
        if not isinstance(frame, dict):
            return
        if self.device is None and not await self._identify(frame):
            await self.close(code=4403)
            return
        method = frame.get("method")
        params = frame.get("params") if isinstance(frame.get("params"), dict) else {}
        if method == "NotifyFullStatus":
            self.status = {k: v for k, v in params.items() if k != "ts"}
            await report(self.device.pk, parse_rpc_status(self.status), system=parse_rpc_system(self.status),
                         raw=self.status, source="push")
        elif method == "NotifyStatus":
            patch = {k: v for k, v in params.items() if k != "ts"}
            merge_status(self.status, patch)
            await report(self.device.pk, parse_rpc_status(self.status, list(patch)), source="push")
        elif method == "NotifyEvent":
            await report(self.device.pk, events=parse_rpc_events(params, device=self.device.mac), source="push")
        elif "id" in frame and method:
            # The device asks us something; we serve nothing over this socket.
            await self.send(json.dumps({"id": frame.get("id"), "src": "homedash",
                                        "error": {"code": 404, "message": "not implemented"}}))

    async def _identify(self, frame) -> bool:
        mac = mac_from_shelly_id(frame.get("src"))
        if mac is None:
            return False
        device = await sync_to_async(_adopted_by_mac)(mac)
        client = (self.scope.get("client") or [None])[0]
        if device is None or client != device.host:
            log.warning("outbound websocket from %s claiming %s refused", client, mac)
            return False
        self.device = device
        return True
