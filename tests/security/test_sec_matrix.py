"""The permission matrix: every URL of homedash.urls and every websocket route, for the
anonymous visitor, an outsider (logged in, no rooms), a kitchen viewer, a kitchen
controller and staff. A URL added without a row here fails `test_every_url_is_classified`,
so the matrix stays complete.

Rows that act on a device (a command, a debug log) run against a simulated plug followed
by a real runtime and log hub (`test_device_rows_act_for_whom_they_allow`): for a role let
in, the action must have happened at the device; for the others, nothing may have changed.
A server error (5xx) is never an "allowed"."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
from types import SimpleNamespace

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib import admin
from django.test import AsyncClient, Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from devices import debuglogs
from devices import runtime as runtime_module
from devices.models import AuditEntry, Device
from devices.runtime.publisher import room_group
from devices.runtime.setup import build_runtime
from devices.simulator.shelly_gen1 import ShellyGen1
from devices.simulator.shelly_rpc import ShellyRpc
from homedash.asgi import application
from tests.security.secfixtures import ROLES, build_secure_house, client_for, user_for
from tests.waiting import until

REAL_ASK = debuglogs.ask  # the security conftest answers for a missing hub; these rows have one

A, OK, NO, LOGIN, GONE = "anonymous", "allow", "deny", "login", "gone"


def row(anonymous, outsider, viewer, controller, staff):
    return dict(zip(ROLES, (anonymous, outsider, viewer, controller, staff)))


EVERYONE = row(OK, OK, OK, OK, OK)
MEMBERS = row(LOGIN, OK, OK, OK, OK)
KITCHEN_VIEW = row(LOGIN, NO, OK, OK, OK)
KITCHEN_CONTROL = row(LOGIN, NO, NO, OK, OK)
STAFF = row(LOGIN, NO, NO, NO, OK)
NOBODY = row(GONE, GONE, GONE, GONE, GONE)

# name -> (method, kwargs(house), data(house), expectations). Device and channel URLs use
# the kitchen's plug (Ben controls it, Cara views it, Dora sees nothing of it).
CASES = {
    "home": ("get", None, None, MEMBERS),
    "device": ("get", lambda h: {"pk": h.plug.pk}, None, KITCHEN_VIEW),
    "device-health": ("get", lambda h: {"pk": h.plug.pk}, None, KITCHEN_VIEW),
    "device-raw": ("get", lambda h: {"pk": h.plug.pk}, None, KITCHEN_VIEW),
    "device-settings": ("post", lambda h: {"pk": h.plug.pk}, lambda h: {"name": "Renamed", "room": h.kitchen.pk}, STAFF),
    "device-credentials": ("post", lambda h: {"pk": h.plug.pk}, lambda h: {"password": "matrix-pw-1"}, STAFF),
    "channel-command": ("post", lambda h: {"pk": h.plug_ch.pk}, lambda h: {"action": "toggle"}, KITCHEN_CONTROL),
    "channel-settings": ("post", lambda h: {"pk": h.plug_ch.pk},
                         lambda h: {f"ch{h.plug_ch.pk}-name": "Kettle", f"ch{h.plug_ch.pk}-visible": "on"}, STAFF),
    "inbox": ("get", None, None, STAFF),
    "inbox-scan": ("post", None, lambda h: {"subnet": ""}, STAFF),  # an empty form: no packet leaves
    "inbox-add": ("post", None, lambda h: {"host": "", "port": "80"}, STAFF),
    "inbox-adopt": ("post", lambda h: {"pk": h.waiting.pk}, lambda h: {"name": "New", "room": h.kitchen.pk}, STAFF),
    "inbox-ignore": ("post", lambda h: {"pk": h.waiting.pk}, lambda h: {}, STAFF),
    # A pending move's answer (test_sec_identity.py shows it applied); here none is pending.
    "inbox-move": ("post", lambda h: {"pk": h.plug.pk}, lambda h: {"decision": "dismiss", "host": "192.168.1.99",
                                                                "port": "80"}, STAFF),
    "events": ("get", None, None, MEMBERS),
    "device-log-panel": ("get", lambda h: {"pk": h.plug.pk}, None, STAFF),
    "device-log-controls": ("get", lambda h: {"pk": h.plug.pk}, None, STAFF),
    "device-log-start": ("post", lambda h: {"pk": h.plug.pk}, lambda h: {"minutes": "5"}, STAFF),
    "device-log-stop": ("post", lambda h: {"pk": h.plug.pk}, lambda h: {}, STAFF),
    "device-log-pin": ("post", lambda h: {"pk": h.plug.pk}, lambda h: {"pinned": "1"}, STAFF),
    "device-log-file": ("get", lambda h: {"pk": h.shutter.pk}, None, STAFF),  # a Gen1 device
    "logs": ("get", None, None, STAFF),
    "logs-download": ("get", None, lambda h: {"device": h.plug.pk}, STAFF),
    "household": ("get", None, None, STAFF),
    "household-add-member": ("post", None, lambda h: {"username": "fritz", "password": "a-long-secret-9",
                                                      "password_again": "a-long-secret-9"}, STAFF),
    "household-set-level": ("post", None, lambda h: {"who": f"user:{h.dora.pk}", "room": h.garden.pk, "level": "view"}, STAFF),
    "household-set-logs": ("post", lambda h: {"pk": h.cara.pk}, lambda h: {"value": "1"}, STAFF),
    "household-set-active": ("post", lambda h: {"pk": h.eve.pk}, lambda h: {"value": "0"}, STAFF),
    "onboarding": ("get", None, None, NOBODY),  # exists only while there is no user at all
    "login": ("get", None, None, EVERYONE),
    "logout": ("post", None, lambda h: {}, row(LOGIN, LOGIN, LOGIN, LOGIN, LOGIN)),  # back to the login page
    "healthz": ("get", None, None, EVERYONE),
    "mystrom-hook": ("get", lambda h: {"secret": h.button.webhook_secret}, None, EVERYONE),  # the secret is the key
    "manifest": ("get", None, None, EVERYONE),
    "favicon": ("get", None, None, EVERYONE),
}
ADMIN_PREFIX = "admin/"
# Rows whose action reaches a device: test_device_rows_act_for_whom_they_allow.
DEVICE_ROWS = ("channel-command", "device-log-start", "device-log-stop", "device-log-pin", "logs-download",
               "device-log-file")


def walk(patterns, prefix=""):
    for p in patterns:
        if isinstance(p, URLResolver):
            yield from walk(p.url_patterns, prefix + str(p.pattern))
        elif isinstance(p, URLPattern):
            yield prefix + str(p.pattern), p.name


def test_every_url_is_classified():
    missing = []
    for route, name in walk(get_resolver().url_patterns):
        if route.startswith(ADMIN_PREFIX):
            continue  # the admin is covered model by model below
        key = name or ("favicon" if route == "favicon.ico" else route)
        if key not in CASES:
            missing.append(route)
    assert not missing, f"URLs without a row in the permission matrix: {missing}"


def outcome(response) -> str:
    status = response.status_code
    location = response.get("Location", "") if status in (301, 302, 303) else ""
    if location.startswith(("/login/", "/admin/login/")):
        return LOGIN
    if status in (403, 404):
        return NO
    assert status < 500, f"server error {status}: {response.content[:300]!r}"
    assert status != 405, "wrong method in the matrix"
    return OK


def _url(house, name, kwargs):
    if name == "favicon":
        return "/favicon.ico"
    return reverse(name, kwargs=kwargs(house) if kwargs else None)


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name", sorted(set(CASES) - set(DEVICE_ROWS)))
def test_http_matrix(name, role):
    house = build_secure_house()
    method, kwargs, data, expected = CASES[name]
    client = client_for(house, role)
    url = _url(house, name, kwargs)
    if method == "get":
        response = client.get(url, data(house) if data else None)
    else:
        response = client.post(url, data(house) if data else {})
    got = outcome(response)
    want = expected[role]
    if want == GONE:
        assert response.status_code == 404
        return
    assert got == want, f"{role} {method.upper()} {url}: {response.status_code} ({got}), expected {want}"
    if name in ("home", "device", "events") and role == "viewer":
        # What Cara may see of the house: never the garden.
        assert "Garden shutter" not in response.content.decode()


# ----------------------------------------------------------------------------- rows that act on a device
@contextlib.asynccontextmanager
async def devices_followed(house, tmp_path):
    """The kitchen plug as a simulated Shelly Plus 1PM on 127.0.0.1 (its MAC, no password,
    debug lines flowing) and the garden shutter as a Shelly 2.5 (Gen1), followed by a
    runtime of this process with its log hub, as `serve` runs them; the other devices stay
    pointed at closed ports."""
    sims = SimpleNamespace(plug=ShellyRpc("SNSW-001P16EU", mac=house.plug.mac, drift_period=None, minute_period=0,
                                          debug_rate=20.0),
                           shutter=ShellyGen1("SHSW-25", mac=house.shutter.mac, coap_port=0))
    await sims.plug.start()
    await sims.shutter.start()
    for device, sim in ((house.plug, sims.plug), (house.shutter, sims.shutter)):
        await Device.objects.filter(pk=device.pk).aupdate(host=sim.host, port=sim.port)
    rt = build_runtime(manager_options={"start_spread": 0.0})
    hub = debuglogs.install_hub(rt, grace=30.0, flush_period=0.05, state_path=tmp_path / "debuglogs.json")
    runtime_module.install(rt)
    await rt.start()
    try:
        await asyncio.wait_for(hub.ready.wait(), 5)
        live = rt.manager.store
        for device in (house.plug, house.shutter):   # followed: the sessions' first requests are done
            assert await until(lambda: (d := live.get(device.pk)) is not None and d.online and not d.stale, 10), \
                f"the simulated {device} did not come online"
        yield sims, hub
    finally:
        await rt.stop()
        runtime_module.install(None)
        await sims.plug.stop()
        await sims.shutter.stop()


def _debug_ws(sim) -> bool:
    return sim.config["sys"]["debug"]["websocket"]["enable"]


async def _streaming(hub, pk) -> bool:
    return await until(lambda: pk in hub.logs and hub.logs[pk].state == "streaming" and len(hub.logs[pk].ring) >= 2, 5)


async def _start_log(sims, hub, pk) -> None:
    assert (await hub.start(pk, by="matrix"))["ok"]
    assert _debug_ws(sims.plug) and await _streaming(hub, pk)


def _asked_for_settings(sim) -> int:
    return sum("/settings" in what for _, what, _ in sim.request_log)


# name -> (prepare(sims, hub, pk), observe(sims, hub, pk) -> what the action changes,
#          done(before, after, response, hub, pk) -> whether the action happened, or an awaitable of it).
# `pk` is the plug's; the Gen1 row is about the shutter.
DEVICE_EFFECTS = {
    # The relay itself, as the device has it.
    "channel-command": (None, lambda sims, hub, pk: sims.plug.switches[0].output,
                        lambda before, after, response, hub, pk: after is (not before)),
    # The device's debug stream switched on and lines arriving at the hub.
    "device-log-start": (None, lambda sims, hub, pk: _debug_ws(sims.plug),
                         lambda before, after, response, hub, pk: after and _streaming(hub, pk)),
    # ... switched off again (settings put back), nobody reading the device any more.
    "device-log-stop": (_start_log, lambda sims, hub, pk: _debug_ws(sims.plug) or bool(sims.plug._debug_peers),
                        lambda before, after, response, hub, pk: before and not after),
    "device-log-pin": (_start_log, lambda sims, hub, pk: hub.logs[pk].pinned,
                       lambda before, after, response, hub, pk: after and not before),
    # The buffered lines, as a file.
    "logs-download": (_start_log, lambda sims, hub, pk: None,
                      lambda before, after, response, hub, pk: response.status_code == 200 and
                      hub.logs[pk].ring[-1].line.text.encode()[:40] in response.content),
    # A Gen1 device's debug file: the device itself was asked (its settings say debug is off).
    "device-log-file": (None, lambda sims, hub, pk: _asked_for_settings(sims.shutter),
                        lambda before, after, response, hub, pk: after > before and
                        b"Debug logging is off on this device" in response.content),
}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name", DEVICE_ROWS)
async def test_device_rows_act_for_whom_they_allow(name, tmp_path, monkeypatch):
    monkeypatch.setattr(debuglogs, "ask", REAL_ASK)
    house = await sync_to_async(build_secure_house)()
    method, kwargs, data, expected = CASES[name]
    prepare, observe, done = DEVICE_EFFECTS[name]
    url = await sync_to_async(_url)(house, name, kwargs)
    async with devices_followed(house, tmp_path) as (sims, hub):
        pk = house.plug.pk
        if prepare is not None:
            await prepare(sims, hub, pk)
        # Those refused first, so the one let in last acts on an untouched device.
        for role in sorted(ROLES, key=lambda r: expected[r] == OK):
            client = AsyncClient()
            user = user_for(house, role)
            if user is not None:
                await client.aforce_login(user)
            before = observe(sims, hub, pk)
            if method == "get":
                response = await client.get(url, data(house) if data else None)
            else:
                response = await client.post(url, data(house) if data else {})
            got, after = outcome(response), observe(sims, hub, pk)
            assert got == expected[role], f"{role} {method.upper()} {url}: {response.status_code} ({got})"
            if got == OK:
                happened = done(before, after, response, hub, pk)
                if inspect.isawaitable(happened):
                    happened = await happened
                assert happened, f"{role}: {name} let in but nothing happened"
            else:
                assert after == before, f"{role}: {name} refused, yet the device changed"


@pytest.mark.django_db
def test_denied_command_changes_nothing_and_is_audited(shouse):
    client = client_for(shouse, "viewer")
    response = client.post(reverse("channel-command", kwargs={"pk": shouse.plug_ch.pk}), {"action": "toggle"})
    assert response.status_code == 403
    entry = AuditEntry.objects.get(action="channel.command")
    assert entry.result == "denied" and entry.username == "cara" and entry.source_address == "127.0.0.1"


@pytest.mark.django_db
def test_unknown_hook_secret_is_a_plain_404(shouse):
    for secret in ("nope", shouse.plug.webhook_secret):  # a stranger's; a Shelly's secret on the myStrom hook
        response = Client().get(reverse("mystrom-hook", kwargs={"secret": secret}))
        assert response.status_code == 404


# ----------------------------------------------------------------------------- admin
def admin_urls(house) -> list[str]:
    """Index, and for every registered model its changelist and one change page (and the
    add page where adding is possible at all)."""
    urls = [reverse("admin:index")]
    for model, model_admin in admin.site._registry.items():
        info = model._meta.app_label, model._meta.model_name
        urls.append(reverse("admin:%s_%s_changelist" % info))
        obj = model._default_manager.order_by("pk").first()
        if obj is not None:
            urls.append(reverse("admin:%s_%s_change" % info, args=[obj.pk]))
    return urls


ADMIN_EXPECTED = row(LOGIN, LOGIN, LOGIN, LOGIN, OK)


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
def test_admin_matrix(shouse, role):
    AuditEntry.record(user=shouse.anna, action="test.entry")
    client = client_for(shouse, role)
    if role == "staff":
        shouse.anna.is_superuser = True  # Django's user admin needs the auth permissions
        shouse.anna.save()
    for url in admin_urls(shouse):
        response = client.get(url)
        assert outcome(response) == ADMIN_EXPECTED[role], f"{role} GET {url}: {response.status_code}"


@pytest.mark.django_db
def test_plain_staff_manage_homedash_in_the_admin_but_not_accounts(shouse):
    """Staff (not superusers) manage devices, channels and rooms in the admin as they do in
    the app (the access module decides); accounts are the superuser's (or the Household page)."""
    client = client_for(shouse, "staff")
    for name in ("devices_device", "devices_channel", "devices_room", "devices_roomaccess", "devices_auditentry"):
        assert client.get(reverse(f"admin:{name}_changelist")).status_code == 200, name
    assert client.get(reverse("admin:devices_device_change", args=[shouse.plug.pk])).status_code == 200
    assert client.get(reverse("admin:auth_user_changelist")).status_code == 403
    entry = AuditEntry.record(user=shouse.anna, action="test.entry")
    assert client.post(reverse("admin:devices_auditentry_delete", args=[entry.pk]), {"post": "yes"}).status_code == 403
    assert AuditEntry.objects.filter(pk=entry.pk).exists()


# ----------------------------------------------------------------------------- websockets
ORIGIN = (b"origin", b"http://127.0.0.1")


def _cookie(user):
    client = Client()
    client.force_login(user)
    return (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())


async def ws_connect(path, user, origin=ORIGIN):
    headers = [origin] if origin else []
    if user is not None:
        headers.append(await sync_to_async(_cookie)(user))
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect(timeout=3)
    return communicator, connected


async def ws_outcome(communicator, connected, *, probe: str | None = None) -> str | int:
    """OK when the socket stays open (it may send a snapshot), else the close code."""
    if not connected:
        return "refused"
    if probe is not None:
        await communicator.send_to(text_data=probe)
    while not await communicator.receive_nothing(timeout=0.6):
        message = await communicator.receive_output(timeout=1)
        if message["type"] == "websocket.close":
            return message.get("code")
    await communicator.disconnect()
    return OK


WS_CASES = {
    "home/": (lambda h: "/ws/home/", row(4401, OK, OK, OK, OK)),
    "devices/<int:pk>/": (lambda h: f"/ws/devices/{h.plug.pk}/", row(4401, 4403, OK, OK, OK)),
    "logs/": (lambda h: f"/ws/logs/?devices={h.plug.pk}", row(4401, 4403, 4403, 4403, OK)),
}


def test_every_websocket_route_is_classified():
    from devices.routing import websocket_urlpatterns

    routes = {str(p.pattern) for p in websocket_urlpatterns}
    assert routes == set(WS_CASES), f"websocket routes without a row: {routes - set(WS_CASES)}"
    top = {str(p.pattern) for p in application.application_mapping["websocket"].routes}
    assert top == {"shelly/ws", "^ws/"}, top


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("route", sorted(WS_CASES))
async def test_websocket_matrix(route, role):
    house = await sync_to_async(build_secure_house)()
    path, expected = WS_CASES[route]
    communicator, connected = await ws_connect(path(house), user_for(house, role))
    assert connected, "browsers' sockets are accepted, then closed with a code"
    assert await ws_outcome(communicator, connected) == expected[role]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("role", ROLES)
async def test_shelly_outbound_socket_refuses_strangers_whoever_calls(role):
    house = await sync_to_async(build_secure_house)()
    communicator, connected = await ws_connect("/shelly/ws", user_for(house, role), origin=None)
    frame = json.dumps({"src": "shellyplus1-deadbeef0000", "method": "NotifyFullStatus",
                        "params": {"sys": {"mac": "DEADBEEF0000"}}})
    # Not from an adopted sleeping device's address: refused at the handshake.
    assert await ws_outcome(communicator, connected, probe=frame) == "refused"


@pytest.mark.django_db(transaction=True)
async def test_viewer_socket_never_receives_a_fragment_of_another_room():
    house = await sync_to_async(build_secure_house)()
    layer = get_channel_layer()
    sockets = {}
    for role in ("viewer", "staff"):
        communicator, _ = await ws_connect("/ws/home/", user_for(house, role))
        await communicator.receive_from(timeout=3)  # the snapshot
        sockets[role] = communicator
    for room, marker in ((house.garden.pk, "GARDEN-FRAGMENT"), (None, "ROOMLESS-FRAGMENT"),
                         (house.kitchen.pk, "KITCHEN-FRAGMENT")):
        await layer.group_send(room_group(room), {"type": "fragment", "html": f"<div>{marker}</div>"})
    # The groups are served in order: what reaches Cara is the kitchen's, and only that
    # (cards within one frame may share a message).
    seen = await sockets["viewer"].receive_from(timeout=3)
    assert "KITCHEN-FRAGMENT" in seen and "GARDEN" not in seen and "ROOMLESS" not in seen
    assert await sockets["viewer"].receive_nothing(timeout=0.3)
    got = ""
    while not all(marker in got for marker in ("GARDEN-FRAGMENT", "KITCHEN-FRAGMENT", "ROOMLESS-FRAGMENT")):
        got += await sockets["staff"].receive_from(timeout=3)
    for communicator in sockets.values():
        await communicator.disconnect()
