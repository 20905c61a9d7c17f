"""The live dashboard's websockets: one per page, `/ws/home/` and `/ws/devices/<pk>/`.

What a socket may receive is decided once, at connect: it joins the channel-layer groups
of the rooms (or the device) the user may see, plus `user.<pk>` so a logout or a change
of access can reach it later. After that the handlers only forward the HTML strings the
publisher rendered once per change — no per-browser rendering, no per-message checks.

A page applies messages in order, each card replacing the one with its id, so the snapshot
(every card, sent at connect and on demand) must agree with every card sent after it. It
is drawn after the socket has joined its groups, from the runtime's own live state; cards
that arrive while it is drawn are held and leave after it, and only those newer than it
(by the publisher's sequence numbers). Without this, at start-up a card pushed "online"
while the snapshot was drawn was painted "last known" again by the older snapshot.

Close codes (htmx-ext-ws reconnects by itself only on 1006/1011/1012/1013; static/js/
homedash.js handles ours):
  4401  not logged in (or logged out): the page sends the browser to the login page
  4403  logged in, but may not see this device
  4404  no such device
  4000  access changed: the page reloads, which reconnects with the new rights
  4429  the page sent far more messages than a page does, or its user did so on another
        socket within the last FLOOD_COOL_OFF seconds (homedash.js reconnects later)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.contrib.auth import user_logged_out
from django.contrib.auth.models import Group
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from devices import access, cards
from devices.models import Channel, Device, RoomAccess
from devices.runtime.publisher import device_group, room_group
from homedash.layers import HouseholdChannelLayer, reaches_other_processes
from homedash.limits import CLOSE_FLOOD, DROP, OK, WEBSOCKET_MAX_MESSAGE, CoolOff, MessageBudget

log = logging.getLogger(__name__)

# Group membership expires after a day in both channel layers (group_expiry); sockets
# live for weeks on a wall tablet, so every socket joins its groups again well before.
REJOIN_PERIOD = 6 * 3600.0
MAX_INBOUND = 1024  # bytes: the only thing a browser may say is {"type": "refresh"}
# How often it may say it: a page asks again when it comes back after 30 s hidden. Past
# the budget messages are dropped unread; a socket that keeps sending is closed (4429).
INBOUND_RATE = 1.0   # messages a second...
INBOUND_BURST = 10   # ...after this many at once
# A user whose socket was closed for flooding gets no new socket (page or debug log) for
# this long: each new one would cost a plan and a snapshot before it could flood again.
FLOOD_COOL_OFF = 30.0  # seconds
flooded_users = CoolOff(FLOOD_COOL_OFF)

# Cards bound for one page leave as one websocket message at most every FRAME seconds:
# a screen cannot show two updates within one frame, and every message costs the browser
# a render pass (~3 ms on a slow machine, bench/ item 1) and the server a websocket frame.
# A change after a quiet spell leaves at once; only a stream of changes is gathered.
FRAME = 1 / 60
# Cards waiting for one page (a browser that stopped reading, a storm of changes): past
# this many bytes they are dropped and the page gets a fresh snapshot instead, which is
# the same state in at most one card per channel.
OUTBOX_LIMIT = 512 * 1024
# Bytes (UTF-8) in one message at most, split between cards: daphne's cap applies to what
# it sends too (homedash.limits).
MESSAGE_LIMIT = WEBSOCKET_MAX_MESSAGE

CLOSE_LOGGED_OUT = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_ACCESS_CHANGED = 4000


def user_group(pk: int) -> str:
    return f"user.{pk}"


class LiveConsumer(AsyncWebsocketConsumer):
    """Shared by the pages: connect-time authorisation, snapshot, forwarding, rejoin."""

    joined: list[str]

    async def connect(self):
        self.joined = []
        self._rejoin_task = None
        self._outbox: list[str] = []
        self._outbox_bytes = 0
        self._resync = False        # the outbox overflowed: send a snapshot instead
        self._flush_at: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task | None = None
        self._last_sent = float("-inf")
        # Cards arriving while a snapshot is drawn wait for it (_send_snapshot); the first
        # one is on its way from here, and the sequence is read before the plan below.
        self._holding = True
        self._held: list[tuple[int | None, str]] = []
        self._held_bytes = 0
        cut = self._sequence()
        # Accept first, then close with an application code: a refused handshake looks like
        # a network failure (1006) to the browser, and htmx-ext-ws would retry forever.
        await self.accept()
        user = self.scope.get("user")
        if user is None or not getattr(user, "is_authenticated", False) or not getattr(user, "is_active", False):
            await self.close(code=CLOSE_LOGGED_OUT)
            return
        if flooded_users.active(user.pk):
            # Back after a flood: no plan, no snapshot (homedash.js retries with backoff).
            await self.close(code=CLOSE_FLOOD)
            return
        plan = await database_sync_to_async(self.plan)(user)
        if isinstance(plan, int):
            await self.close(code=plan)
            return
        groups, channel_pks = plan
        self.joined = [*groups, user_group(user.pk)]
        if isinstance(self.channel_layer, HouseholdChannelLayer):
            self.channel_layer.deliver_directly(self.channel_name, self._take_direct)
        await self._join()
        await self._send_snapshot(cut, channel_pks)
        self._rejoin_task = asyncio.ensure_future(self._rejoin_forever())

    def plan(self, user) -> tuple[list[str], list[int]] | int:  # pragma: no cover - abstract
        """(groups to join, channels to snapshot), or a close code. Runs in a thread."""
        raise NotImplementedError

    async def _join(self) -> None:
        for group in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)

    async def _rejoin_forever(self) -> None:
        while True:
            await asyncio.sleep(REJOIN_PERIOD)
            await self._join()

    def _sequence(self) -> int | None:
        """Where the live cards stand now (cards.live_sequence), if the numbers messages
        carry can be compared with it: only on a layer that stays in this process, whose
        cards all come from this process's publisher."""
        if reaches_other_processes(self.channel_layer):
            return None
        return cards.live_sequence()

    async def _send_snapshot(self, cut: int | None, channel_pks: list[int] | None = None) -> None:
        """Every card this page shows, as it is now (the page may have missed changes while
        the socket was down), consistent with every card sent after it.

        `cut` is the sequence read before anything the snapshot shows was read (its
        channels included: pass `channel_pks` only from a plan made after reading it).
        Cards arriving meanwhile are held; after the snapshot go those numbered above the
        cut (and any without a number); the others show nothing newer than the snapshot,
        and sent after it could only paint a card older than it."""
        self._holding = True
        # What the outbox still holds came before the cut: the snapshot shows it, or newer.
        self._outbox.clear()
        self._outbox_bytes = 0
        try:
            if channel_pks is None:
                plan = await database_sync_to_async(self.plan)(self.scope["user"])
                if isinstance(plan, int):
                    await self.close(code=plan)
                    return
                channel_pks = plan[1]
            parts = await database_sync_to_async(_snapshot)(channel_pks)
        finally:
            self._holding = False
            held, self._held, self._held_bytes = self._held, [], 0
        parts += [html for seq, html in held if seq is None or cut is None or seq > cut]
        await self._send_parts(parts)
        if self._resync:            # what arrived meanwhile overflowed: another one
            self._schedule_flush()

    async def _send_parts(self, parts: list[str]) -> None:
        """Cards in as few messages as MESSAGE_LIMIT allows — one, unless it is a large
        snapshot — split only between cards (or a device's cards), in order."""
        if not parts:
            return
        text = "".join(parts)
        if _utf8_length(text) <= MESSAGE_LIMIT:
            await self.send(text_data=text)
            return
        batch: list[str] = []
        size = 0
        for part in parts:
            n = _utf8_length(part)
            if batch and size + n > MESSAGE_LIMIT:
                await self.send(text_data="".join(batch))
                batch, size = [], 0
            batch.append(part)
            size += n
        await self.send(text_data="".join(batch))

    async def disconnect(self, code):
        if isinstance(self.channel_layer, HouseholdChannelLayer):
            self.channel_layer.deliver_directly(self.channel_name, None)
        if self._flush_at is not None:
            self._flush_at.cancel()
        if self._flushing is not None and not self._flushing.done():
            self._flushing.cancel()
        self._outbox.clear()
        self._held.clear()
        if self._rejoin_task is not None:
            self._rejoin_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rejoin_task
        for group in self.joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    # ---------------------------------------------------------------- from the page
    _inbound: MessageBudget | None = None
    _flooded = False

    async def dispatch(self, message):
        # A message from the page is counted before anything else, so a flood costs a few
        # microseconds a message (not channels' thread hop before every handler, nor a
        # snapshot) and cannot pile up behind the socket.
        if message.get("type") == "websocket.receive" and not await self._admit():
            return
        await super().dispatch(message)

    async def _admit(self) -> bool:
        if self._flooded:
            return False  # closing: what is still on its way is dropped unread
        if self._inbound is None:
            self._inbound = MessageBudget(INBOUND_RATE, INBOUND_BURST)
        verdict = self._inbound.spend()
        if verdict == OK:
            return True
        if verdict == DROP:
            return False
        self._flooded = True
        user = self.scope.get("user")
        log.warning("closing the live socket of %s: more than %g messages a second; no new one for %g s",
                    getattr(user, "username", "?"), INBOUND_RATE, FLOOD_COOL_OFF)
        flooded_users.start(getattr(user, "pk", None))
        await self.close(code=CLOSE_FLOOD)
        return False

    async def receive(self, text_data=None, bytes_data=None):
        """Browsers have one thing to say: "send me everything again". Anything else gets a
        plain-text error (which htmx ignores) and changes nothing."""
        if bytes_data is not None or text_data is None:
            await self.send(text_data="error: only JSON text messages are understood")
            return
        if len(text_data) > MAX_INBOUND:
            await self.send(text_data=f"error: message longer than {MAX_INBOUND} bytes")
            return
        try:
            message = json.loads(text_data)
        except ValueError:
            await self.send(text_data='error: not JSON; send {"type": "refresh"}')
            return
        if not isinstance(message, dict) or message.get("type") != "refresh" or set(message) - {"type", "HEADERS"}:
            await self.send(text_data='error: unknown message; the only one is {"type": "refresh"}')
            return
        await self.resend_everything()

    async def resend_everything(self) -> None:
        """A fresh snapshot, drawn by the sender (_flush) like an overflowing outbox's: one
        at a time, however often a page asks, and in order with the cards around it."""
        self._resync = True
        self._outbox.clear()
        self._outbox_bytes = 0
        self._schedule_flush()

    # ---------------------------------------------------------------- channel layer
    async def fragment(self, event):
        """A card from the queue (a layer that cannot hand it over directly)."""
        self._enqueue(event["html"], event.get("seq"))

    def _take_direct(self, message: dict) -> bool:
        """Our in-memory layer hands cards over here without queueing them."""
        if message.get("type") != "fragment":
            return False
        self._enqueue(message["html"], message.get("seq"))
        return True

    def _enqueue(self, html: str, seq: int | None = None) -> None:
        if self._holding:
            # A snapshot is being drawn: the card waits for it (_send_snapshot). Too much
            # waiting means another snapshot after this one, which covers all of it.
            if not self._resync:
                self._held.append((seq, html))
                self._held_bytes += len(html)
                if self._held_bytes > OUTBOX_LIMIT:
                    self._held.clear()
                    self._held_bytes = 0
                    self._resync = True
            return
        if not self._resync:
            self._outbox.append(html)
            self._outbox_bytes += len(html)
            if self._outbox_bytes > OUTBOX_LIMIT:
                log.warning("a page fell %d kB behind; it gets a fresh snapshot instead", self._outbox_bytes // 1024)
                self._outbox.clear()
                self._outbox_bytes = 0
                self._resync = True
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flush_at is not None or (self._flushing is not None and not self._flushing.done()):
            return                  # already on its way; _flush looks again when it is done
        loop = asyncio.get_running_loop()
        self._flush_at = loop.call_later(max(0.0, self._last_sent + FRAME - loop.time()), self._flush_later)

    def _flush_later(self) -> None:
        self._flush_at = None
        self._flushing = asyncio.ensure_future(self._flush())
        self._flushing.add_done_callback(_log_failure)

    async def _flush(self) -> None:
        self._last_sent = asyncio.get_running_loop().time()
        if self._resync:
            self._resync = False
            await self._send_snapshot(self._sequence())
        elif self._outbox:
            parts, self._outbox = self._outbox, []
            self._outbox_bytes = 0
            await self._send_parts(parts)
        self._flushing = None
        if self._outbox or self._resync:   # arrived while this one was going out
            self._schedule_flush()

    async def session_revoked(self, event):
        """A logout somewhere: close only the sockets of the session that ended (the
        same person may still be logged in on their phone)."""
        session = self.scope.get("session")
        mine = getattr(session, "session_key", None)
        if event.get("session_key") in (None, mine):
            await self.close(code=CLOSE_LOGGED_OUT)

    async def access_changed(self, event):
        await self.close(code=CLOSE_ACCESS_CHANGED)


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("sending live cards to a page failed", exc_info=task.exception())


def _utf8_length(text: str) -> int:
    # Cards are ASCII but for names and units: counting those needs no encoding.
    return len(text) if text.isascii() else len(text.encode())


def _snapshot(pks: list[int]) -> list[str]:
    """The cards, rendered in a thread (a card may look up its last stored event); the
    runtime's state where it follows the device (render_cards)."""
    channels = list(Channel.objects.select_related("device", "room", "device__room").filter(pk__in=pks)
                    .order_by("device_id", "order", "pk"))
    cards.seed_day_baselines([c.pk for c in channels])
    return cards.render_cards(channels, oob=True)  # inputs' stored presses in one query


class HomeConsumer(LiveConsumer):
    def plan(self, user):
        levels = access.room_levels(user)
        rooms = [pk for pk, level in levels.items() if level >= access.VIEW]
        groups = [room_group(pk) for pk in sorted(rooms)]
        if user.is_staff:
            groups.append(room_group(None))  # channels not in any room yet
        channel_pks = [c.pk for c in cards.for_home(access.visible_channels(user))]
        return groups, channel_pks


class DeviceConsumer(LiveConsumer):
    def plan(self, user):
        pk = self.scope["url_route"]["kwargs"]["pk"]
        device = Device.objects.filter(pk=pk, adopted=True).first()
        if device is None:
            return CLOSE_NOT_FOUND
        if not access.may_view_device(user, device):
            return CLOSE_FORBIDDEN
        channels = list(device.channels.select_related("device"))
        seen = [c for c in channels if access.may_view_channel(user, c)]
        # The publisher sends every visible channel's card to the device group.
        if {c.pk for c in channels if c.visible} <= {c.pk for c in seen}:
            groups = [device_group(device.pk)]
        else:
            # Only part of the device is shared with this user: the device group would
            # carry the other rooms' cards too, so follow the rooms instead.
            groups = sorted({room_group(access.channel_room_pk(c)) for c in seen})
        return groups, [c.pk for c in seen]


# ----------------------------------------------------------------------------- revocation
def _send_to_users(user_pks, message: dict) -> None:
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if layer is None:
        return
    for pk in set(user_pks):
        try:
            async_to_sync(layer.group_send)(user_group(pk), message)
        except Exception:  # revocation is best effort; the next connect decides anew
            log.exception("could not reach the sockets of user %s", pk)


@receiver(user_logged_out, dispatch_uid="homedash-close-sockets-on-logout")
def _logged_out(sender, request, user, **kwargs):
    if user is None:
        return
    session = getattr(request, "session", None)
    _send_to_users([user.pk], {"type": "session.revoked", "session_key": getattr(session, "session_key", None)})


@receiver(post_save, sender=RoomAccess, dispatch_uid="homedash-access-saved")
@receiver(post_delete, sender=RoomAccess, dispatch_uid="homedash-access-deleted")
def _access_changed(sender, instance, **kwargs):
    users = []
    if instance.user_id:
        users.append(instance.user_id)
    if instance.group_id:
        users += list(Group.objects.filter(pk=instance.group_id).values_list("user__pk", flat=True))
    _send_to_users([u for u in users if u is not None], {"type": "access.changed"})


def _user_saved(sender, instance, update_fields=None, created=False, **kwargs):
    # Logging in saves last_login only: that changes nobody's rights.
    if created or (update_fields is not None and set(update_fields) <= {"last_login"}):
        return
    _send_to_users([instance.pk], {"type": "access.changed"})


def _groups_changed(sender, instance, action, pk_set=None, reverse=False, **kwargs):
    if action not in ("post_add", "post_remove", "post_clear"):
        return
    if reverse:  # group.user_set.add(...): instance is the group
        users = list(pk_set or []) or list(instance.user_set.values_list("pk", flat=True))
    else:
        users = [instance.pk]
    _send_to_users(users, {"type": "access.changed"})


def _connect_user_signals() -> None:
    from django.contrib.auth import get_user_model

    User = get_user_model()
    post_save.connect(_user_saved, sender=User, dispatch_uid="homedash-user-saved")
    m2m_changed.connect(_groups_changed, sender=User.groups.through, dispatch_uid="homedash-user-groups")


_connect_user_signals()
