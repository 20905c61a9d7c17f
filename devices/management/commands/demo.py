"""`manage.py demo`: homedash with a simulated household, in one process.

Prepares the demo database (rooms, a demo login, about twenty simulated devices adopted
into rooms, some of them password-protected, two waiting in the inbox) and then runs the
same server as `serve`, with the simulated devices started on daphne's event loop, so
Ctrl-C stops both. Everything binds loopback. Refuses to run unless HOMEDASH_DEMO=true, so
it can never write the demo into a household's real database (`make demo` sets it, and
HOMEDASH_DATA_DIR=var/demo).

`--prepare FILE` only writes the devices described in FILE (rows from
`devices.demo.describe_fleet`) into the database and exits: the browser tests run their
simulated devices in the test process and the server in another.
"""

from __future__ import annotations

import asyncio
import json
import socket

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from devices import demo


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Command(BaseCommand):
    help = "Run homedash with a simulated household of myStrom and Shelly devices (demo mode)."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=None, help="Port (default HOMEDASH_PORT or 8000).")
        parser.add_argument("--seed", type=int, default=1, help="Same seed, same household (default 1).")
        parser.add_argument("--prepare", metavar="FILE", default=None,
                            help="Only write the devices described in FILE (JSON rows) and the demo user, then exit.")
        parser.add_argument("--password", default=demo.DEMO_PASSWORD, help="Password of the demo login.")

    def handle(self, *args, **options):
        if not settings.DEMO:
            raise CommandError("demo writes a made-up household into the database: run it with HOMEDASH_DEMO=true "
                               "and its own HOMEDASH_DATA_DIR (`make demo` does both)")
        call_command("migrate", interactive=False, verbosity=0)
        if options["prepare"]:
            with open(options["prepare"], encoding="utf-8") as handle:
                rows = json.load(handle)
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise CommandError(f"{options['prepare']}: expected a JSON list of device rows")
            counts = demo.prepare_database(rows, password=options["password"])
            self.stdout.write(f"demo database ready: {counts['adopted']} adopted, {counts['inbox']} in the inbox")
            return
        self.serve(options)

    def serve(self, options):
        from devices.runtime.setup import build_runtime
        from devices.simulator.fleet import DeviceSpec, Fleet, household_mix
        from homedash.management.commands.serve import run_server

        host = "127.0.0.1"  # the demo never listens on the LAN
        port = options["port"] or settings.BIND.port
        coiot_port = _free_udp_port()
        base = f"http://{host}:{port}"
        specs = household_mix()
        for spec in specs:
            if spec.model == "SNSN-0013A":
                # The sleeping Plus H&T reports by connecting out to us when it wakes.
                spec.extra["ws_server"] = f"ws://{host}:{port}/shelly/ws"
        specs += [DeviceSpec.parse(model) for model in demo.INBOX_MODELS]
        try:
            fleet = Fleet(specs, host=host, seed=options["seed"], protect=True, coiot_peer=f"{host}:{coiot_port}",
                          sleepers_wake_every=60.0, update_period=5.0)
        except (ValueError, PermissionError) as exc:
            raise CommandError(str(exc)) from exc
        runtime = build_runtime(manager_options={"start_spread": 2.0}, coiot_host=host, coiot_port=coiot_port)
        stop_life = asyncio.Event()
        tasks: list[asyncio.Task] = []
        password = options["password"]

        async def before_runtime() -> None:
            await fleet.start()
            rows = await demo.describe_fleet(fleet, inbox=len(demo.INBOX_MODELS))
            await sync_to_async(demo.prepare_database)(rows, password=password)
            await sync_to_async(self._point_buttons_at_us)(fleet, base)
            tasks.append(asyncio.ensure_future(demo.household_life(fleet, stop_life)))

        async def after_runtime() -> None:
            stop_life.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await fleet.stop()

        def banner() -> str:
            protected = sum(1 for d in fleet.devices if d.secret)
            return (f"\nDemo household: {len(fleet.devices)} simulated devices on {host} "
                    f"({protected} password-protected, {len(demo.INBOX_MODELS)} waiting in the inbox).\n"
                    f"Log in at {base}/ as  {demo.DEMO_USER} / {password}\n"
                    f"Data: {settings.DATA_DIR} (delete it to start over)")

        run_server(self.stdout, host=host, port=port, runtime=runtime, before_runtime=before_runtime,
                   after_runtime=after_runtime, banner=banner)

    @staticmethod
    def _point_buttons_at_us(fleet, base: str) -> None:
        """myStrom buttons call an action URL with the device's secret: what a household
        sets up in the myStrom app, done here for the simulated ones."""
        from devices.models import Device

        for sim in fleet.devices:
            actions = getattr(sim, "actions", None)
            if sim.vendor == "mystrom" and isinstance(actions, dict) and "generic" in actions:
                device = Device.objects.filter(mac=sim.mac, adopted=True).first()
                if device is not None:
                    actions["generic"] = demo.hook_url(base, device.webhook_secret)
