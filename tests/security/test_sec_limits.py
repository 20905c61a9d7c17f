"""What a client on the LAN can make homedash hold, tried against the real `serve` (daphne on
a free loopback port) the way an attacker would: the sleepers' socket `/shelly/ws`, the
page sockets, and request bodies. Every refusal is shown, every allowed case is shown to
work, and the server's memory (VmRSS of its process) is measured while it is attacked.

Loopback has the whole of 127.0.0.0/8, so a client can come from any "address" here: the
simulated sleeper lives at 127.0.0.1, a second adopted sleeper's address (127.0.0.4) is
used by the attacker who has taken it, 127.0.1.x are more sleepers for the total cap, and
strangers come from 127.0.0.5.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from devices.simulator.shelly_rpc import ShellyRpc
from tests.servers import REPO, LiveServer

IDLE = 3                       # HOMEDASH_SLEEPER_SOCKET_IDLE for this server
TAKEN = "127.0.0.4"            # an adopted sleeper's address, in the attacker's hands
TAKEN_ID = "shellyplusht-08b61fcd36a8"
STRANGER = "127.0.0.5"
MORE_SLEEPERS = [f"127.0.1.{i}" for i in range(1, 18)]   # 17 x 2 sockets > the total cap of 32
PASSWORD = "limits-pw-2741-x"
BODY_LIMIT = 128 * 1024        # settings.REQUEST_BODY_LIMIT (2 x DATA_UPLOAD_MAX_MEMORY_SIZE)
MB = 1024 * 1024


def full_status(src: str = TAKEN_ID, pad: int = 0) -> str:
    return json.dumps({"src": src, "dst": "ws", "method": "NotifyFullStatus",
                       "params": {"temperature:0": {"id": 0, "tC": 19.5}, "sys": {"wakeup_period": 7200},
                                  **({"pad": "x" * pad} if pad else {})}})


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    sensor = ShellyRpc(model="SNSN-0013A", awake_time=30)
    server = LiveServer(tmp_path_factory.mktemp("limits") / "data",
                        extra_env={"HOMEDASH_SLEEPER_SOCKET_IDLE": str(IDLE)})
    server.manage("migrate", "--noinput", "-v0")
    more = ", ".join(f"('{host}', 'AABBCC01{i:04X}')" for i, host in enumerate(MORE_SLEEPERS))
    out = server.manage("shell", "-c", textwrap.dedent(f"""
        from django.contrib.auth import get_user_model
        from devices.models import Device, Room
        User = get_user_model()
        User.objects.create_superuser("owner", password="{PASSWORD}")
        User.objects.create_user("dora", password="{PASSWORD}")   # a member with no rooms
        kitchen = Room.objects.create(name="Kitchen")
        sim = Device.objects.create(mac="{sensor.mac}", vendor="shelly", generation=2, model_code="SNSN-0013A",
                                    host="127.0.0.1", port=9, adopted=True, room=kitchen, name="Hall sensor",
                                    raw_info={{"sleep_mode": True}})
        Device.objects.create(mac="08B61FCD36A8", vendor="shelly", generation=2, model_code="SNSN-0013A",
                              host="{TAKEN}", port=9, adopted=True, raw_info={{"sleep_mode": True}})
        for host, mac in [{more}]:
            Device.objects.create(mac=mac, vendor="shelly", generation=2, model_code="SNSN-0013A", host=host,
                                  port=9, adopted=True, raw_info={{"sleep_mode": True}})
        # Always on (not a sleeper) at an address of its own: no outbound socket for it.
        Device.objects.create(mac="AABBCC0000A1", vendor="shelly", generation=2, model_code="SNSW-001P16EU",
                              host="127.0.0.6", port=9, adopted=True)
        button = Device.objects.create(mac="AABBCC0000B1", vendor="mystrom", model_code="104", host="127.0.0.7",
                                       port=9, adopted=True, room=kitchen, name="Door button")
        print(sim.pk, button.webhook_secret)
    """))
    sim_pk, secret = out.split()[-2:]
    server.start()
    try:
        yield server, sensor, int(sim_pk), secret
    finally:
        server.stop()


def rss_mb(server: LiveServer) -> float:
    with open(f"/proc/{server.process.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def open_descriptors(server: LiveServer) -> int:
    return len(os.listdir(f"/proc/{server.process.pid}/fd"))


def ws_url(server: LiveServer, path: str = "/shelly/ws") -> str:
    return server.url.replace("http://", "ws://") + path


def sleeper_socket(server: LiveServer, source: str):
    return connect(ws_url(server), local_addr=(source, 0), subprotocols=["json-rpc"], proxy=None, compression=None,
                   open_timeout=5, close_timeout=2, max_size=None, ping_interval=None)


async def closed_with(ws, timeout: float = 8.0) -> int | None:
    """Read until the server closes; its close code (None: it did not close in time)."""
    try:
        async with asyncio.timeout(timeout):
            async for _ in ws:
                pass
    except TimeoutError:
        return None
    except ConnectionClosed:
        pass
    return ws.close_code


def closed_for_flooding(codes: list) -> bool:
    """Every socket was closed, most with 4429. A sender too busy sending to read can miss
    the close frame before the server drops the connection a second later (1006)."""
    return bool(codes) and set(codes) <= {4429, 1006} and codes.count(4429) * 2 >= len(codes)


def log_in(client: httpx.Client, username: str) -> httpx.Response:
    page = client.get("/login/")
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    return client.post("/login/", data={"username": username, "password": PASSWORD, "csrfmiddlewaretoken": csrf},
                       headers={"Referer": client.base_url.join("/login/").__str__()})


# ----------------------------------------------------------------------------- /shelly/ws
async def test_a_stranger_is_refused_at_the_handshake_and_holds_nothing(live):
    server, *_ = live
    before = open_descriptors(server)
    for source in [STRANGER, "127.0.0.6"]:   # nobody's address; an always-on device's address
        with pytest.raises(InvalidStatus) as refused:
            async with sleeper_socket(server, source):
                pass
        assert refused.value.response.status_code == 403
    # Hundreds of attempts leave no socket open behind them.
    async def attempt():
        with pytest.raises((InvalidStatus, OSError)):
            async with sleeper_socket(server, STRANGER):
                pass
    await asyncio.gather(*(attempt() for _ in range(300)))
    await asyncio.sleep(1.0)
    assert open_descriptors(server) <= before + 5
    assert httpx.get(server.url + "/login/").status_code == 200


async def test_a_first_frame_that_does_not_name_the_device_at_that_address_closes_the_socket(live):
    server, sensor, *_ = live
    for frame in [full_status(sensor.device_id), full_status("shellyplusht-aabbccddeeff"), "hello", "[1]"]:
        async with sleeper_socket(server, TAKEN) as ws:
            await ws.send(frame)
            assert await closed_with(ws, 3) == 4403, frame


async def test_a_silent_socket_is_closed_before_and_after_it_said_who_it_is(live):
    server, *_ = live
    async with sleeper_socket(server, TAKEN) as ws:
        started = time.monotonic()
        assert await closed_with(ws, 10) == 4408          # nothing said: 5 s to the first frame
        assert 4 <= time.monotonic() - started <= 9
    async with sleeper_socket(server, TAKEN) as ws:
        await ws.send(full_status())
        started = time.monotonic()
        assert await closed_with(ws, 10) == 4408          # identified, then silent for IDLE s
        assert IDLE - 0.5 <= time.monotonic() - started <= IDLE + 4


async def test_an_oversized_frame_closes_the_socket_with_a_code_daphne_sends(live):
    server, *_ = live
    async with sleeper_socket(server, TAKEN) as ws:
        await ws.send(full_status())
        await ws.send(full_status(pad=40_000))           # past MAX_FRAME (32 KiB)
        assert await closed_with(ws, 3) == 4413
    async with sleeper_socket(server, TAKEN) as ws:
        await ws.send(full_status())
        await ws.send(full_status(pad=100_000))          # past daphne's 64 KiB: cut off by the protocol
        # autobahn fails such a connection by dropping it (1006 here), or says 1009 first.
        assert await closed_with(ws, 3) in (1006, 1009)


async def test_sockets_per_address_and_in_total_are_capped(live):
    server, *_ = live
    async with sleeper_socket(server, TAKEN) as one, sleeper_socket(server, TAKEN) as two:
        for ws in (one, two):
            await ws.send(full_status())
        with pytest.raises(InvalidStatus):
            async with sleeper_socket(server, TAKEN):
                pass
    await asyncio.sleep(0.5)
    async with sleeper_socket(server, TAKEN) as again:   # the places were given back
        await again.send(full_status())
        await again.send(json.dumps({"src": TAKEN_ID, "id": 1, "method": "Shelly.GetStatus"}))
        assert json.loads(await asyncio.wait_for(again.recv(), 3))["id"] == 1

    opened, refused = [], 0
    try:
        for i, host in enumerate(MORE_SLEEPERS):
            for _ in range(2):
                try:
                    ws = await sleeper_socket(server, host)
                except InvalidStatus:
                    refused += 1
                    continue
                opened.append(ws)
                await ws.send(full_status(f"shellyplusht-aabbcc01{i:04x}"))
        assert len(opened) == 32 and refused == 2
    finally:
        await asyncio.gather(*(ws.close() for ws in opened))


async def test_a_frame_flood_is_closed_and_memory_stays_bounded(live):
    """The reported attack: large frames as fast as the wire takes them (60 KB frames for
    15 s took the process from 92 to 1,609 MB). Here 30 KB frames, which pass the size check,
    from the address of an adopted sleeper, reconnecting whenever closed, for 8 s."""
    server, *_ = live
    baseline = rss_mb(server)
    peak, codes, sent = baseline, [], 0
    frame = full_status(pad=30_000)
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        try:
            async with sleeper_socket(server, TAKEN) as ws:
                await ws.send(full_status())
                try:
                    while time.monotonic() < deadline:
                        await ws.send(frame)
                        sent += 1
                        if sent % 50 == 0:
                            peak = max(peak, rss_mb(server))
                except ConnectionClosed:
                    pass
                codes.append(await closed_with(ws, 3))
        except InvalidStatus:
            await asyncio.sleep(0.05)   # both places still held by closing sockets
        peak = max(peak, rss_mb(server))
    print(f"frame flood: {sent} frames of 30 KB on {len(codes)} sockets, RSS {baseline:.0f} -> peak {peak:.0f} MB")
    assert closed_for_flooding(codes), codes
    assert sent > 100   # the attack did run
    assert peak - baseline < 80, f"RSS {baseline:.0f} -> {peak:.0f} MB after {sent} frames of 30 KB"


async def test_the_adopted_sleeper_still_reports(live):
    server, sensor, sim_pk, _ = live
    sensor.config["ws"].update({"enable": True, "server": ws_url(server)})
    await sensor.start()
    try:
        sensor.wake(3)
        with httpx.Client(base_url=server.url) as client:
            assert log_in(client, "owner").status_code == 302
            status = {}
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                status = client.get(f"/devices/{sim_pk}/raw.json").json()["status"]
                if "temperature:0" in status:
                    break
                await asyncio.sleep(0.2)
            assert status["temperature:0"]["tC"] == sensor.full_status()["temperature:0"]["tC"]
    finally:
        await sensor.stop()


# ----------------------------------------------------------------------------- page sockets
ATTACK = textwrap.dedent("""
    import asyncio, json, sys, time
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    async def main(url, cookie, origin, seconds):
        sent, codes, deadline = 0, [], time.monotonic() + seconds
        refresh = json.dumps({"type": "refresh"})
        while time.monotonic() < deadline:
            try:
                async with connect(url, additional_headers={"Cookie": cookie, "Origin": origin}, proxy=None,
                                   compression=None, max_size=None, ping_interval=None, close_timeout=1) as ws:
                    try:
                        while time.monotonic() < deadline:
                            await ws.send(refresh)
                            sent += 1
                            if sent % 200 == 0:
                                await asyncio.sleep(0)
                    except ConnectionClosed:
                        codes.append(ws.close_code)   # closed by the server (not by our deadline)
            except (OSError, InvalidStatus):
                await asyncio.sleep(0.05)
        print(json.dumps({"sent": sent, "codes": codes}))

    asyncio.run(main(*sys.argv[1:4], float(sys.argv[4])))
""")


def page_times(client: httpx.Client, n: int) -> list[float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        assert client.get("/").status_code == 200
        times.append(time.perf_counter() - started)
    return times


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def test_a_page_socket_flood_is_closed_and_another_users_page_stays_fast(live):
    server, *_ = live
    with httpx.Client(base_url=server.url) as owner, httpx.Client(base_url=server.url) as dora:
        # Ordinary form posts go through both body limits untouched.
        assert log_in(owner, "owner").status_code == 302
        assert log_in(dora, "dora").status_code == 302
        page_times(owner, 3)
        baseline = median(page_times(owner, 15))
        rss_before = rss_mb(server)
        attacker = subprocess.Popen(
            [sys.executable, "-c", ATTACK, ws_url(server, "/ws/home/"), f"sessionid={dora.cookies['sessionid']}",
             server.url, "8"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        during, peak = [], rss_before
        try:
            time.sleep(1.0)   # the flood is on
            while attacker.poll() is None and len(during) < 60:
                during += page_times(owner, 1)
                peak = max(peak, rss_mb(server))
                time.sleep(0.05)
            out, err = attacker.communicate(timeout=30)
        finally:
            if attacker.poll() is None:
                attacker.kill()
        result = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        print(f"page flood: {result.get('sent')} messages on {len(result.get('codes', []))} sockets; owner's page "
              f"{baseline * 1000:.0f} ms before, {median(during) * 1000:.0f} ms during (median of {len(during)}); "
              f"RSS {rss_before:.0f} -> peak {peak:.0f} MB")
        # The attack did run: it flooded, and kept coming back (refused at connect for a
        # while after its first flood).
        assert result.get("sent", 0) >= 200 and len(result["codes"]) >= 5, (result, err)
        assert closed_for_flooding(result["codes"]), result["codes"][:10]
        assert len(during) >= 10
        # Before the limits another user's page went from 14 ms to ~800 ms. On a shared
        # 2-core machine allow a generous factor over this run's own baseline.
        assert median(during) < max(8 * baseline, baseline + 0.15), (baseline, median(during))
        assert peak - rss_before < 60, f"RSS {rss_before:.0f} -> {peak:.0f} MB"
        # The member herself still gets her page and a socket that works.
        assert dora.get("/").status_code == 200


async def test_an_ordinary_page_socket_still_refreshes(live):
    server, *_ = live
    with httpx.Client(base_url=server.url) as owner:
        log_in(owner, "owner")
        cookie = f"sessionid={owner.cookies['sessionid']}"
    async with connect(ws_url(server, "/ws/home/"), additional_headers={"Cookie": cookie, "Origin": server.url},
                       proxy=None) as ws:
        snapshot = await asyncio.wait_for(ws.recv(), 5)
        assert "Hall sensor" in snapshot or "channel-" in snapshot
        for _ in range(3):   # a page coming back now and then
            await ws.send(json.dumps({"type": "refresh"}))
            assert await asyncio.wait_for(ws.recv(), 5) == snapshot


# ----------------------------------------------------------------------------- request bodies
def raw_request(server: LiveServer, head: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    sock.sendall(head)
    return sock


def read_answer(sock: socket.socket) -> bytes:
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    return data


def test_a_large_declared_body_is_refused_before_it_is_read(live):
    server, *_ = live
    before = rss_mb(server)
    sock = raw_request(server, b"POST /hooks/mystrom/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 300000000\r\n"
                               b"Content-Type: application/x-www-form-urlencoded\r\n\r\n")
    answer = read_answer(sock)   # before a byte of the body was sent
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:80]
    sent = 0
    try:
        for _ in range(3000):    # keep pushing the 300 MB the way a careless client would
            sock.sendall(b"a" * 100_000)
            sent += 100_000
    except OSError:
        pass
    sock.close()
    assert sent < 50 * MB
    assert rss_mb(server) - before < 20


def test_a_chunked_body_is_cut_off_at_the_limit(live):
    server, *_ = live
    before = rss_mb(server)
    sock = raw_request(server, b"POST /hooks/mystrom/x HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                               b"Content-Type: application/x-www-form-urlencoded\r\n\r\n")
    sent = 0
    try:
        for _ in range(3000):
            sock.sendall(b"%x\r\n" % 100_000 + b"a" * 100_000 + b"\r\n")
            sent += 100_000
    except OSError:
        pass
    answer = read_answer(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:80]
    assert sent < 50 * MB   # the server stopped reading (what was sent sat in socket buffers)
    assert rss_mb(server) - before < 20


def test_bodies_up_to_the_limit_still_reach_django(live):
    server, _, _, secret = live
    with httpx.Client(base_url=server.url) as client:
        # An unauthenticated hook with a real secret: handled (the button blinks green).
        ok = client.post(f"/hooks/mystrom/{secret}", data={"mac": "AABBCC0000B1", "action": "1"})
        assert ok.status_code == 200 and ok.text == "ok"
        # Under the server's limit but over Django's form limit: Django's own 400.
        assert client.post("/login/", content=b"a=" + b"x" * (BODY_LIMIT - 10),
                           headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code == 400
        assert client.post("/login/", content=b"a=" + b"x" * (BODY_LIMIT + 10),
                           headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code == 413


# ----------------------------------------------------------------------------- the ASGI wrapper alone
async def _call(app, headers, chunks):
    """Run one HTTP request through `app`; what the client got and what the application read."""
    incoming = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent, read = [], []

    async def receive():
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    async def application(scope, receive, send):
        while True:
            message = await receive()
            read.append(message)
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                break
        if read[-1]["type"] == "http.disconnect":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"read %d" % sum(len(m.get("body", b"")) for m in read)})

    from homedash.limits import BodyLimit

    await BodyLimit(application, 1000)({"type": "http", "headers": headers}, receive, send)
    status = next((m["status"] for m in sent if m["type"] == "http.response.start"), None)
    return status, read


async def test_the_asgi_wrapper_refuses_before_the_application_reads_and_cuts_off_a_stream():
    """Behind another ASGI server (one that streams bodies) the wrapper is the limit."""
    status, read = await _call(None, [(b"content-length", b"300000000")], [b"x" * 500] * 4)
    assert status == 413 and read == []                     # the application never ran
    status, read = await _call(None, [], [b"x" * 400] * 10)  # no length: counted as it is read
    assert status == 413 and read[-1]["type"] == "http.disconnect"
    assert sum(len(m.get("body", b"")) for m in read) <= 1000
    status, read = await _call(None, [(b"content-length", b"800")], [b"x" * 400] * 2)
    assert status == 200 and len(read) == 2                 # within the limit: untouched
    assert (await _call(None, [(b"content-length", b"12"), (b"content-length", b"99")], [b""]))[0] == 400


def test_a_budget_throttles_a_fast_sender_and_closes_a_flood():
    from homedash.limits import CLOSE, DROP, OK, MessageBudget

    budget = MessageBudget(rate=1.0, burst=10)
    start = budget.at
    assert [budget.spend(now=start) for _ in range(10)] == [OK] * 10
    assert budget.spend(now=start) == DROP                    # past the burst: dropped
    assert budget.spend(now=start + 2.0) == OK                # it refills
    verdicts = [budget.spend(now=start + 2.0) for _ in range(30)]
    assert CLOSE in verdicts and verdicts.index(CLOSE) <= 20  # a flood is closed within 2 x burst


# ----------------------------------------------------------------------------- each consumer's own budget
def _session_cookie(user) -> tuple[bytes, bytes]:
    from django.test import Client

    client = Client()
    client.force_login(user)
    return (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("which", ["home", "device", "logs"])
async def test_every_browser_socket_closes_a_flood_with_4429(which, fresh_cool_off):
    """Behind any ASGI server (here none: the application itself) each consumer counts what
    the page says; a refresh, pause or garbage flood ends with 4429, and an ordinary page's
    handful of messages does not."""
    from asgiref.sync import sync_to_async
    from channels.testing import WebsocketCommunicator

    from homedash.asgi import application
    from tests.security.secfixtures import build_secure_house

    house = await sync_to_async(build_secure_house)()
    path = {"home": "/ws/home/", "device": f"/ws/devices/{house.plug.pk}/",
            "logs": f"/ws/logs/?devices={house.plug.pk}"}[which]
    communicator = WebsocketCommunicator(application, path, headers=[
        (b"origin", b"http://127.0.0.1"), await sync_to_async(_session_cookie)(house.anna)])
    connected, _ = await communicator.connect(timeout=3)
    assert connected
    message = json.dumps({"type": "pause" if which == "logs" else "refresh"})
    for _ in range(5):   # a page now and then: answered, not closed
        await communicator.send_to(text_data=message)
    outputs = []
    while not await communicator.receive_nothing(timeout=0.5):
        outputs.append(await communicator.receive_output(timeout=1))
    assert all(o["type"] != "websocket.close" for o in outputs)
    assert await _flood_until_closed(communicator, message) == 4429
    await communicator.disconnect()


@pytest.fixture
def fresh_cool_off(monkeypatch):
    """Flood tests in this process must not leave their users refused for the next ones."""
    from devices import consumers
    from homedash.limits import CoolOff

    monkeypatch.setattr(consumers, "flooded_users", CoolOff(consumers.FLOOD_COOL_OFF))


async def _flood_until_closed(communicator, message: str) -> int:
    for _ in range(200):
        await communicator.send_to(text_data=message)
    while True:
        output = await communicator.receive_output(timeout=5)
        if output["type"] == "websocket.close":
            return output["code"]


@pytest.mark.django_db(transaction=True)
async def test_a_member_back_after_a_flood_is_closed_before_any_work(fresh_cool_off):
    """Closing a flooding socket is cheap; a new one costs a plan and a snapshot. So the
    member whose socket flooded gets no new page or log socket for a while; other members
    and an ordinary member's many screens are not affected."""
    from asgiref.sync import sync_to_async
    from channels.testing import WebsocketCommunicator

    from homedash.asgi import application
    from tests.security.secfixtures import build_secure_house

    house = await sync_to_async(build_secure_house)()
    cara = [(b"origin", b"http://127.0.0.1"), await sync_to_async(_session_cookie)(house.cara)]
    anna = [(b"origin", b"http://127.0.0.1"), await sync_to_async(_session_cookie)(house.anna)]

    async def first_answer(path, headers):
        communicator = WebsocketCommunicator(application, path, headers=headers)
        assert (await communicator.connect(timeout=3))[0]
        first = await communicator.receive_output(timeout=3)
        await communicator.disconnect()
        return first.get("code") if first["type"] == "websocket.close" else "snapshot"

    # Forty screens of one household member opening at once: all served.
    assert {await first_answer("/ws/home/", cara) for _ in range(40)} == {"snapshot"}
    communicator = WebsocketCommunicator(application, "/ws/home/", headers=cara)
    assert (await communicator.connect(timeout=3))[0]
    await communicator.receive_from(timeout=3)
    assert await _flood_until_closed(communicator, json.dumps({"type": "refresh"})) == 4429
    await communicator.disconnect()
    assert await first_answer("/ws/home/", cara) == 4429
    assert await first_answer(f"/ws/devices/{house.plug.pk}/", cara) == 4429
    # Her log socket too (it would otherwise answer "may not read" first).
    assert await first_answer(f"/ws/logs/?devices={house.plug.pk}", cara) == 4429
    assert await first_answer("/ws/home/", anna) == "snapshot"
