"""A simulated household of 50 devices, followed by the runtime: every device comes
online, start-up is spread out, faults show up in state and health within seconds and
the runtime recovers, and no device ever sees two requests from homedash at once."""

from __future__ import annotations

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async

from devices import runtime as runtime_module
from devices.credentials import Credentials
from devices.drivers import probe
from devices.drivers.errors import AuthRequired
from devices.drivers.http import make_client
from devices.drivers.mystrom import MyStrom
from devices.models import Device
from devices.runtime.setup import build_runtime
from devices.simulator.fleet import Fleet
from tests.waiting import until

pytestmark = pytest.mark.django_db(transaction=True)
HOUSEHOLD = 50




def _is_sleeper(sim) -> bool:
    spec = getattr(sim, "spec", None)
    return (bool(getattr(sim, "sleeping", False)) or bool(getattr(spec, "sleeping", False))
            or type(sim).__name__ == "MyStromButton")


async def _adopt_all(fleet) -> dict[int, object]:
    """What discovery + adoption leave in the database: one adopted row per device, with
    the secrets the household typed in."""
    by_pk = {}
    async with make_client() as client:
        for sim in fleet.devices:
            fields = {"vendor": sim.vendor, "host": sim.host, "port": sim.port, "adopted": True, "poll_interval": 1.0}
            if not _is_sleeper(sim):
                try:
                    info = await probe(client, sim.host, sim.port)
                except AuthRequired:
                    # A myStrom token hides even the info endpoint: the household typed it.
                    info = await MyStrom(client, sim.host, sim.port, token=sim.secret).info()
                fields.update(generation=info.generation if info.vendor == "shelly" else None,
                              model_code=str(info.type_code or info.model), raw_info=info.raw,
                              auth_required=info.auth_enabled)
            else:
                fields.update(generation=getattr(sim, "gen", 1) if sim.vendor == "shelly" else None,
                              model_code=str(sim.model), raw_info={"sleep_mode": True, "type": sim.model})
            secret = sim.secret
            if secret:
                fields["credentials"] = (Credentials(token=secret) if sim.vendor == "mystrom"
                                         else Credentials(username="admin", password=secret))
            device = await Device.objects.acreate(mac=sim.mac, **fields)
            by_pk[device.pk] = sim
    return by_pk


async def test_fifty_devices_followed_through_faults():
    async with Fleet(count=HOUSEHOLD, seed=7, protect=True) as fleet:
        by_pk = await _adopt_all(fleet)
        awake = {pk: sim for pk, sim in by_pk.items() if not _is_sleeper(sim)}
        assert len(by_pk) == HOUSEHOLD and len(awake) >= 40
        for sim in fleet.devices:
            sim.reset_counters()

        rt = build_runtime(manager_options={"start_spread": 3.0, "flush_period": 0.5})
        started = time.monotonic()
        await rt.start()
        runtime_module.install(rt)  # as serve does: database changes reach this runtime
        store = rt.manager.store
        try:
            assert await until(lambda: all(store.get(pk) and store.get(pk).online for pk in awake), timeout=20), [
                (sim.model, store.get(pk).health.last_error) for pk, sim in awake.items()
                if not (store.get(pk) and store.get(pk).online)]
            followed_after = time.monotonic() - started

            # Start-up spread the first requests instead of hitting everything at once.
            firsts = sorted(sim.request_log[0][0] for sim in awake.values() if sim.request_log)
            assert firsts[-1] - firsts[0] >= 1.5

            # Pick one device of each protocol and hurt it.
            def pick(pred):
                return next(pk for pk, sim in awake.items() if pred(sim) and not sim.secret)

            rpc_pk = pick(lambda s: s.vendor == "shelly" and getattr(s, "gen", 1) >= 2 and hasattr(s, "flip")
                          and s.model in ("SNSW-001P16EU", "S3SW-001P16EU", "S4SW-001P16EU"))
            gen1_pk = pick(lambda s: s.vendor == "shelly" and s.model == "SHSW-PM")
            mystrom_pk = pick(lambda s: s.vendor == "mystrom" and s.model == 106 or getattr(s, "variant", "") == "ch_v2")

            # A change at the device is pushed (Gen2+) or polled (others) within seconds.
            rpc = awake[rpc_pk]
            before = store.get(rpc_pk).channels["switch:0"].on
            await rpc.flip(0)
            assert await until(lambda: store.get(rpc_pk).channels["switch:0"].on is (not before), timeout=3)

            # Killed: offline within seconds; back on: recovered.
            t0 = time.monotonic()
            await rpc.power_off()
            await awake[gen1_pk].power_off()
            assert await until(lambda: not store.get(rpc_pk).online and not store.get(gen1_pk).online, timeout=10)
            offline_after = time.monotonic() - t0
            await rpc.power_on()
            await awake[gen1_pk].power_on()
            assert await until(lambda: store.get(rpc_pk).online and store.get(gen1_pk).online, timeout=20)

            # Slowed beyond the timeout: reported as not answering; recovers when fast again.
            sw = awake[mystrom_pk]
            sw.faults.latency = 7.0
            assert await until(lambda: not store.get(mystrom_pk).online, timeout=25)
            assert "timeout" in store.get(mystrom_pk).health.last_error
            sw.faults.clear()
            assert await until(lambda: store.get(mystrom_pk).online, timeout=70)

            # Re-addressed (DHCP): once discovery records the new address, it is followed there.
            gen1 = awake[gen1_pk]
            await gen1.move_to("127.0.0.1", 0)
            device = await Device.objects.aget(pk=gen1_pk)
            device.port = gen1.port
            await sync_to_async(device.save)()
            gen1.reset_counters()
            assert await until(lambda: gen1.requests_total > 0 and store.get(gen1_pk).online, timeout=10)

            # Re-passworded on the device: says "wrong password".
            rpc.set_secret("someone-changed-it-77")
            await rpc.reboot()
            assert await until(lambda: "wrong password" in store.get(rpc_pk).health.last_error
                               or "needs a password" in store.get(rpc_pk).health.last_error, timeout=15), \
                store.get(rpc_pk).health.last_error
        finally:
            runtime_module.install(None)
            await rt.stop()

        # Never more than one request at a time at any device, all run long.
        assert {sim.max_in_flight for sim in fleet.devices} <= {0, 1}, [
            (sim.model, sim.max_in_flight) for sim in fleet.devices if sim.max_in_flight > 1]
        print(f"\n50 devices followed in {followed_after:.1f} s; killed devices offline after {offline_after:.1f} s")
