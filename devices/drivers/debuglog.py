"""Shelly debug logs: the ``ws://host/debug/log`` websocket stream and UDP log datagrams.

Both carry text we show to people, so every line is length-capped here (with a visible
mark) and nothing about a line can make the parser raise.

Websocket: one JSON object per message, ``{"ts":..., "level":..., "data":"...", "fd":...}``.
On fw >= 1.0.0 the upgrade request itself needs HTTP digest auth, which neither the
websockets library nor httpx can do for a websocket, so on a 401 we compute the
``Authorization: Digest`` header from the challenge and reconnect once.

UDP (``debug.udp.addr``): a datagram holds one or more NUL-separated lines
``"<id> <seq> <ts> [<fd>] <level>|<text>"``; ``ts`` may be uptime seconds.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from . import http
from .errors import AuthRequired, DeviceError, ProtocolError, Throttled, Unreachable, Unsupported, WrongCredentials
from .gate import DeviceGate, gate_for
from .shelly_rpc import WS_CLOSE_TIMEOUT, WS_OPEN_TIMEOUT, translate_ws_error, digest_authorization, parse_www_authenticate
from .types import LogLine, as_float, as_int

# Longest line we keep; firmware lines are ~100-300 chars, script prints can be anything.
LINE_CAP = 2000
TRUNCATION_MARK = " …[truncated]"
# A single websocket message is one log line; anything much bigger is not a log line.
DEBUG_WS_MAX_SIZE = 64 * 1024
# Lines per UDP datagram we look at (a datagram is at most 64 KiB anyway).
MAX_LINES_PER_DATAGRAM = 256
DEBUG_LOG_PATH = "/debug/log"


def cap_text(text: str, cap: int = LINE_CAP) -> tuple[str, bool]:
    """Cut ``text`` to ``cap`` characters including the mark; returns (text, truncated)."""
    if len(text) <= cap:
        return text, False
    keep = max(0, cap - len(TRUNCATION_MARK))
    return text[:keep] + TRUNCATION_MARK, True


def _clean(text: str) -> str:
    # NULs break databases and terminals; everything else is escaped where it is shown.
    return text.replace("\x00", "")


def parse_debug_log_message(
    message: Any, *, device: str = "", line_cap: int = LINE_CAP, received_at: float | None = None
) -> LogLine:
    """One websocket message -> LogLine. Messages that are not the expected JSON object
    are kept as plain text lines rather than dropped: they are still log output."""
    now = time.time() if received_at is None else received_at
    if isinstance(message, (bytes, bytearray, memoryview)):
        message = bytes(message[: line_cap * 4 + 1024]).decode("utf-8", "replace")
    if not isinstance(message, str):
        message = repr(message)[: line_cap + 1]
    data: Any = None
    if message[:1] == "{" and len(message) <= DEBUG_WS_MAX_SIZE:
        try:
            data = json.loads(message)
        except (ValueError, RecursionError):
            data = None
    if isinstance(data, dict) and "data" in data:
        raw = data.get("data")
        text = raw if isinstance(raw, str) else json.dumps(raw)[: line_cap + 1] if raw is not None else ""
        body, truncated = cap_text(_clean(text).rstrip("\r\n"), line_cap)
        return LogLine(
            device=device,
            ts=as_float(data.get("ts")),
            level=as_int(data.get("level")),
            fd=as_int(data.get("fd")),
            text=body,
            truncated=truncated,
            received_at=now,
        )
    body, truncated = cap_text(_clean(message).rstrip("\r\n"), line_cap)
    return LogLine(device=device, ts=None, level=None, fd=None, text=body, truncated=truncated, received_at=now)


def parse_udp_log_line(line: str, *, device: str = "", line_cap: int = LINE_CAP, received_at: float | None = None) -> LogLine:
    """``"<id> <seq> <ts> [<fd>] <level>|<text>"`` -> LogLine. Also the MQTT debug format
    (4 header fields). Lines that do not fit keep their text with no header values."""
    now = time.time() if received_at is None else received_at
    head, sep, text = line.partition("|")
    fields = head.split()
    if sep and len(fields) in (4, 5):
        level = as_int(fields[-1])
        ts = as_float(fields[2])
        fd = as_int(fields[3]) if len(fields) == 5 else None
        if level is not None and ts is not None and as_int(fields[1]) is not None:
            body, truncated = cap_text(_clean(text).rstrip("\r\n"), line_cap)
            return LogLine(
                device=fields[0][:64],
                ts=ts,
                level=level,
                fd=fd,
                text=body,
                truncated=truncated,
                received_at=now,
            )
    body, truncated = cap_text(_clean(line).rstrip("\r\n"), line_cap)
    return LogLine(device=device, ts=None, level=None, fd=None, text=body, truncated=truncated, received_at=now)


def parse_udp_log_datagram(
    data: bytes, *, device: str = "", line_cap: int = LINE_CAP, received_at: float | None = None
) -> list[LogLine]:
    """One UDP debug-log datagram -> its lines (NUL-separated, empty pieces skipped)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        return []
    now = time.time() if received_at is None else received_at
    lines: list[LogLine] = []
    for piece in bytes(data).split(b"\x00"):
        if not piece.strip():
            continue
        text = piece[: line_cap * 4 + 1024].decode("utf-8", "replace")
        lines.append(parse_udp_log_line(text, device=device, line_cap=line_cap, received_at=now))
        if len(lines) >= MAX_LINES_PER_DATAGRAM:
            break
    return lines


class DebugLogStream:
    """Reads ``ws://host:port/debug/log`` of one Gen2+ device.

    Use as ``async with DebugLogStream(host, password=pw) as stream: async for line in
    stream: ...``. Iteration ends when the device closes the socket (reboot, debug
    disabled); the reason is in ``closed_by``. Opening raises typed errors (AuthRequired,
    WrongCredentials, Unreachable, DeviceTimeout, Unsupported, ProtocolError). The device
    serves at most 3 of these at a time, so callers share one stream per device.
    """

    def __init__(
        self,
        host: str,
        port: int = 80,
        *,
        password: str | None = None,
        device: str = "",
        line_cap: int = LINE_CAP,
        open_timeout: float = WS_OPEN_TIMEOUT,
        max_size: int = DEBUG_WS_MAX_SIZE,
        gate: DeviceGate | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.uri = http.base_url(host, port).replace("http://", "ws://", 1) + DEBUG_LOG_PATH
        self.password = password or None
        self.device = device or host
        self.line_cap = line_cap
        self.open_timeout = open_timeout
        self.max_size = max_size
        self.closed_by: DeviceError | None = None
        # After open(): True when the device demanded the digest, False when it streamed to
        # us without asking although we hold a password (fw < 1.0.0 serves anyone).
        self.authenticated: bool | None = None
        self._ws: ClientConnection | None = None
        # The stream itself is not a request, but opening it is an HTTP upgrade with a
        # digest exchange, which fw 2.x counts like any other authentication: it takes
        # the device's turn (see gate.py) and gives it back once the socket is open.
        self.gate = gate if gate is not None else gate_for(host=host, port=port)

    async def _connect(self, headers: dict[str, str] | None) -> ClientConnection:
        return await connect(
            self.uri,
            additional_headers=headers,
            open_timeout=self.open_timeout,
            close_timeout=WS_CLOSE_TIMEOUT,
            max_size=self.max_size,
            max_queue=256,
            compression=None,
            proxy=None,
            user_agent_header=http.USER_AGENT,
        )

    async def open(self) -> None:
        async with self.gate:
            await self._open()

    async def _open(self) -> None:
        try:
            try:
                self._ws = await self._connect(None)
                self.authenticated = False
                return
            except InvalidStatus as exc:
                if exc.response.status_code == 404:
                    raise Unsupported(
                        "debug log websocket is off (Sys.SetConfig debug.websocket.enable)", host=self.host
                    ) from exc
                if exc.response.status_code == 503:
                    # The firmware serves at most three listeners.
                    raise Throttled("too many debug log listeners", retry_after=5.0, host=self.host) from exc
                if exc.response.status_code != 401:
                    raise
                challenge_header = _digest_header(exc.response.headers)
            if self.password is None:
                raise AuthRequired("debug log needs the device password", host=self.host)
            challenge = parse_www_authenticate(challenge_header)
            if challenge is None:
                raise ProtocolError("401 without a usable digest challenge", host=self.host)
            authorization = digest_authorization(challenge, method="GET", uri=DEBUG_LOG_PATH, password=self.password)
            try:
                self._ws = await self._connect({"Authorization": authorization})
                self.authenticated = True
            except InvalidStatus as exc:
                if exc.response.status_code == 401:
                    raise WrongCredentials("password rejected", host=self.host) from exc
                raise
        except DeviceError:
            raise
        except Exception as exc:  # every connect failure becomes a typed error
            raise translate_ws_error(exc, self.host) from exc

    async def close(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()

    async def __aenter__(self) -> DebugLogStream:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __aiter__(self) -> AsyncIterator[LogLine]:
        return self._lines()

    async def _lines(self) -> AsyncIterator[LogLine]:
        ws = self._ws
        if ws is None:
            raise RuntimeError("open() the stream first")
        try:
            async for message in ws:
                yield parse_debug_log_message(message, device=self.device, line_cap=self.line_cap)
        except ConnectionClosed as exc:
            self.closed_by = translate_ws_error(exc, self.host)
        else:
            self.closed_by = Unreachable("the device closed the debug log", host=self.host)


def _digest_header(headers: Any) -> str | None:
    """Pick the Digest challenge among possibly several WWW-Authenticate headers."""
    try:
        values = headers.get_all("WWW-Authenticate")
    except Exception:
        value = headers.get("WWW-Authenticate") if hasattr(headers, "get") else None
        values = [value] if value else []
    for value in values:
        if isinstance(value, str) and value.strip().lower().startswith("digest"):
            return value
    return None


__all__ = [
    "DEBUG_WS_MAX_SIZE",
    "DebugLogStream",
    "LINE_CAP",
    "TRUNCATION_MARK",
    "cap_text",
    "parse_debug_log_message",
    "parse_udp_log_datagram",
    "parse_udp_log_line",
]
