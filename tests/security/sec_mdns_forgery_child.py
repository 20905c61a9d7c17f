"""Runs inside the private network namespace (tests/discovery/disc_netns.py): a real
zeroconf responder publishes forged ``_shelly._tcp`` / ``_http._tcp`` records naming a
protected Gen2 device and pointing at an impostor; homedash's real discovery (zeroconf
browser -> /shelly probe -> inbox) and runtime run against a database of their own.
Prints JSON: what the impostor received and where the device is."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
import types


async def main() -> dict:
    assert os.environ.get("HOMEDASH_PRIVATE_NETNS") == "1", "only inside the private namespace"
    import httpx
    from aiohttp import web
    from asgiref.sync import sync_to_async
    from django.core.management import call_command

    from devices import runtime as runtime_module
    from devices.credentials import Credentials
    from devices.discovery.service import Discovery
    from devices.models import Device
    from devices.runtime.setup import build_runtime
    from devices.simulator import mdns as sim_mdns
    from devices.simulator.shelly_rpc import ShellyRpc

    await sync_to_async(call_command)("migrate", verbosity=0)
    password = "Gen2-Secret-66"
    home, evil = "127.0.0.10", "127.0.0.66"
    real = ShellyRpc("SNSW-001P16EU", host=home, port=80, password=password, name="Garden pump")
    await real.start()
    async with httpx.AsyncClient() as client:
        answer = (await client.get(f"http://{home}/shelly")).json()
    device = await Device.objects.acreate(
        mac=real.mac, vendor="shelly", generation=2, model_code="SNSW-001P16EU", host=home, port=80,
        name="Garden pump", adopted=True, poll_interval=0.3, auth_required=True,
        credentials=Credentials(username="admin", password=password))

    requests: list[dict] = []

    async def impostor(request: web.Request) -> web.StreamResponse:
        body = (await request.content.read(1024)) if request.can_read_body else b""
        requests.append({"method": request.method, "path": request.path,
                         "headers": {k.lower(): v for k, v in request.headers.items()},
                         "body": body.decode("latin-1")})
        if request.path == "/shelly":
            return web.json_response(answer)
        challenge = f'Digest qop="auth", realm="{answer["id"]}", nonce="1733300000", algorithm=SHA-256'
        return web.json_response({"code": 401}, status=401, headers={"WWW-Authenticate": challenge})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", impostor)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, evil, 80).start()

    rt = build_runtime(manager_options={"start_spread": 0.1, "flush_period": 0.2})
    await rt.start()
    runtime_module.install(rt)
    # The forgery: the victim's own records (same instance names, TXT, SRV target), but
    # with the impostor's address.
    clone = types.SimpleNamespace(vendor="shelly", mac=real.mac, gen=real.gen, device_id=answer["id"],
                                  app=answer.get("app", ""), ver=answer.get("ver", ""), name=None,
                                  port=80, host=evil, model="SNSW-001P16EU")
    advertisement = await sim_mdns.advertise([clone], "127.0.0.1")
    discovery = Discovery(udp=False, mdns=True, mdns_interfaces=["127.0.0.1"], allow_loopback=True, probe_window=1.0)
    await discovery.start()

    def state() -> dict:
        d = Device.objects.get(pk=device.pk)
        return {"host": d.host, "pending_host": d.pending_host, "pending_found_by": d.pending_found_by,
                "pending_answered": d.pending_answered}

    now = await sync_to_async(state)()
    for _ in range(200):
        if now["pending_host"]:
            break
        await asyncio.sleep(0.1)
        now = await sync_to_async(state)()
    await asyncio.sleep(1.5)  # the runtime polls every 0.3 s: it would have found the impostor
    now = await sync_to_async(state)()
    session = rt.manager.sessions.get(device.pk)
    live = rt.manager.store.get(device.pk)
    result = {
        "device": now,
        "runtime_host": session.config.host if session else None,
        "runtime_online": bool(live and live.online),
        "real_requests": real.requests_total,
        "impostor": requests,
        "mdns": {"sightings": discovery.mdns.sightings, "probes": discovery.mdns.probes},
        "instances": len(advertisement.names),
    }
    await discovery.stop()
    await advertisement.close()
    runtime_module.install(None)
    await rt.stop()
    await runner.cleanup()
    await real.stop()
    return result


if __name__ == "__main__":
    # A database of its own: never the suite's, never the household's.
    data_dir = tempfile.mkdtemp(prefix="homedash-sec-mdns-")
    os.environ["HOMEDASH_DATA_DIR"] = data_dir
    os.environ["HOMEDASH_ALLOW_LOOPBACK_DEVICES"] = "true"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "homedash.settings")
    import django

    django.setup()
    try:
        print(json.dumps(asyncio.run(main())))
        sys.stdout.flush()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
