"""`manage.py simulate`: a household of simulated myStrom and Shelly devices on loopback.

Prints the devices (model, MAC, address, password/token) and runs until Ctrl-C. Needs no
database. Nothing leaves the machine: devices bind loopback, announcements go to a
loopback target only, CoIoT is unicast to a loopback peer only.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import signal
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from devices.simulator.base import is_loopback
from devices.simulator.fleet import (
    DeviceSpec,
    Fleet,
    format_table,
    household_mix,
    known_models,
    may_own_addresses,
    parse_announce_target,
)


class Command(BaseCommand):
    help = "Simulate myStrom and Shelly devices on loopback until Ctrl-C."
    # The simulator has nothing to do with the database: no checks, no migrations.
    requires_system_checks: list[str] = []
    requires_migrations_checks = False

    def add_arguments(self, parser):
        parser.add_argument("--devices", type=int, default=None, metavar="N",
                            help="Number of devices; the mix repeats when N is larger.")
        parser.add_argument("--mix", default=None, metavar="MODELS",
                            help="Comma-separated models, e.g. WS2,SHSW-PM,SHSW-25:relay,SNSW-001P16EU "
                                 "(see --list). Default: the household mix.")
        parser.add_argument("--host", default="127.0.0.1", help="Loopback address to bind (default 127.0.0.1).")
        parser.add_argument("--base-port", type=int, default=0, metavar="P",
                            help="First port; devices get P, P+1, ... (default: ephemeral ports).")
        parser.add_argument("--own-addresses", action="store_true",
                            help="Give each device its own 127.0.x.y on port 80 (root or private netns).")
        parser.add_argument("--announce-to", default=None, metavar="HOST:PORT",
                            help="Send myStrom UDP announcements to this loopback target, e.g. 127.0.0.1:7979.")
        parser.add_argument("--announce-interval", type=float, default=5.0, metavar="S")
        parser.add_argument("--coiot-peer", default="", metavar="HOST:PORT",
                            help="CoIoT peer of the Gen1 devices (loopback), e.g. 127.0.0.1:5683.")
        parser.add_argument("--protect", action="store_true",
                            help="Protect some devices with a password/token.")
        parser.add_argument("--mdns", action="store_true", help="Advertise the Shelly devices over mDNS.")
        parser.add_argument("--seed", type=int, default=1, help="Same seed, same household (default 1).")
        parser.add_argument("--control-port", type=int, default=0, metavar="P",
                            help="Port of the control API on 127.0.0.1 (default: ephemeral).")
        parser.add_argument("--list", action="store_true", help="List the models and the default mix, then exit.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["list"]:
            self.stdout.write("Models: " + ", ".join(known_models()))
            self.stdout.write("Default mix: " + ", ".join(str(s) for s in household_mix()))
            return
        try:
            specs = ([DeviceSpec.parse(m) for m in options["mix"].split(",") if m.strip()]
                     if options["mix"] else household_mix())
            announce = parse_announce_target(options["announce_to"]) if options["announce_to"] else None
            if options["coiot_peer"]:
                parse_announce_target(options["coiot_peer"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if not is_loopback(options["host"]):
            raise CommandError("--host must be a loopback address: the simulator never binds a LAN")
        if options["devices"] is not None and options["devices"] < 1:
            raise CommandError("--devices must be at least 1")
        if options["own_addresses"] and not may_own_addresses():
            raise CommandError("--own-addresses needs root (port 80) or HOMEDASH_PRIVATE_NETNS=1")
        try:
            fleet = Fleet(specs, host=options["host"], base_port=options["base_port"],
                          seed=options["seed"], announce_to=announce, count=options["devices"],
                          per_device_addresses=options["own_addresses"], protect=options["protect"],
                          control_port=options["control_port"],
                          announce_interval=options["announce_interval"],
                          coiot_peer=options["coiot_peer"])
        except (ValueError, PermissionError) as exc:
            raise CommandError(str(exc)) from exc
        asyncio.run(self._run(fleet, mdns=options["mdns"]))

    async def _run(self, fleet: Fleet, *, mdns: bool) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        try:
            await fleet.start()
        except OSError as exc:
            await fleet.stop()
            raise CommandError(f"could not start the devices: {exc}") from exc
        advertiser = None
        try:
            self.stdout.write(format_table(fleet.table()))
            for spec in fleet.skipped:
                self.stderr.write(f"skipped {spec}: the Shelly Gen2+ simulator is not available")
            if fleet.control is not None:
                self.stdout.write(f"\nControl API: {fleet.control.url}/devices")
            if mdns:
                advertiser = await self._advertise(fleet)
            self.stdout.write(f"{len(fleet.devices)} devices running; Ctrl-C to stop.")
            sys.stdout.flush()
            await stop.wait()
        finally:
            self.stdout.write("Stopping ...")
            await self._unadvertise(advertiser)
            await fleet.stop()

    async def _advertise(self, fleet: Fleet) -> Any:
        try:
            from devices.simulator.mdns import advertise
        except ImportError:
            self.stderr.write("--mdns: devices/simulator/mdns.py is not available; not advertising")
            return None
        kwargs: dict[str, Any] = {}
        if is_loopback(fleet.host) and "allow_loopback_multicast" in inspect.signature(advertise).parameters:
            # --mdns on a loopback address is the explicit opt-in: multicast on lo never
            # leaves the machine.
            kwargs["allow_loopback_multicast"] = True
        try:
            advertisement = await asyncio.wait_for(advertise(fleet.devices, fleet.host, **kwargs), 30)
        except (OSError, ValueError, RuntimeError, asyncio.TimeoutError) as exc:
            self.stderr.write(f"--mdns: not advertising: {exc}")
            return None
        self.stdout.write(f"mDNS: advertising the Shelly devices on {fleet.host}")
        return advertisement

    @staticmethod
    async def _unadvertise(advertisement: Any) -> None:
        close = getattr(advertisement, "close", None)
        if callable(close):
            result = close()
            if inspect.isawaitable(result):
                await result
