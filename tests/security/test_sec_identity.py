"""Issue 14, Critical: a forged discovery packet must never move a device with credentials
to the attacker, nor make homedash send the device's secrets (myStrom ``Token``, Gen1
Basic auth, a Gen2 digest response) to an address staff did not approve.

The attacker is a real HTTP server on another loopback address (all of 127/8 is loopback
on Linux) that claims the victim's MAC and records every request's headers and body; the
forged packets are real UDP datagrams from that address to the real listener, and the mDNS
records are the listener's own parsed form of ``_http._tcp`` / ``_shelly._tcp`` instances.
The household's devices are the simulator's, followed by the real runtime."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from datetime import timedelta

import httpx
import pytest
from aiohttp import web
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from devices.credentials import Credentials, LockedCredentials
from devices.discovery import inbox
from devices.discovery.mdns import ShellyBrowser, sighting_from_records
from devices.discovery.mystrom_udp import MyStromListener
from devices.discovery.service import Discovery
from devices.drivers.types import DeviceInfo
from devices.models import AuditEntry, Device, DeviceEvent
from devices import runtime as runtime_module
from devices.runtime.setup import build_runtime
from devices.simulator.mystrom import MyStromSwitch
from devices.simulator.shelly_gen1 import ShellyGen1
from devices.simulator.shelly_rpc import ShellyRpc
from tests.discovery.disc_helpers import free_port, loopback_block, port_free_on
from tests.waiting import until

TOKEN = "geheim-token-7"
GEN1_PASSWORD = "Gen1-Secret-55"
GEN2_PASSWORD = "Gen2-Secret-66"
SECRETS = (TOKEN, GEN1_PASSWORD, GEN2_PASSWORD)


@pytest.fixture(autouse=True)
def lan(settings):
    settings.ALLOW_LOOPBACK_DEVICES = True
    settings.AUTO_ADOPT = False


# ----------------------------------------------------------------------------- the attacker


class Impostor:
    """An HTTP server at an address of the attacker's choosing. ``answers`` maps a path to
    (status, JSON); anything else is refused with ``challenge`` (a Basic or Digest
    WWW-Authenticate), the bait a device's password or a digest response would follow.
    Every request is recorded: method, path, headers, and the first KiB of the body."""

    def __init__(self, host: str, port: int, answers: dict[str, tuple[int, object]], challenge: str = "") -> None:
        self.host, self.port = host, port
        self.answers = answers
        self.challenge = challenge
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = (await request.content.read(1024)) if request.can_read_body else b""
        self.requests.append((request.method, request.path, {k.lower(): v for k, v in request.headers.items()}, body))
        status, data = self.answers.get(request.path, (401, {"code": 401, "message": "unauthorized"}))
        headers = {"WWW-Authenticate": self.challenge} if status == 401 and self.challenge else None
        return web.json_response(data, status=status, headers=headers)

    async def __aenter__(self) -> Impostor:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def secrets_received(self) -> list[str]:
        """Everything that would have given a secret away: a Token or Authorization header
        (Basic, or a Digest response), a JSON-RPC ``auth`` object, a secret in any form."""
        leaks = []
        for method, path, headers, body in self.requests:
            for name in ("token", "authorization"):
                if name in headers:
                    leaks.append(f"{method} {path}: {name}: {headers[name]}")
            if b'"auth"' in body:
                leaks.append(f"{method} {path}: auth object in the body")
            text = " ".join([path, *headers.values(), body.decode("latin-1")])
            leaks += [f"{method} {path}: a stored secret" for secret in SECRETS if secret in text]
        return leaks


def announce_from(source: str, target: tuple[str, int], mac: str, type_code: int = 106, times: int = 3) -> None:
    """Real myStrom announcements (8-byte records) sent from ``source``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        for _ in range(times):
            sock.sendto(bytes.fromhex(mac) + bytes((type_code, 4)), target)


def two_addresses(count: int = 3) -> tuple[list[str], int]:
    """``count`` loopback addresses of one fresh 127.x.y block and a port free on all."""
    block = loopback_block()
    hosts = [f"{block}.{10 * (i + 1)}" for i in range(count)]
    for _ in range(20):
        port = free_port(hosts[0])
        if all(port_free_on(h, port) for h in hosts[1:]):
            return hosts, port
    pytest.skip("no port free on every test address")


def udp_discovery(device_port: int, **kw) -> Discovery:
    return Discovery(udp=True, mdns=False, bind="127.0.0.1", port=0, device_port=device_port,
                     allow_loopback=True, probe_window=0.2, **kw)


async def start_runtime():
    """The real device runtime, following what is in the database when it starts (and,
    through post_save, every change after). The caller stops it."""
    rt = build_runtime(manager_options={"start_spread": 0.1, "flush_period": 0.2})
    await rt.start()
    runtime_module.install(rt)  # what serve does: saves in views reach this runtime
    return rt


async def stop_runtime(rt) -> None:
    runtime_module.install(None)
    await rt.stop()


async def db_until(predicate, timeout: float = 5.0) -> bool:
    """``until`` for a predicate that reads the database (run in a thread)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await sync_to_async(predicate)():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def followed_at(rt, pk: int) -> str | None:
    """Where the runtime talks to the device (None while a reload swaps its session)."""
    session = rt.manager.sessions.get(pk)
    return session.config.host if session is not None else None


def online(rt, pk: int) -> bool:
    live = rt.manager.store.get(pk)
    return bool(live and live.online)


async def staff_client() -> Client:
    anna = await sync_to_async(get_user_model().objects.create_user)("anna", password="pw-anna-123456", is_staff=True)
    client = Client(enforce_csrf_checks=True)
    await sync_to_async(client.force_login)(anna)
    return client


async def inbox_page(client: Client) -> str:
    response = await sync_to_async(client.get)("/inbox/")
    assert response.status_code == 200
    return response.content.decode()


async def answer_move(client: Client, device: Device, decision: str, host: str | None = None, port: int | None = None):
    """What staff's browser sends from the inbox: the form's CSRF token, the address shown."""
    page = await inbox_page(client)
    section = page[page.index(f'id="move-{device.pk}"'):]
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', section).group(1)
    data = {"csrfmiddlewaretoken": csrf, "decision": decision,
            "host": host or device.pending_host, "port": port or device.pending_port}
    return await sync_to_async(client.post)(f"/inbox/{device.pk}/move", data)


def audit(action: str):
    return list(AuditEntry.objects.filter(action=action).order_by("ts"))


# ----------------------------------------------------------------------------- myStrom, UDP


@pytest.mark.django_db(transaction=True)
async def test_forged_announcement_of_a_token_mystrom_gets_no_token_and_only_a_pending_move():
    (home, evil, _), port = two_addresses()
    discovery = udp_discovery(port)
    await discovery.start()
    switch = MyStromSwitch("ch_v2", host=home, port=port, token=TOKEN, name="Kitchen switch",
                           announce_to=("127.0.0.1", discovery.udp_port), announce_interval=0.2)
    await switch.start()
    device = await Device.objects.acreate(
        mac=switch.mac, vendor="mystrom", model_code="WS2", host=home, port=port, name="Kitchen switch",
        adopted=True, poll_interval=0.3, auth_required=True, credentials=Credentials(token=TOKEN))
    runtime = await start_runtime()
    # The worst case: the impostor answers /api/v1/info with the victim's MAC to anyone.
    victim_info = {"mac": switch.mac, "type": 106, "version": "4.0.14", "ip": evil, "name": "Kitchen switch"}
    try:
        async with Impostor(evil, port, {"/api/v1/info": (200, victim_info), "/info.json": (200, victim_info)}) as impostor:
            assert await until(lambda: online(runtime, device.pk))
            # The attacker repeats its packet, as a real one would (the first may come while
            # the real device's own announcement is being probed).
            assert await db_until(lambda: announce_from(evil, ("127.0.0.1", discovery.udp_port), switch.mac, times=1)
                                  or Device.objects.filter(pk=device.pk, pending_host=evil).exists(), timeout=5)
            # Long enough for several runtime polls (0.3 s) and announcements of both.
            announce_from(evil, ("127.0.0.1", discovery.udp_port), switch.mac)
            await asyncio.sleep(1.2)

            assert impostor.requests, "the claim was probed (without credentials)"
            assert {path for _, path, _, _ in impostor.requests} <= {"/api/v1/info", "/info.json"}
            assert impostor.secrets_received() == []
            await device.arefresh_from_db()
            assert (device.host, device.port) == (home, port)
            assert (device.pending_host, device.pending_port, device.pending_found_by) == (evil, port, "udp")
            assert device.pending_answered  # it did answer with the MAC; still no proof
            assert followed_at(runtime, device.pk) == home
            assert online(runtime, device.pk)
    finally:
        await stop_runtime(runtime)
        await switch.stop()
        await discovery.stop()

    events = await sync_to_async(list)(DeviceEvent.objects.filter(device=device).values_list("kind", "detail"))
    assert [kind for kind, _ in events].count("move_pending") == 1
    assert not any(kind == "address_changed" for kind, _ in events)
    entries = await sync_to_async(audit)("device.move_pending")
    assert len(entries) == 1 and entries[0].device_id == device.pk and evil in entries[0].detail

    # Staff see it in the inbox, and may dismiss it; the device stays where it is.
    client = await staff_client()
    page = await inbox_page(client)
    assert f"seems to have moved to <span class=\"mono\">{evil}:{port}</span>" in page
    assert "Kitchen switch" in page
    response = await answer_move(client, device, "dismiss")
    assert response.status_code == 302
    await device.arefresh_from_db()
    assert (device.host, device.pending_host) == (home, "")
    dismissed = await sync_to_async(audit)("device.move_dismiss")
    assert len(dismissed) == 1 and dismissed[0].username == "anna"
    assert "seems to have moved" not in await inbox_page(client)


class HomeMyStrom(Impostor):
    """A token-protected myStrom at its approved address, as the firmware answers: 404 to
    any request without the right Token header (mystrom.md), and a request log."""

    def __init__(self, host: str, port: int, mac: str) -> None:
        super().__init__(host, port, {})
        self.info = {"mac": mac, "type": 106, "version": "4.0.14", "ip": host, "name": "Hall switch"}

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path, {k.lower(): v for k, v in request.headers.items()}, b""))
        if request.headers.get("Token") != TOKEN or request.path != "/api/v1/info":
            return web.Response(status=404)
        return web.json_response(self.info)


@pytest.mark.django_db(transaction=True)
async def test_known_address_probe_of_a_token_mystrom_carries_the_token_from_the_first_request():
    """Start, refresh and return to the known address: every probe there has the token,
    none is the tokenless pair a protected device refuses."""
    (home, elsewhere, _), port = two_addresses()
    mac = "30AEA4C0FFEE"
    device = await Device.objects.acreate(mac=mac, vendor="mystrom", model_code="WS2", host=home, port=port,
                                          adopted=True, auth_required=True, credentials=Credentials(token=TOKEN))
    discovery = udp_discovery(port, refresh_after=0.3)
    await discovery.start()
    target = ("127.0.0.1", discovery.udp_port)
    try:
        async with HomeMyStrom(home, port, mac) as real, Impostor(elsewhere, port, {}) as other:
            announce_from(home, target, mac, times=1)  # the first announcement after a start
            assert await until(lambda: len(real.requests) >= 1)
            for _ in range(3):  # refreshes of a device that stayed put
                await asyncio.sleep(0.35)
                announce_from(home, target, mac, times=1)
            assert await until(lambda: len(real.requests) >= 2)
            # Heard from elsewhere (repeated: one packet may fall within the probe window)...
            assert await until(lambda: announce_from(elsewhere, target, mac, times=1) or len(other.requests) >= 1)
            # ...and back at home: probed there again at once, with the token.
            before = len(real.requests)
            assert await until(lambda: announce_from(home, target, mac, times=1) or len(real.requests) > before)
            await asyncio.sleep(0.2)
            assert [(m, p, h.get("token")) for m, p, h, _ in real.requests] == [("GET", "/api/v1/info", TOKEN)] * len(real.requests)
            assert other.secrets_received() == []
    finally:
        await discovery.stop()
    await device.arefresh_from_db()
    assert (device.host, device.firmware, device.last_seen is not None) == (home, "4.0.14", True)
    assert device.pending_host == elsewhere and not device.pending_answered


async def test_a_token_changed_on_the_device_is_reported_at_home_and_never_tried_elsewhere():
    """The listener alone: a known token myStrom whose token no longer works at its address
    is reported there as needing credentials; a silent home is reported not at all; an
    announcement from elsewhere never gets the token."""
    (home, elsewhere, silent), port = two_addresses()
    mac = "30AEA4C0FFEF"
    found = []

    async def known(m):
        return inbox.KnownDevice(host=home if m == mac else silent, port=port, protected=True, token="old-token")

    async def on_found(candidate):
        found.append(candidate)

    async with httpx.AsyncClient() as client, HomeMyStrom(home, port, mac) as real, \
            Impostor(elsewhere, port, {}) as other:
        listener = MyStromListener(client, on_found, bind="127.0.0.1", port=0, device_port=port,
                                   allow_loopback=True, probe_window=0.1, known=known)
        await listener.start()
        try:
            announce_from(home, ("127.0.0.1", listener.port), mac, times=1)
            announce_from(silent, ("127.0.0.1", listener.port), "30AEA4C0FFE0", times=1)
            assert await until(lambda: len(found) >= 1 and not listener._probing)
            assert await until(lambda: announce_from(elsewhere, ("127.0.0.1", listener.port), mac, times=1)
                               or len(found) >= 2)
        finally:
            await listener.stop()
    at_home = found[0]
    assert (at_home.host, at_home.confirmed, at_home.info.auth_enabled) == (home, False, True)
    assert real.requests[0][2].get("token") == "old-token"  # the first request had the token
    assert found[1].host == elsewhere and other.secrets_received() == []
    assert all(c.host != silent for c in found)


@pytest.mark.django_db(transaction=True)
async def test_a_real_move_of_a_token_mystrom_waits_for_staff_then_is_followed():
    (home, new, _), port = two_addresses()
    discovery = udp_discovery(port)
    await discovery.start()
    switch = MyStromSwitch("ch_v2", host=home, port=port, token=TOKEN, name="Hall switch",
                           announce_to=("127.0.0.1", discovery.udp_port), announce_interval=0.2)
    await switch.start()
    device = await Device.objects.acreate(
        mac=switch.mac, vendor="mystrom", model_code="WS2", host=home, port=port, name="Hall switch",
        adopted=True, poll_interval=0.3, auth_required=True, credentials=Credentials(token=TOKEN))
    client = await staff_client()
    runtime = await start_runtime()
    try:
        assert await until(lambda: online(runtime, device.pk))
        await switch.move_to(new, port)  # the DHCP lease changed
        assert await db_until(lambda: Device.objects.filter(pk=device.pk, pending_host=new).exists(), timeout=5)
        await device.arefresh_from_db()
        # The switch refuses anything without its token with a 404: that the probe at the
        # new address got no answer with the MAC shows the token was not sent there.
        assert device.host == home and not device.pending_answered

        # Without the form's CSRF token nothing happens.
        bare = await sync_to_async(client.post)(f"/inbox/{device.pk}/move",
                                                {"decision": "confirm", "host": new, "port": port})
        assert bare.status_code == 403
        response = await answer_move(client, device, "confirm")
        assert response.status_code == 302
        await device.arefresh_from_db()
        assert (device.host, device.port, device.pending_host) == (new, port, "")
        # save() told the runtime, which follows the device there with its token.
        assert await until(lambda: followed_at(runtime, device.pk) == new)
        switch.reset_counters()
        assert await until(lambda: any("/report" in what or "/relay" in what for _, what, _ in switch.request_log))
    finally:
        await stop_runtime(runtime)
        await switch.stop()
        await discovery.stop()
    moved = await DeviceEvent.objects.aget(device=device, kind="address_changed")
    assert moved.detail == f"{home}:{port} → {new}:{port} (confirmed by staff)"
    confirmed = await sync_to_async(audit)("device.move_confirm")
    assert len(confirmed) == 1 and confirmed[0].username == "anna" and confirmed[0].device_id == device.pk


@pytest.mark.django_db(transaction=True)
async def test_a_device_without_credentials_still_moves_automatically_and_it_is_audited():
    (home, new, _), port = two_addresses()
    discovery = udp_discovery(port)
    await discovery.start()
    switch = MyStromSwitch("eu", host=home, port=port, announce_to=("127.0.0.1", discovery.udp_port),
                           announce_interval=0.1)
    await switch.start()
    try:
        device = await until_device(switch.mac)
        await sync_to_async(Device.objects.filter(pk=device.pk).update)(adopted=True)
        await switch.move_to(new, port)
        assert await db_until(lambda: Device.objects.filter(pk=device.pk, host=new).exists(), timeout=5)
    finally:
        await switch.stop()
        await discovery.stop()
    device = await Device.objects.aget(pk=device.pk)
    assert device.pending_host == ""
    entries = await sync_to_async(audit)("device.moved")
    assert len(entries) == 1 and f"{home}:{port} → {new}:{port}" in entries[0].detail
    assert await DeviceEvent.objects.filter(device=device, kind="address_changed").acount() == 1


async def until_device(mac: str) -> Device:
    assert await db_until(lambda: Device.objects.filter(mac=mac).exists(), timeout=5)
    return await Device.objects.aget(mac=mac)


# ----------------------------------------------------------------------------- Shelly, mDNS


async def shelly_answer(host: str, port: int) -> dict:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"http://{host}:{port}/shelly")).json()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("generation", [1, 2])
async def test_forged_mdns_record_of_a_protected_shelly_gets_no_basic_and_no_digest(generation):
    (home, evil, _), port = two_addresses()
    if generation == 1:
        real = ShellyGen1("SHSW-PM", host=home, port=port, password=GEN1_PASSWORD)
        creds = Credentials(username="admin", password=GEN1_PASSWORD)
        challenge = 'Basic realm="Shelly"'
    else:
        real = ShellyRpc("SNSW-001P16EU", host=home, port=port, password=GEN2_PASSWORD)
        creds = Credentials(username="admin", password=GEN2_PASSWORD)
        challenge = None
    await real.start()
    try:
        answer = await shelly_answer(home, port)
        if challenge is None:
            realm = answer["id"]
            challenge = (f'Digest qop="auth", realm="{realm}", nonce="1733300000", algorithm=SHA-256')
        device = await Device.objects.acreate(
            mac=real.mac, vendor="shelly", generation=generation, model_code=answer.get("model") or answer.get("type"),
            host=home, port=port, name="Garden pump", adopted=True, poll_interval=0.3, auth_required=True,
            credentials=creds)
        runtime = await start_runtime()
        assert await until(lambda: online(runtime, device.pk))

        discovery = Discovery(udp=False, mdns=False, allow_loopback=True)
        # The impostor copies the victim's /shelly (its MAC, "auth": true) and asks for
        # credentials on everything else, at every path a driver would use.
        async with Impostor(evil, port, {"/shelly": (200, answer)}, challenge=challenge) as impostor:
            browser = ShellyBrowser(discovery.client, discovery.found, allow_loopback=True)
            name = f"shelly1pm-{real.mac.lower()}"
            for service in ("_http._tcp.local.", "_shelly._tcp.local."):
                sighting = sighting_from_records(service, f"{name}.{service}", txt=["gen=2"] if generation > 1 else [],
                                                 addresses=[evil], port=port, server=f"{name}.local.")
                await browser.handle_sighting(sighting)
            await asyncio.sleep(1.2)  # several runtime polls
            assert impostor.secrets_received() == []
            # Only the public identity probe: no runtime poll, no websocket, no RPC call.
            assert [(m, p) for m, p, _, _ in impostor.requests] == [("GET", "/shelly")]
        await discovery.stop()
        await device.arefresh_from_db()
        assert (device.host, device.pending_host, device.pending_answered) == (home, evil, True)
        assert followed_at(runtime, device.pk) == home
        assert online(runtime, device.pk)
        await stop_runtime(runtime)
    finally:
        await real.stop()
    assert await DeviceEvent.objects.filter(device=device, kind="move_pending").acount() == 1
    assert not await DeviceEvent.objects.filter(device=device, kind="address_changed").aexists()


# ----------------------------------------------------------------------------- the rules


def mystrom_info(mac: str = "30AEA4000001") -> DeviceInfo:
    return DeviceInfo(vendor="mystrom", mac=mac, generation=0, model="WS2", model_name="WiFi Switch CH v2",
                      firmware="4.0.14", type_code=106, raw={"mac": mac, "type": 106})


def protected(**kw) -> Device:
    values = dict(mac="30AEA4000001", vendor="mystrom", host="192.168.1.30", adopted=True, name="Kitchen switch",
                  credentials=Credentials(token=TOKEN))
    values.update(kw)
    return Device.objects.create(**values)


@pytest.mark.django_db
def test_repeated_claims_write_once_and_a_new_claim_replaces_at_most_once_a_minute(settings):
    settings.ALLOW_LOOPBACK_DEVICES = False
    device = protected()
    for _ in range(5):
        outcome = inbox.record(mystrom_info(), "192.168.1.50", 80, "udp", confirmed=False)
    assert outcome.kind == inbox.PENDING and outcome.pending_address == "192.168.1.50"
    inbox.record(mystrom_info(), "192.168.1.50", 80, "scan")  # answered there this time
    device.refresh_from_db()
    assert (device.host, device.pending_host, device.pending_answered) == ("192.168.1.30", "192.168.1.50", True)
    assert device.firmware == "" and device.last_seen is None  # nothing from the claim is believed

    inbox.record(mystrom_info(), "192.168.1.51", 80, "udp")  # within the minute: kept
    device.refresh_from_db()
    assert device.pending_host == "192.168.1.50"
    Device.objects.filter(pk=device.pk).update(pending_since=timezone.now() - timedelta(seconds=61))
    inbox.record(mystrom_info(), "192.168.1.51", 80, "udp", confirmed=False)
    device.refresh_from_db()
    assert (device.pending_host, device.pending_answered) == ("192.168.1.51", False)
    assert DeviceEvent.objects.filter(device=device, kind="move_pending").count() == 2
    assert AuditEntry.objects.filter(action="device.move_pending").count() == 2
    assert not DeviceEvent.objects.filter(kind="address_changed").exists()


@pytest.mark.django_db
def test_unreadable_credentials_still_protect_and_manual_add_is_a_pending_move_too(rf):
    locked = protected(credentials=LockedCredentials(ciphertext="gAAAA-not-for-this-key"))
    request = rf.post("/inbox/add")
    request.user = get_user_model().objects.create_user("anna", is_staff=True)
    outcome = inbox.record(mystrom_info(), "192.168.1.60", 80, "manual", request=request)
    locked.refresh_from_db()
    assert outcome.kind == inbox.PENDING and (locked.host, locked.pending_host) == ("192.168.1.30", "192.168.1.60")
    assert AuditEntry.objects.get(action="device.move_pending").username == "anna"


@pytest.mark.django_db
def test_confirm_applies_only_the_address_that_was_shown():
    device = protected(pending_host="192.168.1.50", pending_port=80, pending_found_by="udp",
                       pending_since=timezone.now())
    with pytest.raises(inbox.MoveChanged, match="192.168.1.50"):
        inbox.confirm_move(device.pk, "192.168.1.66", 80, request=None)
    device.refresh_from_db()
    assert (device.host, device.pending_host) == ("192.168.1.30", "192.168.1.50")
    inbox.dismiss_move(device.pk, "192.168.1.50", 80, request=None)
    with pytest.raises(inbox.MoveChanged, match="no pending move"):
        inbox.confirm_move(device.pk, "192.168.1.50", 80, request=None)
    device.refresh_from_db()
    assert (device.host, device.pending_host) == ("192.168.1.30", "")


@pytest.mark.django_db
def test_only_staff_answer_a_pending_move_and_the_page_escapes_device_text():
    device = protected(name="<script>alert(1)</script>", pending_host="192.168.1.50", pending_port=80,
                       pending_found_by="udp", pending_since=timezone.now())
    User = get_user_model()
    ben = User.objects.create_user("ben", password="pw-ben-1234567")
    anna = User.objects.create_user("anna", password="pw-anna-123456", is_staff=True)
    data = {"decision": "confirm", "host": "192.168.1.50", "port": 80}
    assert Client().post(f"/inbox/{device.pk}/move", data).status_code == 302  # to the login page
    member = Client()
    member.force_login(ben)
    assert member.post(f"/inbox/{device.pk}/move", data).status_code == 403
    assert member.get("/inbox/").status_code == 403
    staff = Client()
    staff.force_login(anna)
    assert staff.get(f"/inbox/{device.pk}/move").status_code == 405
    page = staff.get("/inbox/").content.decode()
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;</strong> seems to have moved" in page
    device_page = staff.get(f"/devices/{device.pk}/").content.decode()
    assert 'id="pending-move"' in device_page and f'href="/inbox/#move-{device.pk}"' in device_page
    device.refresh_from_db()
    assert (device.host, device.pending_host) == ("192.168.1.30", "192.168.1.50")
    assert staff.post(f"/inbox/{device.pk}/move", {**data, "decision": "sideways"}).status_code == 302
    device.refresh_from_db()
    assert device.pending_host == "192.168.1.50"  # a bad form changes nothing
    assert staff.post(f"/inbox/{device.pk}/move", data).status_code == 302
    device.refresh_from_db()
    assert (device.host, device.pending_host) == ("192.168.1.50", "")


# ----------------------------------------------------------------------------- typed secrets


def hidden_fields(page: str, action: str) -> dict[str, str]:
    """The hidden inputs of the form posting to ``action`` (CSRF token, shown address)."""
    start = page.index(f'action="{action}"')
    form = page[start:page.index("</form>", start)]
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form))


@pytest.mark.django_db(transaction=True)
async def test_a_password_typed_on_a_page_goes_only_to_the_address_that_page_showed():
    """A device without credentials follows a claimed move by itself; the password staff
    then type for it must not follow that claim to the impostor."""
    (home, evil, _), port = two_addresses()
    real = ShellyRpc("SNSW-001P16EU", host=home, port=port, password=GEN2_PASSWORD)
    await real.start()
    try:
        answer = await shelly_answer(home, port)
        device = await Device.objects.acreate(mac=real.mac, vendor="shelly", generation=2, model_code="SNSW-001P16EU",
                                              host=home, port=port, auth_required=True, found_by="mdns")
        client = await staff_client()
        action = f"/inbox/{device.pk}/adopt"
        fields = hidden_fields(await inbox_page(client), action)
        assert fields["shown_address"] == f"{home}:{port}"

        discovery = Discovery(udp=False, mdns=False, allow_loopback=True)
        browser = ShellyBrowser(discovery.client, discovery.found, allow_loopback=True)

        def sighting(address: str):
            name = f"shellyplus1pm-{real.mac.lower()}"
            return sighting_from_records("_shelly._tcp.local.", f"{name}._shelly._tcp.local.", txt=["gen=2"],
                                         addresses=[address], port=port, server=f"{name}.local.")

        challenge = f'Digest qop="auth", realm="{answer["id"]}", nonce="1733300000", algorithm=SHA-256'
        async with Impostor(evil, port, {"/shelly": (200, answer)}, challenge=challenge) as impostor:
            await browser.handle_sighting(sighting(evil))  # meanwhile, on the LAN
            await device.arefresh_from_db()
            assert device.host == evil  # no credentials yet: followed (and audited)
            response = await sync_to_async(client.post)(action, {**fields, "d%d-password" % device.pk: GEN2_PASSWORD,
                                                                 "d%d-name" % device.pk: "Pump"})
            assert response.status_code == 302
            assert impostor.secrets_received() == []
            assert [(m, p) for m, p, _, _ in impostor.requests] == [("GET", "/shelly")]
        await device.arefresh_from_db()
        assert not device.adopted and not device.has_credentials

        # The real device is heard at home again; on a fresh page staff adopt it there.
        browser.limiter.window = browser.reported.window = 0  # a new discovery window
        await browser.handle_sighting(sighting(home))
        await discovery.stop()
        await device.arefresh_from_db()
        assert device.host == home
        fields = hidden_fields(await inbox_page(client), action)
        real.reset_counters()
        response = await sync_to_async(client.post)(action, {**fields, "d%d-password" % device.pk: GEN2_PASSWORD,
                                                             "d%d-name" % device.pk: "Pump"})
        assert response.status_code == 302
        await device.arefresh_from_db()
        assert device.adopted and device.credentials.password == GEN2_PASSWORD
        assert real.requests_total >= 1  # the password was checked with the real device
    finally:
        await real.stop()


# ----------------------------------------------------------------------------- real mDNS


@pytest.mark.netns
def test_forged_mdns_records_over_real_multicast_get_no_digest_and_no_move():
    """The whole path with real zeroconf packets, in a private network namespace: forged
    ``_shelly._tcp`` / ``_http._tcp`` records of a protected Gen2 device -> homedash's
    browser -> the unauthenticated /shelly probe -> a pending move; the runtime keeps
    polling the real device, the impostor gets no credential."""
    from pathlib import Path

    from tests.discovery.disc_netns import run_json_in_netns

    result = run_json_in_netns(Path(__file__).with_name("sec_mdns_forgery_child.py"), timeout=90)
    assert result["instances"] >= 2 and result["mdns"]["probes"] >= 1, result
    impostor = result["impostor"]
    assert impostor, "the forged record was probed"
    assert [(r["method"], r["path"]) for r in impostor] == [("GET", "/shelly")] * len(impostor), impostor
    for r in impostor:
        assert "authorization" not in r["headers"] and "token" not in r["headers"], r
        assert '"auth"' not in r["body"] and GEN2_PASSWORD not in json.dumps(r), r
    assert result["device"] == {"host": "127.0.0.10", "pending_host": "127.0.0.66", "pending_found_by": "mdns",
                                "pending_answered": True}, result
    assert result["runtime_host"] == "127.0.0.10" and result["runtime_online"], result
    assert result["real_requests"] > 0
