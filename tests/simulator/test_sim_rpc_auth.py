"""Digest authentication of the simulated Shelly Gen2+ devices (shelly.md §4.2): the HTTP
flavour against httpx.DigestAuth and hand-made headers, the websocket JSON flavour, and the
firmware 2.0 rules (opaque expiring nonces, nc tracking, nonce slots, 429 lock-outs)."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import pytest

from devices.simulator.shelly_rpc import ShellyRpc
from sim_rpc_helpers import digest_header, is_notify, json_auth, parse_challenge, rpc_socket, running, sha

PASSWORD = "correct horse"


def device(fw: str = "2.0.0", **kw) -> ShellyRpc:
    kw.setdefault("drift_period", None)
    kw.setdefault("debug_rate", 0)
    return ShellyRpc("SNSW-001P16EU", password=PASSWORD, fw=fw, **kw)


def base(dev: ShellyRpc) -> str:
    return f"http://{dev.host}:{dev.port}"


async def challenge(client: httpx.AsyncClient, dev: ShellyRpc, path: str = "/rpc/Shelly.GetStatus") -> dict[str, str]:
    r = await client.get(base(dev) + path)
    assert r.status_code == 401, r.text
    return parse_challenge(r.headers["WWW-Authenticate"])


# ------------------------------------------------------------------ HTTP
async def test_open_endpoints_and_the_challenge() -> None:
    dev = device()
    async with running(dev), httpx.AsyncClient() as client:
        info = (await client.get(base(dev) + "/shelly")).json()
        assert info["auth_en"] is True and info["auth_domain"] == dev.device_id
        assert (await client.get(base(dev) + "/rpc/Shelly.GetDeviceInfo")).status_code == 200
        r = await client.get(base(dev) + "/rpc/Shelly.GetStatus")
        assert r.status_code == 401 and r.content == b""
        header = r.headers["WWW-Authenticate"]
        assert header.startswith('Digest qop="auth", realm="' + dev.device_id + '", nonce="')
        assert header.endswith(", algorithm=SHA-256")
        nonce = parse_challenge(header)["nonce"]
        base64.b64decode(nonce, validate=True)          # fw 2.x: opaque base64


async def test_old_firmware_uses_numeric_nonces() -> None:
    dev = device(fw="1.4.2")
    async with running(dev), httpx.AsyncClient() as client:
        assert (await challenge(client, dev))["nonce"].isdigit()
        async with rpc_socket(dev) as sock:
            err = (await sock.call("Shelly.GetStatus"))["error"]
            assert isinstance(json.loads(err["message"])["nonce"], int)


@pytest.mark.parametrize("fw", ["1.7.5", "2.0.0"])
async def test_httpx_digest_auth_works(fw: str) -> None:
    dev = device(fw=fw)
    auth = httpx.DigestAuth("admin", PASSWORD)
    async with running(dev), httpx.AsyncClient(auth=auth) as client:
        for _ in range(3):
            r = await client.get(base(dev) + "/rpc/Switch.GetStatus?id=0")
            assert r.status_code == 200 and r.json()["id"] == 0
        r = await client.post(base(dev) + "/rpc/Switch.Set", json={"id": 0, "on": True})
        assert r.json() == {"was_on": False}
        r = await client.post(base(dev) + "/rpc", json={"id": 3, "method": "Switch.Toggle", "params": {"id": 0}})
        assert r.json()["result"] == {"was_on": True}
    # one challenge, then nc counted up on the same nonce
    assert dev.guard.stats.challenges == 1 and dev.guard.stats.successes == 5


async def test_wrong_password_is_401_again() -> None:
    dev = device()
    async with running(dev), httpx.AsyncClient(auth=httpx.DigestAuth("admin", "wrong")) as client:
        r = await client.get(base(dev) + "/rpc/Shelly.GetStatus")
        assert r.status_code == 401 and "stale" not in r.headers["WWW-Authenticate"]
        r = await client.get(base(dev) + "/rpc/Shelly.GetStatus", auth=httpx.DigestAuth("root", PASSWORD))
        assert r.status_code == 401
    assert dev.guard.stats.failures == 2


async def test_expired_nonce_is_stale_not_wrong_password() -> None:
    dev = device(nonce_lifetime=0.3)
    async with running(dev), httpx.AsyncClient() as client:
        nonce = (await challenge(client, dev))["nonce"]
        uri = "/rpc/Shelly.GetStatus"
        ok = await client.get(base(dev) + uri, headers={
            "Authorization": digest_header("GET", uri, dev.device_id, PASSWORD, nonce, 1)})
        assert ok.status_code == 200
        await asyncio.sleep(0.4)
        r = await client.get(base(dev) + uri, headers={
            "Authorization": digest_header("GET", uri, dev.device_id, PASSWORD, nonce, 2)})
        assert r.status_code == 401
        fresh = parse_challenge(r.headers["WWW-Authenticate"])
        assert fresh["stale"] == "true" and fresh["nonce"] != nonce
        # httpx re-challenges on its own and carries on
        auth = httpx.DigestAuth("admin", PASSWORD)
        async with httpx.AsyncClient(auth=auth) as digest_client:
            assert (await digest_client.get(base(dev) + uri)).status_code == 200
            await asyncio.sleep(0.4)
            assert (await digest_client.get(base(dev) + uri)).status_code == 200
    assert dev.guard.stats.failures == 0 and dev.guard.stats.stale == 2


async def test_nc_must_start_at_one_and_increase() -> None:
    dev = device()
    uri = "/rpc/Sys.GetStatus"

    async def attempt(client: httpx.AsyncClient, nonce: str, nc: int) -> int:
        header = digest_header("GET", uri, dev.device_id, PASSWORD, nonce, nc)
        return (await client.get(base(dev) + uri, headers={"Authorization": header})).status_code

    async with running(dev), httpx.AsyncClient() as client:
        nonce = (await challenge(client, dev))["nonce"]
        assert await attempt(client, nonce, 2) == 401          # a new nonce starts at 1
        nonce = (await challenge(client, dev))["nonce"]
        assert await attempt(client, nonce, 1) == 200
        assert await attempt(client, nonce, 1) == 401          # replay
        assert await attempt(client, nonce, 3) == 200          # gaps are fine, going back is not
        assert await attempt(client, nonce, 2) == 401
    assert dev.guard.stats.nc_rejected == 3


async def test_old_firmware_does_not_track_nc() -> None:
    dev = device(fw="1.7.5")
    uri = "/rpc/Sys.GetStatus"
    async with running(dev), httpx.AsyncClient() as client:
        nonce = (await challenge(client, dev))["nonce"]
        for _ in range(2):
            header = digest_header("GET", uri, dev.device_id, PASSWORD, nonce, 1)
            assert (await client.get(base(dev) + uri, headers={"Authorization": header})).status_code == 200


async def test_repeated_failures_lock_the_device_out_then_it_recovers() -> None:
    dev = device(auth_fail_limit=3, auth_lockout=(0.4, 5.0))
    good = httpx.DigestAuth("admin", PASSWORD)
    async with running(dev), httpx.AsyncClient() as client:
        for expected in (401, 401, 429):
            r = await client.get(base(dev) + "/rpc/Shelly.GetStatus", auth=httpx.DigestAuth("admin", "nope"))
            assert r.status_code == expected
        assert r.json() == {"code": 429, "message": "Too many failed authentication attempts"}
        # even the right password is refused while locked out, and /shelly stays open
        r = await client.get(base(dev) + "/rpc/Shelly.GetStatus", auth=good)
        assert r.status_code == 429
        assert (await client.get(base(dev) + "/shelly")).status_code == 200
        await asyncio.sleep(0.5)
        r = await client.get(base(dev) + "/rpc/Shelly.GetStatus", auth=httpx.DigestAuth("admin", PASSWORD))
        assert r.status_code == 200
    assert dev.guard.stats.lockouts == 1


async def test_replaying_a_dead_nonce_keeps_the_device_throttled() -> None:
    dev = device(auth_fail_limit=2, auth_lockout=(0.3,))
    uri = "/rpc/Shelly.GetStatus"
    async with running(dev), httpx.AsyncClient() as client:
        nonce = (await challenge(client, dev))["nonce"]
        for _ in range(2):
            bad = digest_header("GET", uri, dev.device_id, "nope", nonce, 1)
            await client.get(base(dev) + uri, headers={"Authorization": bad})
        assert dev.guard.locked_out
        # The lock-out dropped every nonce; a client that keeps replaying its old one
        # (instead of backing off and re-challenging) keeps the device locked.
        for nc in (2, 3, 4):
            await asyncio.sleep(0.15)
            dead = digest_header("GET", uri, dev.device_id, PASSWORD, nonce, nc)
            r = await client.get(base(dev) + uri, headers={"Authorization": dead})
            assert r.status_code == 429
        assert dev.guard.locked_out
        await asyncio.sleep(0.35)
        auth = httpx.DigestAuth("admin", PASSWORD)
        assert (await client.get(base(dev) + uri, auth=auth)).status_code == 200


async def test_nonce_slots_run_out_briefly() -> None:
    dev = device(nonce_slots=4, slot_throttle=0.3)
    async with running(dev), httpx.AsyncClient() as client:
        for _ in range(4):
            await challenge(client, dev)
        r = await client.get(base(dev) + "/rpc/Shelly.GetStatus")
        assert r.status_code == 429 and r.json()["message"] == "Too many requests"
        await asyncio.sleep(0.35)
        await challenge(client, dev)          # the least recently used slot was recycled
        assert dev.guard.nonces_in_use == 4


# ------------------------------------------------------------------ websocket JSON auth
async def test_websocket_challenge_frame_and_json_auth() -> None:
    dev = device()
    async with running(dev), rpc_socket(dev, src="dash-auth") as sock:
        info = (await sock.call("Shelly.GetDeviceInfo"))["result"]       # open without auth
        realm = info["auth_domain"]
        reply = await sock.call("Cover.Close", {"id": 0})
        assert reply["error"]["code"] == 404                             # no such method: no challenge
        reply = await sock.call("Switch.Set", {"id": 0, "on": True})
        assert set(reply) == {"id", "src", "dst", "error"} and reply["dst"] == "dash-auth"
        assert reply["error"]["code"] == 401
        assert isinstance(reply["error"]["message"], str)                # JSON inside a string
        chal = json.loads(reply["error"]["message"])
        assert chal == {"auth_type": "digest", "nonce": chal["nonce"], "nc": 1, "realm": realm,
                        "algorithm": "SHA-256"}
        nonce = chal["nonce"]
        ok = await sock.call("Switch.Set", {"id": 0, "on": True}, auth=json_auth(realm, PASSWORD, nonce, 1))
        assert ok["result"] == {"was_on": False}
        ok = await sock.call("Switch.GetStatus", {"id": 0}, auth=json_auth(realm, PASSWORD, nonce, 2))
        assert ok["result"]["output"] is True
        replay = await sock.call("Switch.GetStatus", {"id": 0}, auth=json_auth(realm, PASSWORD, nonce, 2))
        assert replay["error"]["code"] == 401
        wrong = await sock.call("Switch.GetStatus", {"id": 0}, auth=json_auth(realm, "wrong", nonce, 3))
        assert wrong["error"]["code"] == 401


async def test_websocket_stale_nonce_and_lockout_frames() -> None:
    dev = device(nonce_lifetime=0.2, auth_fail_limit=2, auth_lockout=(5.0,))
    async with running(dev), rpc_socket(dev) as sock:
        chal = json.loads((await sock.call("Sys.GetStatus"))["error"]["message"])
        await asyncio.sleep(0.3)
        stale = await sock.call("Sys.GetStatus", auth=json_auth(dev.device_id, PASSWORD, chal["nonce"], 1))
        fresh = json.loads(stale["error"]["message"])
        assert fresh["stale"] is True and fresh["nonce"] != chal["nonce"]
        for _ in range(2):
            r = await sock.call("Sys.GetStatus", auth=json_auth(dev.device_id, "x", fresh["nonce"], 1))
        assert r["error"] == {"code": 429, "message": "Too many failed authentication attempts"}


async def test_json_auth_object_over_http_post() -> None:
    dev = device(fw="1.7.5")
    async with running(dev), httpx.AsyncClient() as client:
        frame = {"id": 1, "src": "dash", "method": "Shelly.GetStatus"}
        first = (await client.post(base(dev) + "/rpc", json={**frame, "auth": None}))
        assert first.status_code == 200 and first.json()["error"]["code"] == 401
        nonce = json.loads(first.json()["error"]["message"])["nonce"]
        r = await client.post(base(dev) + "/rpc", json={**frame, "auth": json_auth(dev.device_id, PASSWORD, nonce, 1)})
        assert "sys" in r.json()["result"]


async def test_set_secret_forces_everyone_to_authenticate_again() -> None:
    dev = device()
    async with running(dev), rpc_socket(dev) as sock, httpx.AsyncClient() as client:
        chal = json.loads((await sock.call("Sys.GetStatus"))["error"]["message"])
        assert "result" in await sock.call("Sys.GetStatus", auth=json_auth(dev.device_id, PASSWORD, chal["nonce"], 1))
        dev.set_secret("new password")
        again = await sock.call("Sys.GetStatus", auth=json_auth(dev.device_id, PASSWORD, chal["nonce"], 2))
        assert again["error"]["code"] == 401
        chal = json.loads(again["error"]["message"])
        assert "result" in await sock.call("Sys.GetStatus", auth=json_auth(dev.device_id, "new password", chal["nonce"], 1))
        assert dev.describe()["secret"] == "new password"
        dev.set_secret(None)
        assert (await client.get(base(dev) + "/rpc/Shelly.GetStatus")).status_code == 200
        assert (await client.get(base(dev) + "/shelly")).json()["auth_en"] is False


async def test_set_auth_rpc_installs_ha1() -> None:
    dev = ShellyRpc("SNSW-001P16EU", drift_period=None, debug_rate=0)
    async with running(dev), httpx.AsyncClient() as client:
        ha1 = sha(f"admin:{dev.device_id}:from-dashboard")
        r = await client.post(base(dev) + "/rpc/Shelly.SetAuth",
                              json={"user": "admin", "realm": "someone-else", "ha1": ha1})
        assert r.json()["code"] == -103
        r = await client.post(base(dev) + "/rpc/Shelly.SetAuth",
                              json={"user": "admin", "realm": dev.device_id, "ha1": ha1})
        assert r.status_code == 200 and r.json() is None
        assert (await client.get(base(dev) + "/rpc/Shelly.GetStatus")).status_code == 401
        auth = httpx.DigestAuth("admin", "from-dashboard")
        assert (await client.get(base(dev) + "/rpc/Shelly.GetStatus", auth=auth)).status_code == 200
        r = await client.post(base(dev) + "/rpc/Shelly.SetAuth",
                              json={"user": "admin", "realm": dev.device_id, "ha1": None}, auth=auth)
        assert r.status_code == 200
        assert (await client.get(base(dev) + "/shelly")).json()["auth_en"] is False


async def test_no_pushes_before_the_client_authenticated() -> None:
    dev = device()
    async with running(dev), rpc_socket(dev) as sock:
        await sock.call("Shelly.GetDeviceInfo")                      # src known, but not authenticated
        await dev.flip(0)
        assert await sock.notifications("NotifyStatus", within=0.3) == []
        chal = json.loads((await sock.call("Sys.GetStatus"))["error"]["message"])
        await sock.call("Sys.GetStatus", auth=json_auth(dev.device_id, PASSWORD, chal["nonce"], 1))
        await dev.flip(0)
        assert (await sock.expect(is_notify("NotifyStatus")))["params"]["switch:0"]["output"] is False
        dev.set_secret("changed")                                    # must prove itself again
        await dev.flip(0)
        assert await sock.notifications("NotifyStatus", within=0.3) == []
