"""The device manager: loads adopted devices from the database, runs one session each,
publishes and persists what they find, and answers commands — in-process for the embedded
default, over the channel layer when the web and the runtime live in different processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import random
import time
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from devices.drivers.errors import DeviceError
from devices.drivers.types import Event
from devices.runtime.publisher import FLUSH_PERIOD, Catalogue, ChannelMeta, DeviceMeta, Persister, Publisher, state_from_json
from devices.runtime.sessions import START_SPREAD, CommandError, DeviceConfig, DeviceSession, describe_error
from devices.runtime.state import Change, StateStore
from homedash.layers import may_have_listeners

log = logging.getLogger(__name__)

RUNTIME_CHANNEL = "homedash.runtime"  # fixed channel name the runtime listens on for commands
COMMAND_TIMEOUT = 15.0
ADDRESS_RECHECK = 300.0  # seconds before a refused device address is looked up again
ADDRESS_WATCH = 60.0  # seconds between look-ups of a device's host name while it is followed


async def address_problem(config) -> str | None:
    """Why homedash must not connect to this device's address (None: it may); ``config``
    is anything with ``host`` and ``port`` (a DeviceConfig, a Device row). The same
    rule as the forms (discovery.identify.check_device_address): LAN addresses only,
    loopback only with HOMEDASH_ALLOW_LOOPBACK_DEVICES, host names resolved and checked."""
    from django.conf import settings

    from devices.discovery.identify import AddressRefused, check_device_address

    try:
        await check_device_address(config.host, config.port, allow_loopback=settings.ALLOW_LOOPBACK_DEVICES)
    except AddressRefused as exc:
        return str(exc)
    return None


def _load_from_database() -> tuple[list[DeviceConfig], Catalogue, dict[int, tuple[list, float | None]]]:
    from devices.models import Channel, Device

    configs, catalogue, last_known = [], Catalogue(), {}
    devices = list(Device.objects.filter(adopted=True, ignored=False).order_by("pk"))
    for device in devices:
        configs.append(DeviceConfig.from_device(device))
        catalogue.devices[device.pk] = DeviceMeta(device.pk, str(device), device.room_id, device.vendor, device.model_name)
    for channel in Channel.objects.filter(device__in=devices).order_by("device_id", "order", "pk"):
        catalogue.channels[(channel.device_id, channel.key)] = ChannelMeta(
            channel.pk, channel.device_id, channel.key, channel.kind, channel.name or channel.key,
            channel.room_id, channel.visible)
        state = state_from_json(channel.last_state)
        if state is not None:
            states, at = last_known.setdefault(channel.device_id, ([], None))
            states.append(state)
            if channel.last_state_at:
                last_known[channel.device_id] = (states, max(at or 0.0, channel.last_state_at.timestamp()))
    return configs, catalogue, last_known


def _last_presses(catalogue: Catalogue) -> dict[int, list[Event]]:
    """Each input's last stored press, per device: the runtime keeps presses in memory only,
    and the cards it pushes after a restart should show what the pages show."""
    from devices.cards import stored_presses

    inputs = {meta.pk: meta for meta in catalogue.channels.values() if meta.kind == "input"}
    found: dict[int, list[Event]] = {}
    for pk, (kind, ts) in stored_presses(inputs).items():
        meta = inputs[pk]
        found.setdefault(meta.device_pk, []).append(Event(device="", channel=meta.key, kind=kind, ts=ts.timestamp()))
    for events in found.values():
        events.sort(key=lambda e: e.ts)
    return found


def _seeds(catalogue: Catalogue) -> tuple[dict[int, list[Event]], set[int]]:
    """What the runtime starts from besides the last states: inputs' last presses, and
    which devices were online when last seen (until a device answers or fails twice its
    card says "last known", not "offline")."""
    from devices.models import Device

    online = set(Device.objects.filter(pk__in=list(catalogue.devices), online=True).values_list("pk", flat=True))
    return _last_presses(catalogue), online


class DeviceManager:
    def __init__(self, *, client=None, rng: random.Random | None = None, start_spread: float = START_SPREAD,
                 flush_period: float = FLUSH_PERIOD) -> None:
        self.store = StateStore()
        self.catalogue = Catalogue()
        self.sessions: dict[int, DeviceSession] = {}
        self._tasks: dict[int, asyncio.Task] = {}
        self.rng = rng or random.Random()
        self.start_spread = start_spread
        self.flush_period = flush_period
        self._client = client
        self._own_client = client is None
        self.layer = get_channel_layer()
        # With our in-memory layer the publisher can tell when no page follows a device or
        # room and skip rendering for nobody (most polls of a household nobody is looking
        # at); with Redis, pages in other processes may be listening, so it always renders.
        listening = None if self.layer is None else (lambda group: may_have_listeners(self.layer, group))
        self.publisher = Publisher(self.store, self.catalogue, self.render, self.send, listening)
        self.persister = Persister(self.store, self.catalogue)
        self.ready = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ rendering
    def render(self, device_pk: int, keys, presence: bool) -> str:
        """All changed cards of one device as one string of out-of-band fragments. Each
        card is kept (devices.cards.card_html): pages and snapshots reuse it until
        something it shows changes."""
        from devices.cards import card_html

        parts = []
        for key in sorted(keys):
            meta = self.catalogue.channels.get((device_pk, key))
            if meta is None or not meta.visible:
                continue
            parts.append(card_html(self.card_context(meta)))
        return "".join(parts)

    def card_context(self, meta: ChannelMeta) -> dict[str, Any]:
        live = self.store.get(meta.device_pk)
        device = self.catalogue.devices.get(meta.device_pk)
        return {
            "channel": meta,
            "device": device,
            "state": live.channels.get(meta.key) if live else None,
            "online": bool(live and live.online),
            "stale": bool(live is None or live.stale),
            "updated_at": live.updated_at if live else None,
            "last_event": next((e for e in reversed(live.events) if e.channel == meta.key), None) if live else None,
            "oob": True,
        }

    async def send(self, groups: list[str], html: str, seq: int | None = None) -> None:
        if self.layer is None:
            return
        message = {"type": "fragment", "html": html}
        if seq is not None:
            message["seq"] = seq  # see the publisher: lets a page's snapshot drop what it already shows
        for group in groups:
            await self.layer.group_send(group, message)

    # ------------------------------------------------------------------ lifecycle
    async def run(self, runtime) -> None:
        from devices.drivers.http import make_client

        self.loop = asyncio.get_running_loop()
        if self._client is None:
            self._client = make_client(max_connections=256, max_keepalive=128)
        configs, catalogue, last_known = await sync_to_async(_load_from_database)()
        self._adopt_catalogue(catalogue)
        presses, online = await sync_to_async(_seeds)(catalogue)
        for pk, (states, at) in last_known.items():
            mac = next((c.mac for c in configs if c.pk == pk), "")
            self.store.load_last_known(pk, mac, states, at, events=presses.get(pk, ()), online=pk in online)
        # Spread first requests over the start window instead of hitting every device at once.
        n = max(1, len(configs))
        for i, config in enumerate(configs):
            self._start_session(config, delay=self.start_spread * i / n + self.rng.uniform(0, self.start_spread / n))
        self.ready.set()
        tasks = [asyncio.ensure_future(self._persist_loop(runtime)), asyncio.ensure_future(self._listen(runtime))]
        try:
            await runtime.stopping.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.stop_sessions()
            await self._flush()
            if self._own_client and self._client is not None:
                await self._client.aclose()

    def _adopt_catalogue(self, catalogue: Catalogue) -> None:
        self.catalogue.devices = catalogue.devices
        self.catalogue.channels = catalogue.channels

    def _start_session(self, config: DeviceConfig, delay: float = 0.0) -> None:
        session = DeviceSession(config, self.store, self._client, start_delay=delay, rng=self.rng)
        self.sessions[config.pk] = session
        task = asyncio.get_running_loop().create_task(self._run_session(session), name=f"device:{config.mac}")
        self._tasks[config.pk] = task

    async def _run_session(self, session: DeviceSession) -> None:
        while not session.stopping.is_set():
            problem = await address_problem(session.config)
            if problem is not None:
                # Before any request (and so any password or token) goes out: the address
                # may have been saved as a name that now points at this machine or outside
                # the LAN. Checked again at every (re)start of the session.
                log.warning("not connecting to %s at %s: %s", session.config.mac, session.config.host, problem)
                self.store.failure(session.config.pk, f"address refused: {problem}", offline_after=1)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(session.stopping.wait(), ADDRESS_RECHECK)
                continue
            try:
                if await self._run_watched(session):
                    return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("session of %s crashed; restarting", session.config.mac)
                await asyncio.sleep(5)

    async def _run_watched(self, session: DeviceSession) -> bool:
        """Run the session. A device kept by host name is looked up again every
        ADDRESS_WATCH seconds while it runs (the name may be re-pointed at this machine or
        outside later): then the run ends and ``_run_session`` checks again before anything
        else is sent. True when the session ended by itself."""
        from devices.discovery.identify import parse_ip

        if parse_ip(session.config.host) is not None:
            await session.run()
            return True
        run = asyncio.ensure_future(session.run())
        try:
            while True:
                done, _ = await asyncio.wait({run}, timeout=ADDRESS_WATCH)
                if run in done:
                    run.result()
                    return True
                if await address_problem(session.config) is not None:
                    return False
        finally:
            if not run.done():
                run.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await run

    async def stop_session(self, pk: int) -> None:
        session = self.sessions.pop(pk, None)
        task = self._tasks.pop(pk, None)
        if session is not None:
            session.stop()
        if task is not None:
            try:
                await asyncio.wait_for(task, 5)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                task.cancel()
            except Exception:
                log.exception("session %s ended with an error", pk)

    async def stop_sessions(self) -> None:
        await asyncio.gather(*(self.stop_session(pk) for pk in list(self.sessions)))

    async def reload_device(self, pk: int) -> None:
        """A device was adopted, edited, re-addressed or deleted: follow the database."""
        from devices.models import Device

        def load():
            device = Device.objects.filter(pk=pk, adopted=True, ignored=False).first()
            configs, catalogue, _ = _load_from_database()
            return (DeviceConfig.from_device(device) if device else None), catalogue

        config, catalogue = await sync_to_async(load)()
        self._adopt_catalogue(catalogue)
        current = self.sessions.get(pk)
        if config is None:
            from devices.cards import forget_cards

            await self.stop_session(pk)
            self.store.forget(pk)
            self.publisher.forget(pk)
            forget_cards(device_pk=pk)
            return
        if current is not None and current.config == config:
            return
        await self.stop_session(pk)
        self._start_session(config)

    # ------------------------------------------------------------------ persistence
    async def _flush(self) -> None:
        batch = self.persister.take_batch()
        if not any(batch.values()):
            return
        try:
            created = await sync_to_async(Persister.write_batch)(batch)
        except Exception:
            log.exception("writing device state to the database failed")
            return
        if created:
            # New channels were found: refresh names/rooms and show them.
            _, catalogue, _ = await sync_to_async(_load_from_database)()
            self._adopt_catalogue(catalogue)
            for pk in {pk for pk, _ in created}:
                if self.store.get(pk) is not None:
                    self.publisher.on_change(Change(pk, frozenset(k for p, k in created if p == pk), True))

    async def _persist_loop(self, runtime) -> None:
        while not runtime.stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(runtime.stopping.wait(), self.flush_period)
            await self._flush()

    def report(self, device_pk: int, channels=(), *, events=(), system=None, raw=None, source: str = "push") -> None:
        """Something the device sent by itself. Unknown (not adopted) devices are ignored."""
        if self.store.get(device_pk) is None or device_pk not in self.sessions:
            return
        channels, events = list(channels), list(events)
        if channels or system is not None or raw is not None:
            self.store.apply(device_pk, channels, system=system, raw_status=raw, events=events, source=source)
        elif events:
            # An action URL call proves the device is alive too.
            self.store.apply(device_pk, (), events=events, source=source)

    # ------------------------------------------------------------------ commands
    async def command(self, device_pk: int, channel: str, action: str, params: dict[str, Any] | None = None) -> dict:
        """Run a command and say how it went, in words a card can show."""
        session = self.sessions.get(device_pk)
        if session is None:
            return {"ok": False, "error": "this device is not followed by homedash (not adopted?)"}
        try:
            states = await asyncio.wait_for(session.command(channel, action, params or {}), COMMAND_TIMEOUT)
        except CommandError as exc:
            return {"ok": False, "error": str(exc)}
        except DeviceError as exc:
            return {"ok": False, "error": describe_error(exc), "kind": type(exc).__name__}
        except asyncio.TimeoutError:
            return {"ok": False, "error": "not answering (timeout)", "kind": "DeviceTimeout"}
        return {"ok": True, "channels": [s.key for s in states]}

    async def _listen(self, runtime) -> None:
        """Commands and reload requests that come over the channel layer (other processes,
        or views that do not share our loop)."""
        if self.layer is None:
            return
        while not runtime.stopping.is_set():
            try:
                message = await self.layer.receive(RUNTIME_CHANNEL)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("runtime channel receive failed")
                await asyncio.sleep(1)
                continue
            asyncio.get_running_loop().create_task(self._handle(message))

    async def _handle(self, message: dict) -> None:
        kind = message.get("type")
        if kind == "device.changed" and isinstance(message.get("pk"), int):
            await self.reload_device(message["pk"])
        elif kind == "device.report" and isinstance(message.get("pk"), int):
            states = [s for s in (state_from_json(c) for c in message.get("channels") or []) if s is not None]
            events = [Event(device=str(e.get("device", "")), channel=str(e.get("channel", "")), kind=str(e.get("kind", "")),
                            value=e.get("value"), ts=float(e.get("ts") or time.time()))
                      for e in message.get("events") or [] if isinstance(e, dict)]
            self.report(message["pk"], states, events=events, source=str(message.get("source", "push")))
        elif kind == "device.command":
            result = await self.command(int(message.get("pk", 0)), str(message.get("channel", "")),
                                        str(message.get("action", "")), message.get("params") or {})
            reply = message.get("reply_channel")
            if isinstance(reply, str) and self.layer is not None:
                await self.layer.send(reply, {"type": "device.command.result", **result})


async def send_command(device_pk: int, channel: str, action: str, params: dict[str, Any] | None = None) -> dict:
    """What views call. In-process when the runtime lives here; otherwise over the channel
    layer to whichever process runs it."""
    from devices import runtime as runtime_module

    rt = runtime_module.current()
    manager = getattr(rt, "manager", None) if rt is not None else None
    if manager is not None:
        return await manager.command(device_pk, channel, action, params)
    layer = get_channel_layer()
    reply = await layer.new_channel("homedash.reply.")
    await layer.send(RUNTIME_CHANNEL, {"type": "device.command", "pk": device_pk, "channel": channel,
                                       "action": action, "params": params or {}, "reply_channel": reply})
    try:
        message = await asyncio.wait_for(layer.receive(reply), COMMAND_TIMEOUT + 2)
    except asyncio.TimeoutError:
        return {"ok": False, "error": "the device runtime did not answer"}
    message.pop("type", None)
    return message


async def notify_device_changed(pk: int) -> None:
    """Tell the runtime (wherever it runs) to re-read one device."""
    from devices import runtime as runtime_module

    rt = runtime_module.current()
    manager = getattr(rt, "manager", None) if rt is not None else None
    if manager is not None:
        await manager.reload_device(pk)
        return
    layer = get_channel_layer()
    if layer is not None:
        await layer.send(RUNTIME_CHANNEL, {"type": "device.changed", "pk": pk})


async def report(device_pk: int, channels=(), *, events=(), system=None, raw=None, source: str = "push") -> None:
    """A device told us something by itself (action URL, outbound websocket, CoIoT): hand
    it to the runtime, in this process or over the channel layer."""
    from devices import runtime as runtime_module
    from devices.runtime.publisher import state_to_json

    rt = runtime_module.current()
    manager = getattr(rt, "manager", None) if rt is not None else None
    if manager is not None:
        manager.report(device_pk, channels, events=events, system=system, raw=raw, source=source)
        return
    layer = get_channel_layer()
    if layer is not None:
        await layer.send(RUNTIME_CHANNEL, {
            "type": "device.report", "pk": device_pk, "source": source,
            "channels": [state_to_json(s) for s in channels],
            "events": [{"channel": e.channel, "kind": e.kind, "value": e.value, "ts": e.ts, "device": e.device}
                       for e in events],
        })


def device_changed_from_sync_code(pk: int) -> None:
    """Called from sync code (admin saves, views in threads): schedule the reload on the
    runtime's own loop, or send it over the channel layer to another process."""
    from asgiref.sync import async_to_sync

    from devices import runtime as runtime_module

    rt = runtime_module.current()
    manager = getattr(rt, "manager", None) if rt is not None else None
    if manager is not None and manager.loop is not None and manager.loop.is_running():
        # A fresh context: the caller's (asgiref's executor markers included) must not leak
        # into the runtime's task, or its own sync_to_async calls would refuse to run.
        manager.loop.call_soon_threadsafe(lambda: manager.loop.create_task(manager.reload_device(pk)),
                                          context=contextvars.Context())
        return
    if rt is None:
        layer = get_channel_layer()
        from homedash.layers import reaches_other_processes

        if reaches_other_processes(layer):
            # Only a shared layer reaches a runtime in another process; the in-memory one
            # would just queue a message nobody reads.
            async_to_sync(layer.send)(RUNTIME_CHANNEL, {"type": "device.changed", "pk": pk})
