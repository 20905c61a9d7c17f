"""A household resolver for tests: the names a test gives answer with its addresses, IP
literals and ``localhost`` resolve as usual, and every other name fails at once, so no DNS
query for a made-up device name ever leaves the machine."""

from __future__ import annotations

import asyncio
import ipaddress
import socket


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def household_dns(monkeypatch) -> dict[str, str]:
    """Patch the event loops' resolver (every loop, every thread); returns the name ->
    IPv4 address table the test fills."""
    answers: dict[str, str] = {}
    real = asyncio.BaseEventLoop.getaddrinfo

    async def getaddrinfo(self, host, port, *args, **kwargs):
        if isinstance(host, str) and host in answers:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port or 0))]
        if isinstance(host, str) and host != "localhost" and not _is_ip(host):
            raise socket.gaierror(socket.EAI_NONAME, "unknown name (tests resolve nothing outside)")
        return await real(self, host, port, *args, **kwargs)

    monkeypatch.setattr(asyncio.BaseEventLoop, "getaddrinfo", getaddrinfo)
    return answers
