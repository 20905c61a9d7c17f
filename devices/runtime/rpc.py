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
    OFFLINE_AFTER, SAFETY_POLL, Adapter, CommandError, DeviceConfig, Snapshot, _channel_index, _hsv_to_rgb, _kelvin, _pct,
    _ramp_ms, describe_error,
)

log = logging.getLogger(__name__)

WATCH_TICK = 1.0  # seconds between checks of the connection while following


class RpcAdapter(Adapter):
    def __init__(self, config: DeviceConfig, client: httpx.AsyncClient, *, safety_poll: float = SAFETY_POLL) -> None:
        super().__init__(config, client)
        self.rpc = ShellyRpcSession(config.host, config.port, password=config.password or None, device=config.mac,
                                    gate=self.gate)
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

    async def _device_rpc(self):
        """The live websocket when there is one; HTTP otherwise (a sleeper that is awake
        right now has no session socket)."""
        if self.rpc.connected:
            return self.rpc
        from devices.drivers.shelly_rpc import ShellyRpcHttp

        return ShellyRpcHttp(self.client, self.config.host, self.config.port, password=self.config.password or None,
                             gate=self.gate)

    async def point_outbound_websocket(self, server: str | None) -> bool:
        """Point the device's outbound websocket (`ws.server`) at homedash, or switch it off
        (server None). Only ever called on a user's explicit action: it changes the
        device's configuration and needs a reboot to take effect."""
        rpc = await self._device_rpc()
        config = {"enable": bool(server), "server": server or None}
        result = await rpc.call("Ws.SetConfig", {"config": config})
        restart = isinstance(result, dict) and bool(result.get("restart_required"))
        if restart:
            await rpc.reboot(delay_ms=1000)
        return restart

    async def command(self, channel: str, action: str, params: dict[str, Any]) -> list[ChannelState]:
        rpc = self.rpc
        if channel == "device" and action == "outbound_ws":
            server = params.get("server")
            if server is not None and (not isinstance(server, str) or not server.startswith(("ws://", "wss://"))
                                       or len(server) > 200):
                raise CommandError("the outbound websocket address must be a ws:// or wss:// URL")
            await self.point_outbound_websocket(server)
            return []
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
        elif kind in ("light", "rgb", "rgbw", "cct") and action in ("on", "off", "toggle", "brightness", "colour", "colour_temp"):
            fade = _ramp_ms(params)
            transition = fade / 1000.0 if fade is not None else None
            setter = {"light": rpc.light_set, "rgb": rpc.rgb_set, "rgbw": rpc.rgbw_set, "cct": rpc.cct_set}[kind]
            if action == "toggle" and kind == "light" and transition is None:
                await rpc.light_toggle(cid)
            elif action == "brightness":
                await setter(cid, on=True, brightness=_pct(params, "brightness"), transition=transition)
            elif action == "colour" and kind in ("rgb", "rgbw"):
                rgb, brightness = _hsv_to_rgb(params)
                await setter(cid, on=True, rgb=rgb, brightness=brightness, transition=transition)
            elif action == "colour_temp" and kind == "cct":
                await rpc.cct_set(cid, on=True, ct=_kelvin(params), transition=transition)
            elif action == "toggle":
                current = parse_rpc_status(rpc.status, [channel])
                await setter(cid, on=not (current and current[0].on), transition=transition)
            elif action in ("on", "off"):
                await setter(cid, on=action == "on", transition=transition)
            else:
                raise CommandError(f"{action!r} is not something {channel} can do")
        else:
            raise CommandError(f"{action!r} is not something {channel} can do")
        # The device confirms by notification; until then show what it last told us.
        return []

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.rpc.stop()
