"""Waiting for something to become true, for tests that watch asynchronous machinery."""

from __future__ import annotations

import asyncio
import time


async def until(predicate, timeout: float = 5.0, step: float = 0.02) -> bool:
    """Poll `predicate` until it is true or `timeout` seconds have passed; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return bool(predicate())
