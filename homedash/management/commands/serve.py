"""`manage.py serve`: daphne and the device runtime in one process, on one event loop.

Daphne has no ASGI lifespan, so the runtime is started from daphne's `ready_callable` (the
reactor and its asyncio loop are running by then) and stopped from a Twisted "before
shutdown" trigger, which makes Ctrl-C wait for device sessions to close.

`run_server()` is the same thing as a function, for commands that need a little more on
the loop (`manage.py demo` starts its simulated household there).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Awaitable, Callable

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

log = logging.getLogger("homedash.serve")

Hook = Callable[[], Awaitable[None]]


def run_server(stdout, *, host: str, port: int, runtime, before_runtime: Hook | None = None,
               after_runtime: Hook | None = None, banner: Callable[[], str] | None = None) -> None:
    """Serve until Ctrl-C/SIGTERM. `before_runtime` runs on daphne's loop before the
    runtime starts, `after_runtime` after it stopped at shutdown; `banner` is printed
    once everything is up."""
    # Importing daphne.server installs Twisted's asyncio reactor; it must happen before
    # anything else touches the reactor.
    from daphne.endpoints import build_endpoint_description_strings
    from daphne.server import Server

    from devices import runtime as runtime_module
    from homedash.asgi import application
    from homedash.limits import WEBSOCKET_MAX_MESSAGE, install_in_daphne
    from homedash.static import StaticFilesApp

    if not 1 <= port <= 65535:
        raise CommandError(f"--port must be 1-65535, got {port}")
    runtime_module.install(runtime)
    shown_host = host if ":" not in host else f"[{host}]"

    async def start() -> None:
        try:
            if before_runtime is not None:
                await before_runtime()
            if runtime is not None:
                await runtime.start()
        except Exception:
            log.exception("homedash could not start; stopping")
            from twisted.internet import reactor

            reactor.stop()
            return
        # Everything loaded so far (Django, daphne, the runtime's catalogue) lives as long
        # as the process: keep it out of the cyclic collector's full passes, which would
        # otherwise walk ~100k objects and stall every socket for ~30-60 ms now and then
        # (a push-latency p99 matter, bench/ item 1).
        gc.collect()
        gc.freeze()
        stdout.write(f"homedash is listening on http://{shown_host}:{port}/ (Ctrl-C stops it)")
        if banner is not None:
            stdout.write(banner())
        stdout.flush()

    async def stop() -> None:
        if runtime is not None:
            await runtime.stop()
        if after_runtime is not None:
            await after_runtime()

    def ready():
        from twisted.internet import defer, reactor

        loop = asyncio.get_event_loop()
        loop.create_task(start())
        reactor.addSystemEventTrigger("before", "shutdown", lambda: defer.Deferred.fromFuture(loop.create_task(stop())))

    # Daphne buffers a whole request body before the application sees it: refuse large
    # ones while reading.
    install_in_daphne(settings.REQUEST_BODY_LIMIT)
    server = Server(
        application=StaticFilesApp(application),
        endpoints=build_endpoint_description_strings(host=host, port=port),
        signal_handlers=True,
        # Default is 24 h, after which daphne closes with code 1000 and htmx-ext-ws
        # never reconnects: a wall tablet would freeze after a day.
        websocket_timeout=-1,
        websocket_handshake_timeout=10,
        # Nothing homedash accepts over a websocket is near this (browsers say a few bytes,
        # a sleeping Shelly's full status is a few KiB); daphne's default is 1 MiB a message,
        # held whole in memory before a consumer can refuse it.
        websocket_max_message_size=WEBSOCKET_MAX_MESSAGE,
        websocket_max_frame_size=WEBSOCKET_MAX_MESSAGE,
        application_close_timeout=5,
        ready_callable=ready,
        server_name="homedash",
    )
    # A shell may start us with SIGINT ignored (background jobs); Twisted only installs
    # its Ctrl-C handler over Python's default one, so put that back first.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    server.run()
    stdout.write("homedash stopped.")


class Command(BaseCommand):
    help = "Run homedash: web server, websockets and the device runtime in one process."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=None, help="Address to listen on (default HOMEDASH_HOST or 127.0.0.1).")
        parser.add_argument("--port", type=int, default=None, help="Port (default HOMEDASH_PORT or 8000).")
        parser.add_argument("--no-runtime", action="store_true", help="Serve pages only; do not talk to devices.")

    def handle(self, *args, **options):
        from devices.runtime.setup import build_runtime_from_settings

        host = options["host"] or settings.BIND.host
        port = options["port"] or settings.BIND.port
        if not 1 <= port <= 65535:
            raise CommandError(f"--port must be 1-65535, got {port}")
        # Bring the database up to date first: an upgrade is "install, then serve".
        call_command("migrate", interactive=False, verbosity=0)
        runtime = None if options["no_runtime"] else build_runtime_from_settings()
        run_server(self.stdout, host=host, port=port, runtime=runtime)
