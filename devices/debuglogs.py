"""The debug-log hub: Shelly debug logs, live, for whoever may read them.

One `LogHub` lives in the runtime process. Per device it keeps

* at most one upstream: the device's ``ws://host/debug/log`` (the firmware serves three
  listeners at most, and other tools may want one) or UDP datagrams the device sends to
  our listener after we pointed its ``debug.udp.addr`` at us;
* a ring buffer of the last N lines, each rendered to escaped HTML once, numbered with a
  per-device sequence number; new viewers get the ring first;
* the debug settings the device had before a user started the log, so that stopping (or
  the last viewer leaving, after a grace period, unless pinned) puts them back. They are
  also written to a small file in the data directory, so a restart of homedash does not
  forget what to restore.

Every ~150 ms the lines that arrived since the last tick go, as one message per device,
to the channel-layer group ``device.<pk>.log``. Sequence numbers make loss visible: a
viewer that sees a gap (the ring wrapped, a batch was over budget, the channel layer
dropped a message, its browser did not keep up) shows "N lines dropped" instead of
silently missing lines. Nothing here grows with the number of lines or a slow browser.

Control comes as small dict messages (``log.start``, ``log.stop``, ``log.pin``,
``log.status``, ``log.dump``, ``log.watch``, ``log.unwatch``): `ask()`/`tell()` hand them
to the hub of this process directly, or over the channel layer (``HUB_CHANNEL``) to the
process that runs it when web and runtime are split.

The device's debug settings change only because of a user's start, and go back when that
log ends; homedash never switches a device's debug output on by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import ipaddress
import json
import logging
import os
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone as dt_timezone
from pathlib import Path
from typing import Any

from asgiref.sync import sync_to_async
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from django.utils.html import escape, format_html

from devices.drivers.debuglog import LINE_CAP, DebugLogStream, parse_udp_log_datagram
from devices.drivers.errors import AuthRequired, DeviceError, Throttled, Unsupported, WrongCredentials
from devices.drivers.gate import DeviceGate, gate_for
from devices.drivers.types import LogLine, mac_from_shelly_id
from devices.runtime.manager import address_problem

log = logging.getLogger(__name__)

HUB_CHANNEL = "homedash.debuglog"   # fixed channel the hub reads commands from (split processes)
ASK_TIMEOUT = 20.0                  # a start waits for Sys.GetConfig + Sys.SetConfig
FLUSH_PERIOD = 0.15                 # seconds between batches to browsers (~100-250 ms)
BATCH_LINES = 250                   # most lines of one device in one batch; older ones are dropped
BATCH_BYTES = 192 * 1024            # most HTML of one device in one batch
REPLAY_CHUNK = 250                  # lines per message when a viewer gets the ring
DUMP_CAP = 16 * 2**20               # characters in one download
RING_SIZE = 1000
GRACE = 120.0                       # seconds a log runs on with nobody watching
WATCH_REFRESH = 60.0                # viewers say "still here" this often...
WATCH_EXPIRY = 150.0                # ...and are forgotten after this long without it
RECONNECT_FIRST = 1.0
RECONNECT_MAX = 30.0
RESTORE_RETRY_MAX = 300.0
SHUTDOWN_RESTORE_TIMEOUT = 3.0
MAX_NAME = 40                       # device tag length in a line
UPTIME_BELOW = 1_000_000_000.0      # device "timestamps" below this are seconds since boot
SOURCES = ("websocket", "udp")
LEVELS = {0: "error", 1: "warn", 2: "info", 3: "debug", 4: "verbose"}
COLOURS = 8                         # device colours in the console (CSS classes dev-c0..7)

_LINE = ('<div class="log-line lv-{} dev-c{}"><span class="log-dev">{}</span>'
         '<time class="log-rx" datetime="{}">{}</time><span class="log-ts" title="{}">{}</span>'
         '<span class="log-lvl">{}</span><span class="log-text">{}</span></div>')
_NOTE = ('<div class="log-line log-note dev-c{}"><span class="log-dev">{}</span>'
         '<time class="log-rx" datetime="{}">{}</time><span class="log-text">{}</span></div>')


def log_group(pk: int) -> str:
    """The channel-layer group of one device's log lines (joined only while a view is open)."""
    return f"device.{pk}.log"


def level_word(level: int | None) -> str:
    return LEVELS.get(level, "") if level is not None else ""


def colour_of(pk: int) -> int:
    return pk % COLOURS


def describe(exc: BaseException) -> str:
    from devices.runtime.sessions import describe_error

    detail = str(exc)
    return f"{describe_error(exc)} ({detail})" if detail else describe_error(exc)


# ----------------------------------------------------------------------------- data
@dataclass(slots=True)
class Entry:
    """One line in a ring: the parsed line, its number and its HTML (rendered once)."""

    seq: int
    line: LogLine
    html: str
    note: bool = False


@dataclass
class DeviceFacts:
    """What the hub needs to know about a device, read from the database at start."""

    pk: int
    name: str
    mac: str
    vendor: str
    generation: int | None
    host: str
    port: int
    password: str


@dataclass
class DeviceLog:
    pk: int
    name: str
    ring: deque
    html_name: str = ""
    seq: int = 0                      # number of the newest line
    flushed: int = 0                  # newest line already sent to the group
    source: str | None = None         # "websocket" | "udp" while the log runs
    pinned: bool = False
    previous: dict[str, Any] | None = None   # the device's debug settings before we touched them
    touched: set[str] = field(default_factory=set)   # which of them we changed
    facts: DeviceFacts | None = None
    state: str = "off"                # off, connecting, streaming, reconnecting, error, restore pending
    error: str = ""
    open_without_auth: bool | None = None
    udp_addr: str | None = None       # what we told the device
    udp_sources: set[str] = field(default_factory=set)
    started_by: str = ""
    started_at: float | None = None
    viewers: dict[str, float] = field(default_factory=dict)   # channel name -> last seen (monotonic)
    upstream: asyncio.Task | None = None
    grace: asyncio.Task | None = None
    grace_until: float | None = None
    retry: asyncio.Task | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def active(self) -> bool:
        return self.source is not None

    def status(self, hub: "LogHub") -> dict[str, Any]:
        return {
            "pk": self.pk, "active": self.active, "source": self.source, "pinned": self.pinned,
            "state": self.state, "error": self.error, "viewers": len(self.viewers), "lines": self.seq,
            "open_without_auth": self.open_without_auth, "started_by": self.started_by,
            "started_at": self.started_at, "restore_pending": bool(self.touched) and not self.active,
            "grace_left": max(0.0, self.grace_until - time.monotonic()) if self.grace_until else None,
            "udp_available": hub.udp_port is not None,
        }


# ----------------------------------------------------------------------------- helpers
def _device_facts(pk: int) -> DeviceFacts | None:
    from devices.models import Device

    device = Device.objects.filter(pk=pk, adopted=True).first()
    if device is None:
        return None
    creds = device.credentials
    return DeviceFacts(pk=device.pk, name=str(device)[:MAX_NAME], mac=device.mac, vendor=device.vendor,
                       generation=device.generation, host=device.host, port=device.port,
                       password=getattr(creds, "password", "") or "")


def device_gate(facts: DeviceFacts) -> DeviceGate:
    """The device's one turn in this process (drivers/gate.py), the same the runtime's
    session takes. In scaled mode it lives in the worker that owns the device."""
    return gate_for(mac=facts.mac, host=facts.host, port=facts.port)


def _audit(pk: int, action: str, result: str, detail: str) -> None:
    from devices.models import AuditEntry, Device

    AuditEntry.record(action=action, device=Device.objects.filter(pk=pk).first(), result=result, detail=detail)


def _clock(moment: datetime) -> str:
    return f"{moment:%H:%M:%S}.{moment.microsecond // 1000:03d}"


def _format_clock(ts: float, tz) -> str:
    return _clock(datetime.fromtimestamp(ts, tz))


def device_time(ts: float | None, tz) -> tuple[str, str]:
    """(what to show, what it is) for a device's own timestamp, which right after boot (and
    always over UDP) counts seconds since the device started."""
    if ts is None:
        return "", ""
    if ts < UPTIME_BELOW:
        return f"up {ts:.3f}", "seconds since the device started"
    try:
        return _format_clock(ts, tz), "the device's clock"
    except (OverflowError, OSError, ValueError):
        return f"{ts:.3f}", "the device's clock"


def debug_patch(previous: dict[str, Any], touched: set[str]) -> dict[str, Any]:
    """The Sys.SetConfig patch that puts back what we changed, and only that."""
    debug: dict[str, Any] = {}
    if "websocket" in touched:
        ws = previous.get("websocket") if isinstance(previous.get("websocket"), dict) else {}
        debug["websocket"] = {"enable": bool(ws.get("enable"))}
    if "udp" in touched:
        udp = previous.get("udp") if isinstance(previous.get("udp"), dict) else {}
        addr = udp.get("addr")
        debug["udp"] = {"addr": addr if isinstance(addr, str) and addr else None}
    return {"debug": debug}


def udp_address_for(device_host: str, bind: str, port: int) -> str:
    """The ``host:port`` a device should send its UDP log to: our bind address, or, when we
    listen on every interface, the address of the interface that routes to the device.
    (Connecting a UDP socket only picks a route; nothing is sent.)"""
    ip = ipaddress.ip_address(bind)
    if not ip.is_unspecified:
        chosen = str(ip)
    else:
        target = socket.getaddrinfo(device_host, 9, type=socket.SOCK_DGRAM)[0]
        with socket.socket(target[0], socket.SOCK_DGRAM) as probe:
            probe.connect(target[4])
            chosen = probe.getsockname()[0]
    return f"[{chosen}]:{port}" if ":" in chosen else f"{chosen}:{port}"


def resolve_addresses(host: str) -> set[str]:
    try:
        return {info[4][0] for info in socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)}
    except OSError:
        return set()


class _UdpLogProtocol(asyncio.DatagramProtocol):
    def __init__(self, hub: "LogHub") -> None:
        self.hub = hub

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            self.hub.udp_datagram(data, addr[0])
        except Exception:  # one bad datagram must not end the listener
            log.exception("debug log datagram from %s could not be handled", addr[0])


# ----------------------------------------------------------------------------- the hub
class LogHub:
    def __init__(self, *, manager=None, client=None, ring_size: int = RING_SIZE, line_cap: int = LINE_CAP,
                 grace: float = GRACE, udp_port: int | None = None, udp_bind: str = "0.0.0.0",
                 state_path: Path | None = None, flush_period: float = FLUSH_PERIOD, time_zone=None,
                 watch_expiry: float = WATCH_EXPIRY) -> None:
        self.manager = manager
        self._client = client
        self._own_client = client is None
        self.ring_size = ring_size
        self.line_cap = line_cap
        self.grace = grace
        self.udp_port = udp_port          # None: no UDP source; 0: any free port (tests)
        self.udp_bind = udp_bind
        self.state_path = state_path
        self.flush_period = flush_period
        self.tz = time_zone or dt_timezone.utc
        self.watch_expiry = watch_expiry
        self.logs: dict[int, DeviceLog] = {}
        self.layer = get_channel_layer()
        self.udp_ignored = 0              # datagram lines from devices without a UDP log
        self._udp_transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task] = set()
        self.ready = asyncio.Event()
        self.stopping = False

    # ---------------------------------------------------------------- lifecycle
    async def run(self, runtime) -> None:
        """The runtime service: UDP listener, batching, commands from other processes;
        on stop, end the logs and put the devices' settings back where it can."""
        from devices.drivers.http import make_client

        if self._client is None:
            self._client = make_client(max_connections=16, max_keepalive=4)
        if self.udp_port is not None and self._udp_transport is None:
            loop = asyncio.get_running_loop()
            try:
                self._udp_transport, _ = await loop.create_datagram_endpoint(
                    lambda: _UdpLogProtocol(self), local_addr=(self.udp_bind, self.udp_port))
            except OSError as exc:
                # Websocket logs still work; the start form then offers no UDP.
                log.error("debug log UDP listener on %s:%s failed (%s); UDP logs are off",
                          self.udp_bind, self.udp_port, exc)
                self.udp_port = None
            else:
                self.udp_port = self._udp_transport.get_extra_info("sockname")[1]
                log.info("debug log UDP listener on %s:%s", self.udp_bind, self.udp_port)
        await self._resume_remembered()
        tasks = [asyncio.ensure_future(self._flush_loop(runtime)), asyncio.ensure_future(self._listen(runtime))]
        self.ready.set()
        try:
            await runtime.stopping.wait()
        finally:
            self.stopping = True
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._shutdown()

    async def _shutdown(self) -> None:
        for entry in self.logs.values():
            for task in (entry.upstream, entry.grace, entry.retry):
                if task is not None:
                    task.cancel()
        for task in list(self._tasks):
            task.cancel()
        # Nobody can be watching any more: put back what unpinned logs changed, briefly. A
        # device that does not answer now is restored after the next start (state file).
        unpinned = [e for e in self.logs.values() if e.active and not e.pinned]
        for entry in unpinned:
            entry.source = None   # a clean stop ends them; only pinned logs carry on after a restart
        unpinned = [e for e in unpinned if e.touched]
        if unpinned:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(self._restore_once(e) for e in unpinned),
                                                      return_exceptions=True), SHUTDOWN_RESTORE_TIMEOUT)
        await self._save_state()
        if self._udp_transport is not None:
            self._udp_transport.close()
        if self._own_client and self._client is not None:
            await self._client.aclose()

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---------------------------------------------------------------- commands
    async def handle(self, message: dict) -> dict:
        """One command (from `ask`/`tell`, in-process or off the channel layer)."""
        kind = message.get("type")
        pk = message.get("pk")
        try:
            if kind == "log.status":
                pks = [p for p in message.get("pks") or [] if isinstance(p, int)]
                return {"ok": True, "logs": [self.status(p) for p in pks]}
            if kind == "log.watch" and isinstance(pk, int) and isinstance(message.get("channel"), str):
                await self.watch(pk, message["channel"], replay=bool(message.get("replay")),
                                 since=message.get("since"), token=message.get("token"))
                return {"ok": True}
            if kind == "log.unwatch" and isinstance(pk, int) and isinstance(message.get("channel"), str):
                self.unwatch(pk, message["channel"])
                return {"ok": True}
            if kind == "log.start" and isinstance(pk, int):
                return await self.start(pk, str(message.get("source") or "websocket"), by=str(message.get("by") or ""),
                                        pinned=bool(message.get("pinned")))
            if kind == "log.stop" and isinstance(pk, int):
                return await self.stop(pk, by=str(message.get("by") or ""))
            if kind == "log.pin" and isinstance(pk, int):
                return await self.pin(pk, bool(message.get("pinned")), by=str(message.get("by") or ""))
            if kind == "log.dump":
                pks = [p for p in message.get("pks") or [] if isinstance(p, int)]
                level = message.get("max_level")
                return {"ok": True, "text": self.dump(pks, level if isinstance(level, int) else None)}
        except Exception as exc:
            log.exception("debug log command %s failed", kind)
            return {"ok": False, "error": f"homedash failed: {type(exc).__name__}"}
        return {"ok": False, "error": "unknown debug log command"}

    async def _listen(self, runtime) -> None:
        if self.layer is None:
            return
        while not runtime.stopping.is_set():
            try:
                message = await self.layer.receive(HUB_CHANNEL)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("debug log channel receive failed")
                await asyncio.sleep(1)
                continue
            self._spawn(self._answer(message))

    async def _answer(self, message: dict) -> None:
        result = await self.handle(message)
        reply = message.get("reply_channel")
        if isinstance(reply, str) and self.layer is not None:
            await self.layer.send(reply, {"type": "log.result", **result})

    # ---------------------------------------------------------------- the ring
    def _log(self, pk: int, name: str | None = None) -> DeviceLog:
        entry = self.logs.get(pk)
        if entry is None:
            entry = self.logs[pk] = DeviceLog(pk=pk, name=name or f"device {pk}", ring=deque(maxlen=self.ring_size))
        elif name:
            entry.name = name
        entry.html_name = "" + escape(entry.name)
        return entry

    def ingest(self, pk: int, line: LogLine) -> None:
        """A line from the device: number it, render it once, keep it in the ring."""
        entry = self.logs.get(pk)
        if entry is None:
            return
        entry.seq += 1
        rx = datetime.fromtimestamp(line.received_at, self.tz)
        shown, meaning = device_time(line.ts, self.tz)
        level = line.level if line.level in LEVELS else "x"
        # Thousands of lines a second: escape() the device's text (and, once per device, its
        # name) explicitly instead of format_html's escaping of every argument. Everything
        # else here is a number or a word of ours. A plain str, not a SafeString: the
        # in-memory channel layer deep-copies every message, and str subclasses copy slowly.
        html = _LINE.format(level, colour_of(pk), entry.html_name, rx.isoformat(timespec="milliseconds"),
                            _clock(rx), meaning, shown, level_word(line.level) or "-", escape(line.text))
        entry.ring.append(Entry(entry.seq, line, html))

    def note(self, entry: DeviceLog, text: str) -> None:
        """homedash's own line in the device's log (reconnects, starts, stops): seen in
        order with the device's lines, in replays and in downloads."""
        now = time.time()
        entry.seq += 1
        line = LogLine(device=entry.name, ts=None, level=None, fd=None, text=f"homedash: {text}", received_at=now)
        moment = datetime.fromtimestamp(now, self.tz)
        html = format_html(_NOTE, colour_of(entry.pk), entry.name, moment.isoformat(timespec="milliseconds"),
                           _clock(moment), line.text)
        entry.ring.append(Entry(entry.seq, line, "" + html, note=True))   # plain str, see ingest()

    def lines_after(self, entry: DeviceLog, since: int) -> list[Entry]:
        """Ring entries newer than ``since`` (oldest first), walking from the new end."""
        picked: list[Entry] = []
        for item in reversed(entry.ring):
            if item.seq <= since:
                break
            picked.append(item)
        picked.reverse()
        return picked

    def batch(self, entry: DeviceLog) -> dict | None:
        """The message for the lines since the last tick, within the line and byte
        budgets: when over, the oldest go (the gap in the numbers reports them)."""
        if entry.seq <= entry.flushed:
            return None
        fresh = self.lines_after(entry, entry.flushed)[-BATCH_LINES:]
        entry.flushed = entry.seq
        html: list[str] = []
        size = 0
        for item in reversed(fresh):
            size += len(item.html)
            if size > BATCH_BYTES and html:
                break
            html.append(item.html)
        html.reverse()
        if not html:
            return None
        return {"type": "log.batch", "pk": entry.pk, "first": entry.seq - len(html) + 1, "lines": html}

    async def flush(self) -> None:
        if self.layer is None:
            return
        for entry in list(self.logs.values()):
            message = self.batch(entry)
            if message is not None:
                await self.layer.group_send(log_group(entry.pk), message)

    async def _flush_loop(self, runtime) -> None:
        next_sweep = time.monotonic() + 10.0
        while not runtime.stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(runtime.stopping.wait(), self.flush_period)
            try:
                await self.flush()
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + 10.0
                    self.expire_viewers()
            except Exception:
                log.exception("debug log flush failed")

    # ---------------------------------------------------------------- viewers
    async def watch(self, pk: int, channel: str, *, replay: bool = False, since: Any = None, token: Any = None) -> None:
        """A log view is open (or says it still is). With ``replay`` it gets the ring (or
        the part after ``since``, after a pause) straight to its channel."""
        entry = self._log(pk)
        entry.viewers[channel] = time.monotonic()
        self._cancel_grace(entry)
        if replay and self.layer is not None:
            start = since if isinstance(since, int) and since >= 0 else None
            items = self.lines_after(entry, start if start is not None else 0)
            until = entry.seq
            # In pieces: one message per ring would be megabytes for a large ring.
            chunks = [items[i:i + REPLAY_CHUNK] for i in range(0, len(items), REPLAY_CHUNK)] or [[]]
            for n, chunk in enumerate(chunks):
                message = {"type": "log.batch", "pk": pk, "replay": True, "token": token, "since": start,
                           "first": chunk[0].seq if chunk else until + 1, "until": until,
                           "final": n == len(chunks) - 1, "lines": [item.html for item in chunk]}
                for _ in range(40):
                    try:
                        await self.layer.send(channel, message)
                        break
                    except ChannelFull:   # the viewer's queue is full: it drains fast, wait a little
                        await asyncio.sleep(0.05)

    def unwatch(self, pk: int, channel: str) -> None:
        entry = self.logs.get(pk)
        if entry is None:
            return
        entry.viewers.pop(channel, None)
        self._maybe_grace(entry)

    def expire_viewers(self) -> None:
        """Viewers whose process died never say goodbye; they stop saying hello."""
        limit = time.monotonic() - self.watch_expiry
        for entry in list(self.logs.values()):
            for channel, seen in list(entry.viewers.items()):
                if seen < limit:
                    entry.viewers.pop(channel, None)
            self._maybe_grace(entry)

    def _cancel_grace(self, entry: DeviceLog) -> None:
        if entry.grace is not None:
            entry.grace.cancel()
            entry.grace = None
            entry.grace_until = None

    def _maybe_grace(self, entry: DeviceLog) -> None:
        if not entry.active or entry.pinned or entry.viewers or entry.grace is not None or self.stopping:
            return
        entry.grace_until = time.monotonic() + self.grace
        entry.grace = self._spawn(self._grace(entry))

    async def _grace(self, entry: DeviceLog) -> None:
        await asyncio.sleep(self.grace)
        entry.grace = None
        entry.grace_until = None
        if entry.active and not entry.pinned and not entry.viewers:
            words = f"nobody watched for {self.grace:g} s"
            result = await self.stop(entry.pk, by="", reason=words)
            with contextlib.suppress(Exception):
                await sync_to_async(_audit)(entry.pk, "debuglog.stop", "ok" if result.get("ok") else "failed",
                                            f"{words}; " + str(result.get("message") or result.get("error") or ""))

    # ---------------------------------------------------------------- status, dump
    def status(self, pk: int) -> dict[str, Any]:
        entry = self.logs.get(pk)
        if entry is None:
            return {"pk": pk, "active": False, "source": None, "pinned": False, "state": "off", "error": "",
                    "viewers": 0, "lines": 0, "open_without_auth": None, "started_by": "", "started_at": None,
                    "restore_pending": False, "grace_left": None, "udp_available": self.udp_port is not None}
        return entry.status(self)

    def dump(self, pks: list[int], max_level: int | None = None) -> str:
        """The buffered lines of these devices as text, in the order they arrived."""
        rows: list[tuple[float, int, str]] = []
        for pk in pks:
            entry = self.logs.get(pk)
            if entry is None:
                continue
            for item in entry.ring:
                line = item.line
                if max_level is not None and line.level is not None and line.level > max_level:
                    continue
                shown, _ = device_time(line.ts, self.tz)
                rx = datetime.fromtimestamp(line.received_at, self.tz).isoformat(timespec="milliseconds")
                words = "note" if item.note else (level_word(line.level) or "-")
                rows.append((line.received_at, item.seq,
                             f"{rx} [{entry.name}] {words:<7} {shown or '-'} {line.text}"))
        rows.sort(key=lambda row: (row[0], row[1]))
        kept, size = [], 0
        for row in reversed(rows):     # the newest lines, within what one download may be
            size += len(row[2]) + 1
            if size > DUMP_CAP:
                kept.append(f"(older lines left out: a download holds at most {DUMP_CAP // 2**20} MiB)")
                break
            kept.append(row[2])
        return "".join(text + "\n" for text in reversed(kept))

    # ---------------------------------------------------------------- start, stop, pin
    def _rpc(self, facts: DeviceFacts):
        """The device's own session socket when it has one (all traffic to one device goes
        through its session); plain HTTP RPC otherwise."""
        from devices.drivers.shelly_rpc import ShellyRpcHttp

        session = self.manager.sessions.get(facts.pk) if self.manager is not None else None
        rpc = getattr(getattr(session, "adapter", None), "rpc", None)
        if rpc is not None and getattr(rpc, "connected", False):
            return rpc
        # Over HTTP still the device's one turn: the runtime's polls and commands, a probe
        # and this Sys.SetConfig never overlap on the wire (drivers/gate.py).
        return ShellyRpcHttp(self._client, facts.host, facts.port, password=facts.password or None,
                             gate=device_gate(facts))

    async def start(self, pk: int, source: str = "websocket", *, by: str = "", pinned: bool = False) -> dict:
        if source not in SOURCES:
            return {"ok": False, "error": f"unknown source {source[:20]!r}: websocket or udp"}
        if source == "udp" and self.udp_port is None:
            return {"ok": False, "error": "homedash does not listen for UDP logs (HOMEDASH_DEBUG_LOG_UDP_PORT is 0)"}
        facts = await sync_to_async(_device_facts)(pk)
        if facts is None:
            return {"ok": False, "error": "no such device"}
        if facts.vendor != "shelly" or (facts.generation or 1) < 2:
            return {"ok": False, "error": "live debug logs need a Shelly Gen2 or newer; this device cannot stream them"}
        problem = await address_problem(facts)  # before the password goes out
        if problem is not None:
            return {"ok": False, "error": f"address refused: {problem}"}
        entry = self._log(pk, facts.name)
        async with entry.lock:
            entry.facts = facts
            if entry.active:
                if entry.source != source:
                    return {"ok": False, "error": f"already streaming over {entry.source}; stop that first"}
                if pinned and not entry.pinned:
                    entry.pinned = True
                    self._cancel_grace(entry)
                    await self._save_state()
                return {"ok": True, "message": "already streaming"}
            if entry.retry is not None:
                entry.retry.cancel()
                entry.retry = None
            rpc = self._rpc(facts)
            try:
                config = await rpc.sys_get_config()
                current = copy.deepcopy(config.get("debug")) if isinstance(config.get("debug"), dict) else {}
                if entry.previous is None:
                    entry.previous = copy.deepcopy(current)
                patch: dict[str, Any] = {}
                if source == "websocket":
                    if not (current.get("websocket") or {}).get("enable"):
                        patch = {"websocket": {"enable": True}}
                else:
                    addr = await asyncio.to_thread(udp_address_for, facts.host, self.udp_bind, self.udp_port)
                    entry.udp_addr = addr
                    entry.udp_sources = await asyncio.to_thread(resolve_addresses, facts.host)
                    if (current.get("udp") or {}).get("addr") != addr:
                        patch = {"udp": {"addr": addr}}
                if patch:
                    # Remember first, then change: a crash in between still knows what to put back.
                    entry.touched.add(source)
                    await self._save_state()
                    await rpc.sys_set_config({"debug": patch})
            except DeviceError as exc:
                entry.error = describe(exc)
                self.note(entry, f"could not start the debug log: {entry.error}")
                if entry.touched:
                    # The change may have reached the device although the answer did not:
                    # putting back the old value is harmless either way.
                    entry.state = "restore pending"
                    entry.retry = self._spawn(self._retry_restore(entry))
                else:
                    entry.previous = None
                await self._save_state()
                return {"ok": False, "error": f"the device said: {entry.error}"}
            entry.source, entry.pinned, entry.error = source, pinned, ""
            entry.started_by, entry.started_at = by, time.time()
            entry.open_without_auth = None
            await self._save_state()
            who = f" by {by}" if by else ""
            self.note(entry, f"debug log started{who} ({'UDP to ' + entry.udp_addr if source == 'udp' else 'websocket'})")
            self._begin(entry)
            self._maybe_grace(entry)
            return {"ok": True, "message": "started"}

    def _begin(self, entry: DeviceLog) -> None:
        if entry.source == "websocket":
            entry.state = "connecting"
            entry.upstream = self._spawn(self._follow_websocket(entry))
        else:
            entry.state = "streaming"

    async def stop(self, pk: int, *, by: str = "", reason: str = "") -> dict:
        entry = self.logs.get(pk)
        if entry is None or (not entry.active and not entry.touched):
            return {"ok": True, "message": "not running"}
        async with entry.lock:
            was = entry.source
            entry.source = None
            entry.pinned = False
            self._cancel_grace(entry)
            if entry.upstream is not None:
                entry.upstream.cancel()
                with contextlib.suppress(BaseException):
                    await entry.upstream
                entry.upstream = None
            entry.udp_sources = set()
            why = reason or (f"stopped by {by}" if by else "stopped")
            if entry.facts is None:
                entry.facts = await sync_to_async(_device_facts)(pk)
            if not entry.touched:
                entry.state, entry.previous = "off", None
                await self._save_state()
                self.note(entry, f"debug log {why}" + (" (the device's settings were left as they were)" if was else ""))
                return {"ok": True, "message": "stopped"}
            ok, problem = await self._restore_once(entry)
            if ok:
                self.note(entry, f"debug log {why}; the device's debug settings are back as they were")
                return {"ok": True, "message": "stopped; settings restored"}
            entry.state = "restore pending"
            self.note(entry, f"debug log {why}; putting the device's debug settings back failed ({problem}); "
                             "homedash keeps trying")
            entry.retry = self._spawn(self._retry_restore(entry))
            return {"ok": True, "message": f"stopped; restoring the device's settings failed ({problem}), retrying"}

    async def _restore_once(self, entry: DeviceLog) -> tuple[bool, str]:
        facts = entry.facts
        if facts is None or entry.previous is None:
            entry.touched.clear()
            entry.previous = None
            await self._save_state()
            return True, ""
        try:
            await self._rpc(facts).sys_set_config(debug_patch(entry.previous, entry.touched))
        except DeviceError as exc:
            entry.error = describe(exc)
            return False, entry.error
        entry.touched.clear()
        entry.previous = None
        entry.state, entry.error, entry.udp_addr = "off", "", None
        await self._save_state()
        return True, ""

    async def _retry_restore(self, entry: DeviceLog) -> None:
        delay = 5.0
        try:
            while entry.touched and not entry.active:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESTORE_RETRY_MAX)
                async with entry.lock:
                    if entry.active or not entry.touched:
                        return
                    ok, _ = await self._restore_once(entry)
                    if ok:
                        self.note(entry, "the device's debug settings are back as they were")
                        return
        finally:
            if entry.retry is asyncio.current_task():
                entry.retry = None

    async def pin(self, pk: int, pinned: bool, *, by: str = "") -> dict:
        entry = self.logs.get(pk)
        if entry is None or not entry.active:
            return {"ok": False, "error": "the debug log is not running"}
        entry.pinned = pinned
        if pinned:
            self._cancel_grace(entry)
        else:
            self._maybe_grace(entry)
        await self._save_state()
        self.note(entry, ("pinned: keeps running with nobody watching" if pinned
                          else "unpinned: stops when nobody watches") + (f" ({by})" if by else ""))
        return {"ok": True, "message": "pinned" if pinned else "unpinned"}

    # ---------------------------------------------------------------- upstreams
    async def _follow_websocket(self, entry: DeviceLog) -> None:
        """Read the device's debug websocket for as long as the log runs; after a drop
        (reboot, Wi-Fi) reconnect with back-off, and say so in the log."""
        delay = RECONNECT_FIRST
        lost_at: float | None = None
        last_problem = ""
        attempt = 0
        while entry.active:
            if attempt:
                # The device may have moved or got a new password since the log started.
                entry.facts = await sync_to_async(_device_facts)(entry.pk) or entry.facts
            attempt += 1
            facts = entry.facts
            problem = await address_problem(facts)  # the name may point elsewhere by now
            if problem is not None:
                entry.state, entry.error = "error", f"address refused: {problem}"
                self.note(entry, f"not connecting to the debug log: {entry.error}")
                return
            stream = DebugLogStream(facts.host, facts.port, password=facts.password or None, device=entry.name,
                                    line_cap=self.line_cap, gate=device_gate(facts))
            try:
                await stream.open()
            except (WrongCredentials, AuthRequired) as exc:
                # Retrying a refused password would count as failed logins and get the
                # device to lock us out (fw 2.x): say so and wait for the user.
                entry.state, entry.error = "error", describe(exc)
                self.note(entry, f"the device refused the debug log: {entry.error}; fix the password and start again")
                return
            except DeviceError as exc:
                problem = describe(exc)
                if isinstance(exc, Unsupported):
                    problem = "the device's debug websocket is off (was it switched off on the device?)"
                elif isinstance(exc, Throttled):
                    problem = "the device already serves three debug listeners (another tool?)"
                entry.state, entry.error = ("reconnecting" if lost_at else "connecting"), problem
                if problem != last_problem:
                    self.note(entry, f"cannot reach the debug log: {problem}; trying again")
                    last_problem = problem
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX)
                continue
            try:
                entry.open_without_auth = bool(facts.password) and stream.authenticated is False
                if entry.open_without_auth:
                    self.note(entry, "this device streams its debug log to anyone on the network, "
                                     "although it has a password (firmware before 1.0.0)")
                if lost_at is not None:
                    self.note(entry, f"reconnected after {time.monotonic() - lost_at:.0f} s")
                entry.state, entry.error, last_problem, delay = "streaming", "", "", RECONNECT_FIRST
                async for line in stream:
                    self.ingest(entry.pk, line)
                problem = describe(stream.closed_by) if stream.closed_by else "closed"
            finally:
                await stream.close()
            if not entry.active:
                return
            lost_at = time.monotonic()
            entry.state, entry.error = "reconnecting", problem
            self.note(entry, f"the device's debug log connection dropped ({problem}); reconnecting")
            await asyncio.sleep(RECONNECT_FIRST)

    def udp_datagram(self, data: bytes, source_ip: str) -> None:
        """Lines from a device we pointed at us. Only devices whose UDP log runs, and only
        from that device's address: anyone on the LAN can send a datagram."""
        lines = parse_udp_log_datagram(data, line_cap=self.line_cap)
        if not lines:
            return
        running = [e for e in self.logs.values() if e.source == "udp" and e.facts is not None]
        candidates = [e for e in running if source_ip in e.udp_sources]
        for line in lines:
            mac = mac_from_shelly_id(line.device)
            if mac is not None:
                # Several devices may share an address (behind a NAT, or the simulator):
                # the device id at the start of each line says which one it is.
                target = next((e for e in candidates if e.facts.mac == mac), None)
            else:
                target = candidates[0] if len(candidates) == 1 else None
            if target is None:
                self.udp_ignored += 1
                continue
            self.ingest(target.pk, line)

    # ---------------------------------------------------------------- remembering
    def _state(self) -> dict[str, Any]:
        return {str(e.pk): {"source": e.source, "pinned": e.pinned, "previous": e.previous,
                            "touched": sorted(e.touched), "udp_addr": e.udp_addr, "name": e.name}
                for e in self.logs.values() if e.touched or e.active}

    async def _save_state(self) -> None:
        if self.state_path is None:
            return
        data = json.dumps(self._state(), indent=1)

        def write() -> None:
            tmp = self.state_path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(data)
            os.replace(tmp, self.state_path)

        try:
            await asyncio.to_thread(write)
        except OSError:
            log.exception("could not remember debug log settings in %s", self.state_path)

    async def _resume_remembered(self) -> None:
        """After a restart: logs that were running carry on (the device still sends), and
        like any log they end after the grace period unless someone watches or pinned them."""
        if self.state_path is None or not self.state_path.exists():
            return
        try:
            remembered = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            log.exception("could not read %s; devices keep their debug settings", self.state_path)
            return
        for key, item in (remembered.items() if isinstance(remembered, dict) else []):
            try:
                pk = int(key)
            except ValueError:
                continue
            if not isinstance(item, dict):
                continue
            facts = await sync_to_async(_device_facts)(pk)
            if facts is None:
                continue
            entry = self._log(pk, facts.name)
            entry.facts = facts
            entry.previous = item.get("previous") if isinstance(item.get("previous"), dict) else {}
            entry.touched = {t for t in item.get("touched") or [] if t in SOURCES}
            entry.pinned = bool(item.get("pinned"))
            entry.udp_addr = item.get("udp_addr") if isinstance(item.get("udp_addr"), str) else None
            source = item.get("source")
            if source in SOURCES and (source != "udp" or self.udp_port is not None):
                entry.source = source
                if source == "udp":
                    entry.udp_sources = await asyncio.to_thread(resolve_addresses, facts.host)
                self.note(entry, "homedash restarted; the debug log carries on")
                self._begin(entry)
                self._maybe_grace(entry)
            elif entry.touched:
                entry.state = "restore pending"
                entry.retry = self._spawn(self._retry_restore(entry))


# ----------------------------------------------------------------------------- wiring
def local_hub() -> LogHub | None:
    from devices import runtime as runtime_module

    rt = runtime_module.current()
    return getattr(rt, "debuglogs", None) if rt is not None else None


def _layer_reaches_other_processes(layer) -> bool:
    from homedash.layers import reaches_other_processes

    return reaches_other_processes(layer)


async def ask(message: dict, timeout: float = ASK_TIMEOUT) -> dict:
    """Send a command to the hub and wait for its answer: directly when it runs in this
    process, over the channel layer when it runs in another one."""
    hub = local_hub()
    if hub is not None:
        return await hub.handle(message)
    layer = get_channel_layer()
    if not _layer_reaches_other_processes(layer):
        return {"ok": False, "error": "the device runtime is not running"}
    reply = await layer.new_channel("homedash.reply.")
    await layer.send(HUB_CHANNEL, {**message, "reply_channel": reply})
    try:
        answer = await asyncio.wait_for(layer.receive(reply), timeout)
    except asyncio.TimeoutError:
        return {"ok": False, "error": "the device runtime did not answer"}
    answer.pop("type", None)
    return answer


async def tell(message: dict) -> None:
    """A command nobody waits for (viewers coming and going)."""
    hub = local_hub()
    if hub is not None:
        await hub.handle(message)
        return
    layer = get_channel_layer()
    if _layer_reaches_other_processes(layer):
        await layer.send(HUB_CHANNEL, message)


def install_hub(runtime, **options) -> LogHub:
    """Give a runtime its hub (as ``runtime.debuglogs``) and run it as a service."""
    hub = LogHub(manager=getattr(runtime, "manager", None), **options)
    runtime.debuglogs = hub
    runtime.add_service("debuglogs", hub.run)
    return hub


def install_from_settings(runtime) -> LogHub:
    import zoneinfo

    from django.conf import settings

    port = settings.DEBUG_LOG_UDP_PORT
    return install_hub(
        runtime, ring_size=settings.DEBUG_LOG_LINES, line_cap=settings.DEBUG_LOG_LINE_CAP,
        grace=float(settings.DEBUG_LOG_GRACE), udp_port=port if port else None,
        udp_bind=settings.DEBUG_LOG_UDP_BIND, state_path=Path(settings.DATA_DIR) / "debuglogs.json",
        time_zone=zoneinfo.ZoneInfo(settings.TIME_ZONE),
    )
