"""What any client may make homedash hold: request bodies and websocket messages.

Anyone on the LAN can send to homedash, logged in or not. Two kinds of limit keep one
client from exhausting the process:

* Request bodies. Daphne (Twisted) reads a whole body before it calls the application and
  then queues all of it at once, so Django's DATA_UPLOAD_MAX_MEMORY_SIZE check comes only
  after the memory is spent. `install_in_daphne()` refuses a too-large Content-Length
  with 413 as soon as the headers are in, counts a chunked body as it arrives and stops
  reading at the limit. `BodyLimit` is the same rule as an ASGI wrapper in front of the
  application, for any other ASGI server (and as a second check behind daphne).
* Websocket messages. `MessageBudget` is a token bucket per socket: a burst, then a steady
  rate. A message past the budget is dropped; a sender that keeps going past it — a flood,
  not a page that asked twice — is closed with 4429. Daphne holds every socket to a
  generous budget as it reads (`install_in_daphne()`); each consumer holds its route to a
  tight one of its own; a user who flooded gets no new socket for a while (`CoolOff`).
"""

from __future__ import annotations

import io
import logging
import time
from collections import OrderedDict

log = logging.getLogger(__name__)

# Close code for a websocket that sent more than its budget. Daphne (autobahn) lets an
# application close only with 1000 or 3000-4999; 4429 echoes HTTP's "too many requests".
CLOSE_FLOOD = 4429
# ... and for one message larger than the socket accepts (HTTP 413; 1009 is refused).
CLOSE_TOO_BIG = 4413

# Bytes in one websocket message, either way. Daphne (autobahn) applies its cap to what it
# sends as well as to what it receives, so the one number is both the largest message a
# client may send (nothing homedash accepts is near it) and the size pages' messages are
# split at (a large household's snapshot is several hundred kB).
WEBSOCKET_MAX_MESSAGE = 64 * 1024

OK, DROP, CLOSE = "ok", "drop", "close"


class MessageBudget:
    """A token bucket: `burst` messages at once, refilled at `rate` a second.

    Past the budget the bucket goes into debt: those messages are dropped (`DROP`). When
    the debt reaches another `burst` — the sender kept going at well over `rate` — the
    answer is `CLOSE`. A sender just above the rate is throttled for a while before that;
    a flood is closed within 2 x `burst` messages."""

    __slots__ = ("rate", "burst", "tokens", "at")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = float(rate), burst
        self.tokens = float(burst)
        self.at = time.monotonic()

    def spend(self, amount: float = 1.0, now: float | None = None) -> str:
        """Take `amount` tokens (1 a message; or count bytes with a bucket of bytes)."""
        now = time.monotonic() if now is None else now
        self.tokens = min(float(self.burst), self.tokens + (now - self.at) * self.rate)
        self.at = now
        self.tokens -= amount
        if self.tokens >= 0:
            return OK
        if self.tokens <= -self.burst:
            return CLOSE
        return DROP


class CoolOff:
    """Keys (users) that flooded a socket, and until when they get no new one: closing a
    flooding socket is cheap, but each new socket costs a plan and a snapshot, so a client
    that floods, reconnects and floods again is refused at connect for a while. Bounded
    to `size` keys (the oldest are forgotten)."""

    def __init__(self, seconds: float, size: int = 1024) -> None:
        self.seconds, self.size = seconds, size
        self._until: OrderedDict[object, float] = OrderedDict()

    def start(self, key) -> None:
        self._until.pop(key, None)
        self._until[key] = time.monotonic() + self.seconds
        while len(self._until) > self.size:
            self._until.popitem(last=False)

    def active(self, key) -> bool:
        until = self._until.get(key)
        if until is None:
            return False
        if time.monotonic() >= until:
            del self._until[key]
            return False
        return True


class Hush:
    """At most one log line per key every `seconds`: an attacker repeating an attack must
    not fill the log (or a pipe someone reads it from). `allow` answers how many lines
    were held back since the last one, or None to hold this one back too."""

    def __init__(self, seconds: float = 60.0, size: int = 256) -> None:
        self.seconds, self.size = seconds, size
        self._seen: OrderedDict[object, list] = OrderedDict()   # key -> [logged at, held back]

    def allow(self, key) -> int | None:
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.seconds:
            seen[1] += 1
            return None
        held = seen[1] if seen is not None else 0
        self._seen.pop(key, None)
        self._seen[key] = [now, 0]
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return held


_flood_logged = Hush()


# ----------------------------------------------------------------------------- request bodies
def _too_large_body(limit: int) -> bytes:
    return f"Request body too large: homedash accepts at most {limit} bytes.\n".encode()


def _declared_length(headers) -> int | None:
    """The Content-Length, -1 if it is not a number (or there are two that disagree),
    None without one."""
    values = {value.strip() for name, value in headers if name.lower() == b"content-length"}
    if not values:
        return None
    if len(values) > 1:
        return -1
    try:
        length = int(values.pop())
    except ValueError:
        return -1
    return length if length >= 0 else -1


class BodyLimit:
    """ASGI wrapper: an HTTP request whose body is larger than `limit` bytes gets 413 and
    never reaches the application. A declared Content-Length is checked before anything is
    read; a body without one (chunked) is counted while the application reads it, and at
    the limit the application is told the client went away while the client gets 413."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = _declared_length(scope.get("headers") or [])
        if declared == -1:
            return await _plain(send, 400, b"Bad Content-Length.\n")
        if declared is not None and declared > self.limit:
            return await _plain(send, 413, _too_large_body(self.limit))

        received = 0
        refused = False
        started = False

        async def limited_receive():
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    refused = True
                    if not started:
                        await _plain(send, 413, _too_large_body(self.limit))
                    # Django stops reading and answers nothing to a client that left.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            nonlocal started
            if refused:
                return  # the 413 went out already; the application's answer is moot
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        return await self.app(scope, limited_receive, guarded_send)


async def _plain(send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


# What any one websocket may deliver to its consumer, counted as daphne reads it. The
# consumers hold each route to a much smaller budget of their own, but they see a message
# only after daphne has queued it, and a flood of tiny frames keeps the event loop so busy
# reading that a consumer gets to its check seconds later (measured: 130,000 messages in
# 6 s, another user's page 5 s). Generous for the busiest honest sender on each route: a
# page says "refresh" now and then, a sleeper sends a few notifications a wake, and a log
# view acknowledges every frame, up to a full replay of 16 devices at once.
SOCKET_MESSAGES = (50, 20.0)                   # (burst, per second): pages and sleepers
LOG_SOCKET_MESSAGES = (500, 200.0)             # the debug-log view's acknowledgements
SOCKET_BYTES = (1024 * 1024, 256 * 1024.0)     # bytes, any route


def install_in_daphne(body_limit: int) -> None:
    """Limits applied inside daphne, where the bytes arrive:

    * request bodies over `body_limit` bytes are refused while being read, before they
      are buffered: Twisted tells the request the declared length once the headers are
      in and hands over the body piece by piece, and daphne itself only starts the
      application when the whole body is there;
    * every websocket is held to the SOCKET_* budgets above: past them it is closed with
      4429 and nothing more is read from it.

    Must run before daphne's server starts listening."""
    from daphne import server as daphne_server
    from daphne.http_protocol import HTTPFactory, WebRequest
    from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol

    limit = body_limit

    answer = (b"HTTP/1.1 413 Content Too Large\r\nContent-Type: text/plain; charset=utf-8\r\n"
              b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(_too_large_body(limit))) + _too_large_body(limit)

    class BodyLimitedRequest(WebRequest):
        refused = False
        received = 0

        def gotLength(self, length):
            if length is not None and length > limit:
                # No "100 Continue" after our answer: Twisted sends one right after this
                # call when the client asked for it.
                self.requestHeaders.removeHeader(b"Expect")
                self._refuse()
                return
            super().gotLength(length)

        def handleContentChunk(self, data):
            if self.refused:
                return
            self.received += len(data)
            if self.received > limit:
                self._refuse()
                return
            super().handleContentChunk(data)

        def process(self):
            if self.refused:
                return None  # the rest of a body already in the last read: never an app
            return super().process()

        def _refuse(self) -> None:
            self.refused = True
            spooled, self.content = getattr(self, "content", None), io.BytesIO()
            if spooled is not None:
                spooled.close()  # what was read so far (a temporary file past 100 kB)
            transport = self.channel.transport if self.channel is not None else None
            if transport is not None:
                transport.write(answer)
                transport.loseConnection()  # stops reading: the rest of the body stays on the wire

    class BodyLimitedFactory(HTTPFactory):
        def buildProtocol(self, addr):
            protocol = super().buildProtocol(addr)
            protocol.requestFactory = BodyLimitedRequest
            return protocol

    class BudgetedWebSocket(WebSocketProtocol):
        flooded = False

        def onOpen(self):
            burst, rate = LOG_SOCKET_MESSAGES if self.path.startswith(b"/ws/logs/") else SOCKET_MESSAGES
            self.messages = MessageBudget(rate, burst)
            self.volume = MessageBudget(SOCKET_BYTES[1], SOCKET_BYTES[0])  # in bytes
            super().onOpen()

        def onMessage(self, payload, isBinary):
            if self.flooded:
                return
            verdicts = {self.messages.spend(), self.volume.spend(len(payload))}
            if CLOSE in verdicts:
                self.flooded = True
                path = getattr(self.request, "path", "?")
                held = _flood_logged.allow(path)
                if held is not None:
                    log.warning("websocket %s from %s closed: it sent far more than any page or device does"
                                " (%d more such closes not logged)", path, self.client_addr, held)
                self.sendClose(code=CLOSE_FLOOD)
                # Read nothing more from it: the close handshake times out and Twisted
                # drops the connection (autobahn's closeHandshakeTimeout, 1 s).
                self.transport.pauseProducing()
                return
            if DROP in verdicts:
                return
            super().onMessage(payload, isBinary)

    class BudgetedWebSocketFactory(WebSocketFactory):
        protocol = BudgetedWebSocket

    # daphne's Server builds its factories by these names inside run(); there is no
    # argument for them.
    daphne_server.HTTPFactory = BodyLimitedFactory
    daphne_server.WebSocketFactory = BudgetedWebSocketFactory
