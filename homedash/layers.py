"""The embedded default's channel layer: Channels' in-memory layer without its per-message
overheads, which dominated a fan-out to many open pages (docs/benchmarks.md, item 4).

Channels' `InMemoryChannelLayer.group_send` starts one task per member, deep-copies the
message once per member, builds a new `asyncio.Queue` on every send (the `setdefault`
default is evaluated each time) and scans every channel and group for expiry on every call.
Here a group message is copied once and the same copy is queued for every member (our
consumers only read events), queues are created only when missing, expiry is swept at most
once a second, and a member whose queue is full is counted and logged instead of being
skipped in silence. Semantics are otherwise the same, including capacity and expiry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from copy import deepcopy

from channels.layers import InMemoryChannelLayer

log = logging.getLogger(__name__)

CLEAN_INTERVAL = 1.0  # seconds between expiry sweeps


class HouseholdChannelLayer(InMemoryChannelLayer):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._cleaned_at = 0.0
        self.dropped = 0
        self._dropped_logged_at = 0.0
        self._direct: dict[str, Callable[[dict], bool]] = {}

    def deliver_directly(self, channel: str, take: Callable[[dict], bool] | None) -> None:
        """Hand group messages for `channel` to `take(message)` at once instead of queueing
        them; `take` returns False for a message it leaves to the queue. For the live
        pages: with many open pages, a queued message per page per change costs a task
        switch and a wait in the consumer's dispatch each (20,000 a second in the fan-out
        benchmark, more than one process can do), where `take` only appends to the page's
        outbox. `take` must not block and must not keep the message (it is shared). None
        stops it."""
        if take is None:
            self._direct.pop(channel, None)
        else:
            self._direct[channel] = take

    async def flush(self):
        await super().flush()
        self._direct.clear()

    def _clean_now_and_then(self) -> None:
        now = time.monotonic()
        if now - self._cleaned_at >= CLEAN_INTERVAL:
            self._cleaned_at = now
            self._clean_expired()

    def _queue(self, channel: str) -> asyncio.Queue:
        queue = self.channels.get(channel)
        if queue is None:
            queue = self.channels[channel] = asyncio.Queue(maxsize=self.get_capacity(channel))
        return queue

    async def send(self, channel, message):
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        assert "__asgi_channel__" not in message
        from channels.exceptions import ChannelFull

        try:
            self._queue(channel).put_nowait((time.time() + self.expiry, deepcopy(message)))
        except asyncio.QueueFull:
            raise ChannelFull(channel) from None

    async def receive(self, channel):
        self.require_valid_channel_name(channel)
        self._clean_now_and_then()
        queue = self._queue(channel)
        try:
            _, message = await queue.get()
        finally:
            if queue.empty():
                self.channels.pop(channel, None)
        return message

    async def group_send(self, group, message):
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._clean_now_and_then()
        members = self.groups.get(group)
        if not members:
            return
        shared = deepcopy(message)  # one copy for everyone, not one per member
        expires = time.time() + self.expiry
        full = 0
        for channel in list(members):
            take = self._direct.get(channel)
            if take is not None:
                try:
                    if take(shared):
                        continue
                except Exception:  # one broken page must not stop the others
                    log.exception("direct delivery to %s failed; queueing instead", channel)
            try:
                self._queue(channel).put_nowait((expires, shared))
            except asyncio.QueueFull:
                full += 1
        if full:
            self.dropped += full
            now = time.monotonic()
            if now - self._dropped_logged_at >= 10:
                self._dropped_logged_at = now
                log.warning("%d message(s) to group %s dropped: a page is not keeping up (%d so far)",
                            full, group, self.dropped)


def may_have_listeners(layer, group: str) -> bool:
    """Whether a message to `group` could reach anyone. Only our in-memory layer knows its
    members; for any other layer the answer is "maybe" (True). The publisher asks before
    rendering cards that nobody would see."""
    if isinstance(layer, HouseholdChannelLayer):
        return bool(layer.groups.get(group))
    return layer is not None


def reaches_other_processes(layer) -> bool:
    """Whether a message sent on this layer can reach a runtime in another process (Redis
    does; any in-memory layer, ours included, stays inside this one)."""
    from channels.layers import InMemoryChannelLayer

    return layer is not None and not isinstance(layer, InMemoryChannelLayer)
