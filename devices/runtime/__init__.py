"""The long-running part of homedash: it lives on daphne's event loop (or in its own
process when scaled) and owns the live state of every device.

`Runtime` is the lifecycle every part hangs off: `serve` starts it once daphne's reactor is
running and stops it from a Twisted shutdown trigger, so Ctrl-C waits for device sessions to
close instead of cutting them off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

Service = Callable[["Runtime"], Awaitable[None]]


class Runtime:
    def __init__(self) -> None:
        self.started_at: float | None = None
        self.stopping = asyncio.Event()
        self._services: list[tuple[str, Service]] = []
        self._tasks: dict[str, asyncio.Task] = {}

    @property
    def running(self) -> bool:
        return self.started_at is not None and not self.stopping.is_set()

    def add_service(self, name: str, service: Service) -> None:
        """Register a coroutine function that runs until the runtime stops (discovery,
        device sessions, the publisher...). A service that crashes is logged and restarted
        after a pause: one bad device must not take down the others."""
        self._services.append((name, service))
        if self.running:
            self._launch(name, service)

    async def start(self) -> None:
        if self.started_at is not None:
            return
        self.started_at = time.monotonic()
        for name, service in self._services:
            self._launch(name, service)
        log.info("device runtime started with %d service(s)", len(self._services))

    def _launch(self, name: str, service: Service) -> None:
        self._tasks[name] = asyncio.get_running_loop().create_task(self._supervise(name, service), name=f"runtime:{name}")

    async def _supervise(self, name: str, service: Service) -> None:
        delay = 1.0
        while not self.stopping.is_set():
            try:
                await service(self)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("runtime service %s crashed; restarting in %.0f s", name, delay)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
            delay = min(delay * 2, 60.0)

    async def stop(self, timeout: float = 5.0) -> None:
        if self.started_at is None or self.stopping.is_set():
            return
        self.stopping.set()
        tasks = list(self._tasks.values())
        if tasks:
            # Services watch `stopping` and wind down themselves; cancel whatever does not.
            done, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        log.info("device runtime stopped")


_current: Runtime | None = None


def current() -> Runtime | None:
    """The runtime of this process, if one was started (None in plain WSGI/test setups)."""
    return _current


def install(runtime: Runtime | None) -> None:
    global _current
    _current = runtime
