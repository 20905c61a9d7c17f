"""The CoIoT listener: Gen1 devices whose CoIoT peer points at homedash tell us when they
change, and their session reads `/status` at once instead of waiting for the next poll."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

from devices.drivers.coiot import CODE_STATUS, belongs_to, parse_coiot

log = logging.getLogger(__name__)

PUSH_FRESH = 60.0  # seconds a CoIoT message keeps a device in "push" mode
# CoIoT is plain UDP: anyone on the LAN can send status messages with a device's address and
# id and a new serial each time. Each may make the session read /status, but no more often
# than this per device; messages in between are folded into one read at the end of the gap,
# which fetches the device's latest state, so a real change is late by at most this much.
MIN_POLL_GAP = 1.0


class CoiotListener(asyncio.DatagramProtocol):
    def __init__(self, manager) -> None:
        self.manager = manager
        self.transport: asyncio.DatagramTransport | None = None
        self._serials: dict[int, int] = {}
        self._last_read: dict[int, float] = {}  # device pk -> monotonic time of its last CoIoT read
        self._deferred: dict[int, asyncio.TimerHandle] = {}
        self.received = 0
        self.folded = 0  # messages that asked for a read inside the gap (counted, not read)

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        message = parse_coiot(data)
        if message is None or message.code != CODE_STATUS:
            return
        self.received += 1
        host = addr[0]
        for pk, session in self.manager.sessions.items():
            config = session.config
            if config.vendor != "shelly" or (config.generation or 1) != 1:
                continue
            # Trust a message only from the device's own address and with its own id.
            if config.host != host or not belongs_to(message, config.mac):
                continue
            live = session.live
            live.health.mode = "push (CoIoT)"
            live.health.last_push = time.time()
            session.coiot_until = time.monotonic() + PUSH_FRESH
            # The same serial is a repeat of the periodic status: nothing changed.
            if message.serial is not None and self._serials.get(pk) == message.serial:
                return
            self._serials[pk] = message.serial
            self._ask_read(pk)
            return

    def _ask_read(self, pk: int) -> None:
        if pk in self._deferred:  # a read is already due at the end of the gap
            self.folded += 1
            return
        wait = self._last_read.get(pk, float("-inf")) + MIN_POLL_GAP - time.monotonic()
        if wait <= 0:
            self._read_now(pk)
            return
        self.folded += 1
        self._deferred[pk] = asyncio.get_running_loop().call_later(wait, self._read_now, pk)

    def _read_now(self, pk: int) -> None:
        self._deferred.pop(pk, None)
        session = self.manager.sessions.get(pk)  # looked up now: a reload may have replaced it
        if session is None:
            return
        self._last_read[pk] = time.monotonic()
        session.wakeup.set()

    def connection_lost(self, exc) -> None:
        for handle in self._deferred.values():
            handle.cancel()
        self._deferred.clear()


async def run_coiot(manager, runtime, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        log.warning("CoIoT listener cannot bind %s:%s (%s); Gen1 devices are polled only", host, port, exc)
        sock.close()
        return
    transport, protocol = await loop.create_datagram_endpoint(lambda: CoiotListener(manager), sock=sock)
    manager.coiot = protocol
    manager.coiot_port = sock.getsockname()[1]
    try:
        await runtime.stopping.wait()
    finally:
        transport.close()
