"""The embedded channel layer: same behaviour as Channels' in-memory layer, one shared
copy per group message, full queues counted rather than silently skipped."""

from __future__ import annotations

import asyncio

import pytest
from channels.exceptions import ChannelFull

from homedash.layers import HouseholdChannelLayer


async def test_group_messages_reach_every_member_once():
    layer = HouseholdChannelLayer(capacity=10)
    a, b, c = [await layer.new_channel() for _ in range(3)]
    for channel in (a, b):
        await layer.group_add("room.1", channel)
    await layer.group_add("room.2", c)
    message = {"type": "fragment", "html": "<div id='channel-1'>On</div>"}
    await layer.group_send("room.1", message)
    message["html"] = "changed after sending"  # the sender's dict is not what was queued
    got_a, got_b = await layer.receive(a), await layer.receive(b)
    assert got_a["html"] == got_b["html"] == "<div id='channel-1'>On</div>"
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(c), 0.05)


async def test_full_queues_are_counted_and_others_still_served():
    layer = HouseholdChannelLayer(capacity=2)
    slow, fast = await layer.new_channel(), await layer.new_channel()
    for channel in (slow, fast):
        await layer.group_add("room.1", channel)
    for n in range(3):
        await layer.group_send("room.1", {"type": "fragment", "html": str(n)})
        await layer.receive(fast)
    assert layer.dropped == 1
    assert [(await layer.receive(slow))["html"] for _ in range(2)] == ["0", "1"]
    with pytest.raises(ChannelFull):
        await layer.send(slow, {"type": "x"})
        await layer.send(slow, {"type": "x"})
        await layer.send(slow, {"type": "x"})


async def test_expired_messages_drop_their_channel_from_groups():
    layer = HouseholdChannelLayer(expiry=0, capacity=5)
    channel = await layer.new_channel()
    await layer.group_add("room.1", channel)
    await layer.group_send("room.1", {"type": "fragment", "html": "x"})
    await asyncio.sleep(0.01)
    layer._cleaned_at = 0.0  # sweep now
    layer._clean_now_and_then()
    assert channel not in layer.groups.get("room.1", {})


async def test_only_our_layer_can_say_nobody_listens():
    from channels.layers import InMemoryChannelLayer

    from homedash.layers import may_have_listeners

    layer = HouseholdChannelLayer()
    assert not may_have_listeners(layer, "room.1")
    channel = await layer.new_channel()
    await layer.group_add("room.1", channel)
    assert may_have_listeners(layer, "room.1") and not may_have_listeners(layer, "room.2")
    await layer.group_discard("room.1", channel)
    assert not may_have_listeners(layer, "room.1")
    # Channels' own layer (and Redis) cannot tell: the answer is "maybe".
    assert may_have_listeners(InMemoryChannelLayer(), "room.1")


async def test_a_member_can_take_group_messages_directly():
    layer = HouseholdChannelLayer(capacity=10)
    page, other = await layer.new_channel(), await layer.new_channel()
    for channel in (page, other):
        await layer.group_add("room.1", channel)
    taken: list[dict] = []

    def take(message):
        if message["type"] != "fragment":
            return False                     # left to the queue
        taken.append(message)
        return True

    layer.deliver_directly(page, take)
    await layer.group_send("room.1", {"type": "fragment", "html": "<p>1</p>"})
    await layer.group_send("room.1", {"type": "access.changed"})
    assert [m["html"] for m in taken] == ["<p>1</p>"]
    assert (await layer.receive(page))["type"] == "access.changed"     # only what take refused
    assert [(await layer.receive(other))["type"] for _ in range(2)] == ["fragment", "access.changed"]

    def broken(message):
        raise RuntimeError("a page that cannot take it")

    layer.deliver_directly(page, broken)                                 # falls back to the queue
    await layer.group_send("room.1", {"type": "fragment", "html": "<p>2</p>"})
    assert (await layer.receive(page))["html"] == "<p>2</p>"
    layer.deliver_directly(page, None)
    await layer.group_send("room.1", {"type": "fragment", "html": "<p>3</p>"})
    assert (await layer.receive(page))["html"] == "<p>3</p>" and len(taken) == 1
