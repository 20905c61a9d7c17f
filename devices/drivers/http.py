"""The HTTP transport every driver shares: the client factory, a bounded request helper
that turns every transport failure into a typed error, and a defensive JSON decoder.

Rules that matter on real devices:

* No ``Accept-Encoding`` header, ever. myStrom firmware with "CORS protection" answers 404
  to any request that carries it without a matching Referer/Origin (and to state-changing
  GETs that carry it at all). The header is removed from the client defaults *and* from
  every request, so even a caller-supplied client cannot reintroduce it.
* No proxies from the environment and no redirects: devices are on the LAN, and a
  redirect from a device (myStrom Switch v1 answers ``/api/v1/info`` with one) is a signal
  we interpret, not something to follow.
* Short, named timeouts plus an overall deadline: httpx's read timeout is per read, so a
  device that trickles a byte every few seconds would otherwise hold us forever.
* Bodies are streamed and capped; a device that sends megabytes gets a ProtocolError.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import httpx

from .errors import DeviceTimeout, ProtocolError, Unreachable

# Timeouts (seconds). Devices on a LAN answer in tens of milliseconds; ESP8266 myStrom
# switches under load in a few hundred. A few seconds separates "slow" from "gone".
CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 5.0
WRITE_TIMEOUT = 5.0
POOL_TIMEOUT = 5.0
# Upper bound for one whole request including reading the body.
REQUEST_DEADLINE = 10.0

DEFAULT_TIMEOUT = httpx.Timeout(
    connect=CONNECT_TIMEOUT, read=READ_TIMEOUT, write=WRITE_TIMEOUT, pool=POOL_TIMEOUT
)

# Body caps. The largest real status reply (a Pro 4PM GetStatus) is ~5 KiB; config dumps
# and component listings are bigger but still far below these.
STATUS_BODY_CAP = 256 * 1024
DEBUG_BODY_CAP = 2 * 1024 * 1024

# Connection pool: each device gets at most one request at a time from its session, so
# the pool only needs to cover the devices being polled concurrently. Keep-alive is short
# because small device servers drop idle connections quickly.
MAX_CONNECTIONS = 64
MAX_KEEPALIVE_CONNECTIONS = 32
KEEPALIVE_EXPIRY = 5.0

USER_AGENT = "homedash"


def make_client(
    *,
    max_connections: int = MAX_CONNECTIONS,
    max_keepalive: int = MAX_KEEPALIVE_CONNECTIONS,
    timeout: httpx.Timeout = DEFAULT_TIMEOUT,
) -> httpx.AsyncClient:
    """The ``httpx.AsyncClient`` the drivers expect. The caller owns and closes it."""
    client = httpx.AsyncClient(
        trust_env=False,
        follow_redirects=False,
        timeout=timeout,
        limits=httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_keepalive,
            keepalive_expiry=KEEPALIVE_EXPIRY,
        ),
        headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
    )
    # httpx adds "Accept-Encoding: gzip, deflate[, br, zstd]" to the client defaults;
    # deleting it here is the only way to keep it off the wire (a None value raises).
    del client.headers["Accept-Encoding"]
    return client


def base_url(host: str, port: int = 80) -> str:
    """``http://host:port`` with IPv6 literals bracketed."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}" if port != 80 else f"http://{host}"


@dataclass(slots=True)
class HttpReply:
    """What came back, fully read (within the cap), plus the headers we actually sent."""

    status: int
    headers: httpx.Headers
    body: bytes
    request_headers: httpx.Headers

    def json(self) -> Any:
        return parse_json(self.body)

    @property
    def is_redirect(self) -> bool:
        return 300 <= self.status < 400


def _reject_constant(name: str) -> None:
    # NaN / Infinity are not JSON; some firmware prints them for broken sensors. They
    # become null so every later numeric check sees "no value".
    return None


def parse_json(body: bytes | str) -> Any:
    """Decode JSON from a device, raising only ProtocolError."""
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except RecursionError as exc:  # "[[[[[[..." nested deeper than the C decoder allows
        raise ProtocolError("reply nests too deeply") from exc
    except (ValueError, TypeError) as exc:  # JSONDecodeError, UnicodeDecodeError, int limits
        raise ProtocolError(f"reply is not JSON: {str(exc)[:80]}") from exc


def _translate(exc: BaseException, host: str) -> Exception:
    """Map a transport exception to our typed errors."""
    if isinstance(exc, httpx.ConnectTimeout):
        # Nothing answered the SYN: on a LAN that is a device that is off or gone.
        return Unreachable(f"connect timed out: {exc}", host=host)
    if isinstance(exc, httpx.TimeoutException):
        return DeviceTimeout(f"no answer in time ({type(exc).__name__})", host=host)
    if isinstance(exc, (httpx.ConnectError, httpx.ReadError, httpx.WriteError, httpx.CloseError)):
        return Unreachable(f"connection failed: {exc}", host=host)
    if isinstance(exc, httpx.RemoteProtocolError):
        if "disconnected" in str(exc).lower():
            # The device dropped the connection mid-request (reboot, Wi-Fi loss).
            return Unreachable(f"device closed the connection: {exc}", host=host)
        return ProtocolError(f"malformed HTTP: {exc}", host=host)
    if isinstance(exc, (httpx.InvalidURL, httpx.UnsupportedProtocol)):
        return Unreachable(f"bad address: {exc}", host=host)
    if isinstance(exc, httpx.DecodingError):
        return ProtocolError(f"undecodable body: {exc}", host=host)
    if isinstance(exc, httpx.HTTPError):
        return ProtocolError(f"HTTP failure: {exc}", host=host)
    if isinstance(exc, OSError):
        return Unreachable(f"network error: {exc}", host=host)
    # httpx.DigestAuth trusts the challenge: an unknown algorithm is a KeyError, a field
    # without "=" a ValueError. Both are the device's fault.
    return ProtocolError(f"unusable reply ({type(exc).__name__}: {str(exc)[:80]})", host=host)


async def request(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    host: str,
    headers: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
    content: bytes | str | None = None,
    auth: httpx.Auth | None = None,
    cap: int = STATUS_BODY_CAP,
    deadline: float = REQUEST_DEADLINE,
) -> HttpReply:
    """Send one request and read the whole body, at most ``cap`` bytes.

    Raises Unreachable, DeviceTimeout or ProtocolError; never returns a half-read body.
    HTTP error statuses are *returned* - what a 401/404 means is protocol specific.
    """
    try:
        req = client.build_request(method, url, headers=headers, params=params, content=content)
    except (httpx.HTTPError, ValueError, TypeError) as exc:
        raise _translate(exc, host) from exc
    req.headers.pop("Accept-Encoding", None)
    try:
        async with asyncio.timeout(deadline):
            response = await client.send(req, auth=auth, stream=True)
            try:
                declared = response.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > cap:
                    raise ProtocolError(
                        f"reply too large ({declared} bytes > {cap})", status=response.status_code, host=host
                    )
                chunks: list[bytes] = []
                size = 0
                # aiter_bytes decodes any Content-Encoding the device sent anyway, and we
                # count the decoded size, so a compressed bomb is capped too.
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > cap:
                        raise ProtocolError(
                            f"reply too large (> {cap} bytes)", status=response.status_code, host=host
                        )
                    chunks.append(chunk)
            finally:
                await response.aclose()
    except TimeoutError as exc:
        raise DeviceTimeout(f"no complete answer within {deadline:g} s", host=host) from exc
    except ProtocolError:
        raise
    except (httpx.HTTPError, OSError, KeyError, ValueError, TypeError) as exc:
        raise _translate(exc, host) from exc
    # The request that went out last (after any auth round trip) is what the device judged.
    sent = response.request.headers if response.request is not None else req.headers
    return HttpReply(status=response.status_code, headers=response.headers, body=b"".join(chunks), request_headers=sent)


__all__ = [
    "CONNECT_TIMEOUT",
    "DEBUG_BODY_CAP",
    "DEFAULT_TIMEOUT",
    "HttpReply",
    "MAX_CONNECTIONS",
    "READ_TIMEOUT",
    "REQUEST_DEADLINE",
    "STATUS_BODY_CAP",
    "base_url",
    "make_client",
    "parse_json",
    "request",
]
