"""At HOMEDASH_LOG_LEVEL=DEBUG the log shows no credential: the third-party loggers that see
headers and frames stay at INFO, and a filter on the console hides credential values in
whatever does reach it."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from homedash.logfilters import HIDDEN, redact
from tests.payloads import REPO

RPC_PASSWORD = "Rpc-Secret-77"
GEN1_PASSWORD = "Gen1-Secret-55"

# Digest auth three ways (RPC over the websocket, RPC over HTTP with and without the lean
# transport), Basic auth to a Gen1, and the debug-log stream whose upgrade request carries
# an `Authorization: Digest` header; then the same with the websocket and httpcore loggers
# forced to DEBUG, as someone chasing a bug might.
PROBE = f'''
import asyncio, logging
from devices.drivers import make_client
from devices.drivers.debuglog import DebugLogStream
from devices.drivers.shelly_gen1 import ShellyGen1 as Gen1Driver
from devices.drivers.shelly_rpc import ShellyRpcHttp, ShellyRpcSession
from devices.simulator.shelly_gen1 import ShellyGen1 as Gen1Sim
from devices.simulator.shelly_rpc import ShellyRpc

async def exercise():
    sim = ShellyRpc("SNSW-001P16EU", password="{RPC_PASSWORD}")
    sim.config["sys"]["debug"]["websocket"]["enable"] = True
    g1 = Gen1Sim("SHSW-PM", password="{GEN1_PASSWORD}")
    await sim.start(); await g1.start()
    try:
        async with ShellyRpcSession(sim.host, sim.port, password="{RPC_PASSWORD}") as session:
            await session.get_status()
        async with DebugLogStream(sim.host, sim.port, password="{RPC_PASSWORD}") as stream:
            assert stream.authenticated
        for lean in (True, False):
            async with make_client(lean=lean) as client:
                await ShellyRpcHttp(client, sim.host, sim.port, password="{RPC_PASSWORD}").get_status()
                await Gen1Driver(client, g1.host, g1.port, password="{GEN1_PASSWORD}").status()
    finally:
        await sim.stop(); await g1.stop()

probe = logging.getLogger("probe")
probe.warning("PHASE settings")
asyncio.run(exercise())
for name in ("websockets", "httpcore", "httpx"):
    logging.getLogger(name).setLevel(logging.DEBUG)
probe.warning("PHASE forced")
asyncio.run(exercise())
probe.warning("PHASE done")
'''


def _run_probe(tmp_path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMEDASH_")}
    env.update(HOMEDASH_DATA_DIR=str(tmp_path / "data"), HOMEDASH_LOG_LEVEL="DEBUG",
               HOMEDASH_ALLOW_LOOPBACK_DEVICES="true")
    result = subprocess.run([sys.executable, "manage.py", "shell", "-c", PROBE], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def test_debug_level_logs_no_credentials(tmp_path):
    log = _run_probe(tmp_path)
    assert "PHASE done" in log
    settings_phase, forced_phase = log.split("PHASE forced", 1)
    assert " DEBUG " in settings_phase  # the level really was DEBUG
    assert "websockets.client" not in settings_phase and "httpcore" not in settings_phase
    # Forced to DEBUG, the websocket client does log the debug-log upgrade's headers...
    assert f"Authorization: {HIDDEN}" in forced_phase
    # ...but no credential value, in either phase.
    for secret in (RPC_PASSWORD, GEN1_PASSWORD, "Digest username", "Basic "):
        assert secret not in log, secret
    assert not re.search(r'response="?[0-9a-f]{16,}', log)
    assert not re.search(r'"cnonce"\s*:\s*"?[0-9a-zA-Z]', log)


def test_redact_hides_values_in_the_shapes_libraries_log():
    samples = {
        '> Authorization: Digest username="admin", realm="shellyplus1pm-44", nonce="1796376242", '
        'uri="/debug/log", algorithm=SHA-256, response="36290901854c49e7", qop=auth, nc=00000001, cnonce="c675d871"':
            "36290901854c49e7",
        "return_value=(b'HTTP/1.1', 200, b'OK', [(b'Authorization', b'Basic YWRtaW46c2VjcmV0')])": "YWRtaW46",
        "> Token: 4F3A99B2C1": "4F3A99B2C1",
        '> TEXT \'{"id":3,"method":"Shelly.GetStatus","auth":{"realm":"x","username":"admin","nonce":1,'
        '"cnonce":"abc123","response":"deadbeefcafe","algorithm":"SHA-256"}}\'': "deadbeefcafe",
        '{"password": "hunter2-hunter2", "name": "Kitchen"}': "hunter2",
    }
    for line, secret in samples.items():
        clean = redact(line)
        assert secret not in clean and HIDDEN in clean, clean
    # Ordinary lines pass unchanged.
    for line in ("Kitchen switch: relay on", "polling 12 devices", '{"switch:0":{"output":true}}'):
        assert redact(line) == line
