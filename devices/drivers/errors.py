"""Errors the drivers raise.

Everything a device can do to us ends in one of these (or in a value): callers catch
``DeviceError`` and show the subclass to the user in household words. Anything else that
escapes a driver is a bug in homedash, not a misbehaving device.

The split mirrors what a caller has to *do*:

* ``Unreachable`` / ``DeviceTimeout`` - try again later, mark the device offline/stale.
* ``AuthRequired`` / ``WrongCredentials`` / ``BadToken`` - ask the user for a secret.
* ``Throttled`` - back off for ``retry_after`` seconds (Shelly fw 2.x counts failures).
* ``CorsRefused`` - a myStrom device rejected the request because of its anti-CSRF rule.
* ``Unsupported`` - this firmware does not have that endpoint/method.
* ``ProtocolError`` - the device answered something we cannot use (not JSON, wrong
  shape, too large, HTTP 5xx).
* ``RpcError`` - a Shelly RPC call was understood and refused by the device.
"""

from __future__ import annotations


class DeviceError(Exception):
    """Base class of every error a driver raises on purpose."""

    def __init__(self, message: str = "", *, host: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.host = host

    def __str__(self) -> str:
        if self.host:
            return f"{self.host}: {self.message}"
        return self.message


class Unreachable(DeviceError):
    """No connection: refused, reset, no route, DNS failure, device powered off."""


class DeviceTimeout(DeviceError):
    """Connected, but the device did not answer in time (hung, overloaded, asleep)."""


class AuthRequired(DeviceError):
    """The device wants credentials (password/token) and we have none configured."""


class WrongCredentials(DeviceError):
    """We sent credentials and the device rejected them."""


class BadToken(WrongCredentials):
    """myStrom: the configured ``Token`` header was rejected (the device answers 404)."""


class Throttled(DeviceError):
    """The device refuses to serve us for a while (Shelly fw 2.x HTTP/RPC 429)."""

    def __init__(self, message: str = "", *, retry_after: float = 2.0, host: str | None = None) -> None:
        super().__init__(message, host=host)
        self.retry_after = float(retry_after)


class CorsRefused(DeviceError):
    """myStrom "CORS protection": a request carrying ``Accept-Encoding`` without a matching
    ``Referer``/``Origin`` (or a state-changing GET with ``Accept-Encoding`` at all) is
    answered with 404."""


class Unsupported(DeviceError):
    """The device/firmware does not offer this endpoint, method or channel."""


class ProtocolError(DeviceError):
    """The device answered, but not with anything we can use."""

    def __init__(self, message: str = "", *, status: int | None = None, host: str | None = None) -> None:
        super().__init__(message, host=host)
        self.status = status


class Flooding(ProtocolError):
    """The device sends far more messages than any real device does (a firmware fault, or
    someone posing as it): homedash closed the connection and waits ``retry_after`` seconds."""

    def __init__(self, message: str = "", *, retry_after: float = 30.0, host: str | None = None) -> None:
        super().__init__(message, host=host)
        self.retry_after = float(retry_after)


class RpcError(DeviceError):
    """A Shelly RPC call returned an ``error`` object (code + message from the device)."""

    def __init__(self, code: int, message: str, *, host: str | None = None) -> None:
        super().__init__(f"RPC error {code}: {message}", host=host)
        self.code = code
        self.rpc_message = message


__all__ = [
    "AuthRequired",
    "BadToken",
    "CorsRefused",
    "DeviceError",
    "DeviceTimeout",
    "ProtocolError",
    "Flooding",
    "RpcError",
    "Throttled",
    "Unreachable",
    "Unsupported",
    "WrongCredentials",
]
