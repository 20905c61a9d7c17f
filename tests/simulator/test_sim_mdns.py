"""mDNS announcements of simulated Shelly devices, browsed with a real zeroconf client.

Multicast must never reach a real network, so the check runs in a private network namespace:
this file re-executes itself under ``unshare -rn`` with a sealed, multicast-enabled loopback
and ``HOMEDASH_PRIVATE_NETNS=1``. Where unprivileged namespaces are unavailable the test
skips — except under ``CI=true``, where that is a failure."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
NETNS_SETUP = "ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo"


def _namespace_problem() -> str | None:
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = subprocess.run(["unshare", "-rn", "sh", "-c", NETNS_SETUP], capture_output=True, text=True,
                           timeout=20)
    if probe.returncode != 0:
        return f"unshare -rn is not possible here: {probe.stderr.strip() or probe.returncode}"
    return None


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the mDNS test: {reason}")
    pytest.skip(reason)


@pytest.mark.netns
def test_announcements_are_found_by_a_browser_in_a_private_namespace() -> None:
    problem = _namespace_problem()
    if problem:
        _skip_or_fail(problem)
    env = {**os.environ, "HOMEDASH_PRIVATE_NETNS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(["unshare", "-rn", "sh", "-c", f'{NETNS_SETUP} && exec "$0" "$1"',
                           sys.executable, __file__],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found: dict[str, dict[str, Any]] = json.loads(proc.stdout.strip().splitlines()[-1])
    ids = found.pop("_ids")

    plus = ids["plus"]
    # Gen2+: both service types, each with the id-named and the user-named instance
    for type_ in ("_shelly._tcp.local.", "_http._tcp.local."):
        assert f"{plus['id']}.{type_}" in found
        assert f"Kitchen light.{type_}" in found
    by_id = found[f"{plus['id']}._shelly._tcp.local."]
    assert by_id["txt"] == {"gen": "2", "app": "Plus1PM", "ver": "1.7.5"}
    assert by_id["server"] == f"ShellyPlus1PM-{plus['mac']}.local." and by_id["port"] == plus["port"]
    assert found[f"{plus['id']}._http._tcp.local."]["txt"] == {"gen": "2"}
    user = found["Kitchen light._http._tcp.local."]
    assert user["txt"] == {"gen": "2", "app": "Plus1PM", "ver": "1.7.5"}
    assert user["server"] == "Kitchen-light.local." and user["addresses"] == ["127.0.0.1"]
    g4 = ids["g4"]
    assert found[f"{g4['id']}._shelly._tcp.local."]["txt"]["gen"] == "4"
    # Gen1: _http only, upper-case MAC in the name, the Gen1 TXT keys
    gen1 = ids["gen1"]
    assert f"{gen1['hostname']}._shelly._tcp.local." not in found
    txt = found[f"{gen1['hostname']}._http._tcp.local."]["txt"]
    assert txt["id"] == gen1["hostname"] and txt["arch"] == "esp8266" and txt["app"] == "switch1pm"
    assert txt["fw_id"] == gen1["fw"]
    assert set(txt) == {"id", "arch", "app", "fw_version", "fw_id", "discoverable"}


async def test_advertise_refuses_outside_the_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    from devices.simulator.mdns import MulticastRefused, advertise
    from devices.simulator.shelly_rpc import ShellyRpc

    monkeypatch.delenv("HOMEDASH_PRIVATE_NETNS", raising=False)
    dev = ShellyRpc("SNSW-001P16EU")
    with pytest.raises(MulticastRefused):
        await advertise([dev], "127.0.0.1")                     # loopback, but not allowed
    with pytest.raises(MulticastRefused):
        await advertise([dev], "192.168.1.20", allow_loopback_multicast=True)


# ---------------------------------------------------------------- inside the namespace
async def _inside_namespace() -> dict[str, Any]:
    from zeroconf import IPVersion
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

    from devices.simulator.mdns import HTTP_TYPE, SHELLY_TYPE, advertise
    from devices.simulator.shelly_gen1 import ShellyGen1
    from devices.simulator.shelly_rpc import ShellyRpc

    plus = ShellyRpc("SNSW-001P16EU", name="Kitchen light", drift_period=None, debug_rate=0)
    g4 = ShellyRpc("S4SW-001P16EU", drift_period=None, debug_rate=0)
    gen1 = ShellyGen1("SHSW-PM")
    gen1.port = 8081        # not started: announcing needs only its address
    await plus.start()
    await g4.start()
    ad = await advertise([plus, g4, gen1], "127.0.0.1")
    browser_zc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    names: set[tuple[str, str]] = set()

    def on_change(zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        names.add((service_type, name))

    browser = AsyncServiceBrowser(browser_zc.zeroconf, [SHELLY_TYPE, HTTP_TYPE], handlers=[on_change])
    expected = len(ad.services)
    for _ in range(50):
        if len(names) >= expected:
            break
        await asyncio.sleep(0.1)
    found: dict[str, Any] = {}
    for type_, name in sorted(names):
        info = AsyncServiceInfo(type_, name)
        if await info.async_request(browser_zc.zeroconf, 3000):
            found[name] = {"type": type_, "server": info.server, "port": info.port,
                           "txt": info.decoded_properties, "addresses": info.parsed_addresses()}
    await browser.async_cancel()
    await browser_zc.async_close()
    await ad.close()
    await plus.stop()
    await g4.stop()
    found["_ids"] = {
        "plus": {"id": plus.device_id, "mac": plus.mac, "port": plus.port},
        "g4": {"id": g4.device_id},
        "gen1": {"hostname": gen1.hostname, "fw": gen1.fw},
    }
    return found


if __name__ == "__main__":
    if os.environ.get("HOMEDASH_PRIVATE_NETNS") != "1":
        raise SystemExit("run only inside the private network namespace")
    print(json.dumps(asyncio.run(_inside_namespace())))
