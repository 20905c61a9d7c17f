"""Following a Shelly Gen2/3/4 device: one persistent websocket with notifications, and a
safety `Shelly.GetStatus` behind it (not every value is pushed, and a notification can be
lost while a socket dies)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import logging
from typing import Any

import httpx

from devices.drivers.errors import DeviceError
from devices.drivers.shelly_rpc import ShellyRpcSession, SessionUpdate, parse_rpc_status, parse_rpc_system
from devices.drivers.types import ChannelState
from devices.runtime.sessions import (
    OFFLINE_AFTER, SAFETY_POLL, Adapter, CommandError, DeviceConfig, Snapshot, _channel_index, _pct, describe_error,
)

log = logging.getLogger(__name__)

WATCH_TICK = 1.0  # seconds between checks of the connection while following


class RpcAdapter(Adapter):
    def __init__(self, config: DeviceConfig, client: httpx.AsyncClient, *, safety_poll: float = SAFETY_POLL) -> None:
        super().__init__(config, client)
        self.rpc = ShellyRpcSession(config.host, config.port, password=config.password or None, device=config.mac)
        # Sleepers are off the network between wakes: they come to us (outbound websocket).
        self.push = not config.sleeping
        self.safety_poll = safety_poll
        self._session = None
        self._reported_error: DeviceError | None = None

    async def poll(self) -> Snapshot:
        status = await self.rpc.refresh_status()
        return Snapshot(parse_rpc_status(status), parse_rpc_system(status), raw=status)

    def _on_update(self, update: SessionUpdate) -> None:
        session = self._session
        store, pk = session.store, session.config.pk
        health = session.live.health
        if update.kind == "connected":
            if health.connected is False and health.last_push is not None:
                health.reconnects += 1
            health.connected = True
            status = self.rpc.status
            store.apply(pk, parse_rpc_status(status), system=parse_rpc_system(status), raw_status=status, source="push")
        elif update.kind == "disconnected":
            health.connected = False
            error = update.error
            text = f"{describe_error(error)}: {error}" if error is not None else "connection lost"
            self._reported_error = error
            store.failure(pk, text, offline_after=OFFLINE_AFTER)
        elif update.kind == "status":
            store.apply(pk, update.channels, raw_status=self.rpc.status, source="push")
        elif update.kind == "event":
            store.record_events(pk, update.events)

    async def follow(self, session) -> None:
        self._session = session
        session.live.health.mode = "push"
        unsubscribe = self.rpc.subscribe(self._on_update)
        await self.rpc.start()
        next_safety = time.monotonic() + self.safety_poll
        try:
            while not session.stopping.is_set():
                await session._wait(WATCH_TICK)
                if session.stopping.is_set():
                    break
                if not self.rpc.connected:
                    # Failed reconnect attempts emit nothing themselves: report each new
                    # error so the card turns offline (after the hysteresis) and says why.
                    error = self.rpc.last_error
                    if error is not None and error is not self._reported_error:
                        self._reported_error = error
                        session.store.failure(session.config.pk, f"{describe_error(error)}: {error}",
                                              offline_after=OFFLINE_AFTER)
                    continue
                if time.monotonic() < next_safety:
                    continue
                next_safety = time.monotonic() + self.safety_poll
                try:
                    # The safety poll publishes its own "status" update for what changed.
                    await self.rpc.refresh_status()
                    session.live.health.last_poll = time.time()
                except DeviceError as exc:
                    session.store.failure(session.config.pk, f"{describe_error(exc)}: {exc}", offline_after=OFFLINE_AFTER)
        finally:
            unsubscribe()

    async def command(self, channel: str, action: str, params: dict[str, Any]) -> list[ChannelState]:
        rpc = self.rpc
        kind, _, _ = channel.partition(":")
        cid = _channel_index(channel)
        if kind == "switch" and action in ("on", "off", "toggle"):
            if action == "toggle":
                await rpc.switch_toggle(cid)
            else:
                await rpc.switch_set(cid, action == "on")
        elif kind == "cover" and action in ("open", "close", "stop", "position"):
            if action == "open":
                await rpc.cover_open(cid)
            elif action == "close":
                await rpc.cover_close(cid)
            elif action == "stop":
                await rpc.cover_stop(cid)
            else:
                await rpc.cover_go_to_position(cid, _pct(params, "position"))
        elif kind in ("light", "rgb", "rgbw", "cct") and action in ("on", "off", "toggle", "brightness"):
            if action == "toggle" and kind == "light":
                await rpc.light_toggle(cid)
            else:
                setter = {"light": rpc.light_set, "rgb": rpc.rgb_set, "rgbw": rpc.rgbw_set, "cct": rpc.cct_set}[kind]
                if action == "brightness":
                    await setter(cid, on=True, brightness=_pct(params, "brightness"))
                elif action == "toggle":
                    current = parse_rpc_status(rpc.status, [channel])
                    await setter(cid, on=not (current and current[0].on))
                else:
                    await setter(cid, on=action == "on")
        else:
            raise CommandError(f"{action!r} is not something {channel} can do")
        # The device confirms by notification; until then show what it last told us.
        return []

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.rpc.stop()
