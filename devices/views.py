"""Pages and htmx actions. Function views, one template per page, fragments reused by the
live updates.

Every view that touches a room, device or channel goes through one of the `_channel_for`
/ `_device_for` helpers, which fetch the object and ask `devices.access` in one place.
Commands are async views (they wait for the device); everything that touches the database
runs in a thread through `sync_to_async`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Count, Q
from django.http import Http404, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.utils.html import conditional_escape
from django.utils.safestring import mark_safe
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from devices import access, cards, consumers  # noqa: F401  (consumers: revocation signal receivers)
from devices import runtime as runtime_module
from devices.credentials import Credentials
from devices.models import AuditEntry, Channel, Device, DeviceEvent, Room
from devices.runtime import manager as manager_module
from devices.runtime.publisher import device_group, room_group

log = logging.getLogger(__name__)

MAX_FORM_BODY = 4 * 1024  # bytes: a command or a settings form is a few dozen
COMMAND_FIELDS = {"action", "position", "brightness", "colour", "kelvin", "white", "ramp_ms", "csrfmiddlewaretoken"}
ACTIONS = {
    Channel.Kind.SWITCH: {"on", "off", "toggle"},
    Channel.Kind.COVER: {"open", "close", "stop", "position"},
    Channel.Kind.LIGHT: {"on", "off", "toggle", "brightness", "colour", "colour_temp", "white"},
}
FADES = {0, 500, 1000, 3000, 5000}  # ms; Shelly Gen1 accepts at most 5 s
EVENT_PAGE = 200


class OnboardingForm(forms.Form):
    username = forms.CharField(max_length=150, initial="admin", widget=forms.TextInput(attrs={"autocomplete": "username"}))
    password = forms.CharField(widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}))
    password_again = forms.CharField(label="Password (again)", widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}))

    def clean(self):
        data = super().clean()
        if data.get("password") and data.get("password") != data.get("password_again"):
            raise ValidationError("The two passwords differ.")
        if data.get("password"):
            user = get_user_model()(username=data.get("username", ""))
            try:
                validate_password(data["password"], user)
            except ValidationError as exc:
                self.add_error("password", exc)
        return data


@never_cache
def onboarding(request):
    """Create the first administrator. Exists only while the database has no user at all."""
    User = get_user_model()
    if User.objects.exists():
        raise Http404("homedash is already set up")
    form = OnboardingForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = User.objects.create_superuser(username=form.cleaned_data["username"], email="",
                                             password=form.cleaned_data["password"])
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        AuditEntry.record(request=request, action="onboarding.admin_created", detail=user.get_username())
        return redirect("home")
    return render(request, "onboarding.html", {"form": form})


# ----------------------------------------------------------------------------- access helpers
def _channel_for(request, pk: int, *, control: bool = False) -> Channel:
    """The channel, if the user may see it (and control it, when asked). A denied control
    attempt is recorded in the audit trail."""
    channel = get_object_or_404(Channel.objects.select_related("device", "room", "device__room"),
                                pk=pk, device__adopted=True)
    allowed = access.may_control_channel(request.user, channel) if control else access.may_view_channel(request.user, channel)
    if not allowed:
        if control:
            AuditEntry.record(request=request, action="channel.command", device=channel.device, channel=channel,
                              result=AuditEntry.Result.DENIED, detail="not allowed to control this channel")
        raise PermissionDenied("You may not do that here.")
    return channel


def _device_for(request, pk: int, *, manage: bool = False) -> Device:
    device = get_object_or_404(Device.objects.select_related("room"), pk=pk, adopted=True)
    allowed = access.may_manage_devices(request.user) if manage else access.may_view_device(request.user, device)
    if not allowed:
        raise PermissionDenied("You may not do that here.")
    return device


def _staff_only(request) -> None:
    if not access.may_manage_devices(request.user):
        raise PermissionDenied("Only the household's administrators may do that.")


def _too_large(request, limit: int = MAX_FORM_BODY) -> bool:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0) > limit
    except ValueError:
        return True


def _publish_card(channel: Channel, rooms: set) -> None:
    """A rename or a move is a change like any other: render the card once and send it to
    everyone who watches the device or the rooms involved."""
    layer = get_channel_layer()
    if layer is None:
        return
    # Numbered like the publisher's cards (read after the change was saved, before drawing):
    # a page whose snapshot already shows the change drops this copy (devices/consumers.py).
    seq = cards.live_sequence()
    html = cards.render_card(channel, oob=True)
    message = {"type": "fragment", "html": html} if seq is None else {"type": "fragment", "html": html, "seq": seq}
    for group in {device_group(channel.device_id)} | {room_group(r) for r in rooms}:
        async_to_sync(layer.group_send)(group, message)


# ----------------------------------------------------------------------------- home
@dataclass
class RoomView:
    pk: int | None
    name: str
    can_control: bool
    cards: str  # the room's cards, joined (each one rendered by the card partial)


@login_required
def home(request):
    user = request.user
    levels = access.room_levels(user)
    rooms = list(access.visible_rooms(user))
    channels = cards.home_channels(user)
    cards.seed_day_baselines([c.pk for c in channels])
    by_room: dict[int | None, list[Channel]] = {}
    for channel in channels:
        by_room.setdefault(access.channel_room_pk(channel), []).append(channel)
    shown = [(room.pk, room.name, levels.get(room.pk, access.NONE) >= access.CONTROL) for room in rooms]
    if user.is_staff and by_room.get(None):
        shown.append((None, "Not in a room yet", True))
    # All cards in one go: one query for inputs' last presses, cached cards reused.
    html = iter(cards.render_cards(c for pk, _, _ in shown for c in by_room.get(pk, [])))
    # One string per room rather than a template loop over ~300 cards; conditional_escape
    # passes the rendered (safe) cards through and would escape anything else.
    sections = [RoomView(pk, name, control, mark_safe("".join(conditional_escape(next(html)) for _ in by_room.get(pk, []))))
                for pk, name, control in shown]
    inbox_count = (Device.objects.filter(Q(adopted=False, ignored=False) | ~Q(pending_host="")).count()
                   if user.is_staff else 0)
    return render(request, "devices/home.html", {"sections": sections, "inbox_count": inbox_count})


# ----------------------------------------------------------------------------- device page
class ChannelSettingsForm(forms.Form):
    name = forms.CharField(max_length=80, required=False, strip=True)
    room = forms.ModelChoiceField(queryset=Room.objects.all(), required=False, empty_label="Same as the device")
    visible = forms.BooleanField(required=False, initial=True, label="Show on the dashboard")

    def clean_name(self):
        return "".join(ch for ch in self.cleaned_data["name"] if ch.isprintable())


class DeviceSettingsForm(forms.Form):
    name = forms.CharField(max_length=80, required=False, strip=True)
    room = forms.ModelChoiceField(queryset=Room.objects.all(), required=False, empty_label="No room")

    def clean_name(self):
        return "".join(ch for ch in self.cleaned_data["name"] if ch.isprintable())


class CredentialsForm(forms.Form):
    """Write-only: the stored secret is never sent back to the browser."""

    username = forms.CharField(max_length=64, required=False, initial="admin",
                               help_text="Shelly Gen1 only (Gen2+ always use admin).")
    password = forms.CharField(max_length=128, required=False, strip=False,
                               widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}))
    token = forms.CharField(max_length=128, required=False, strip=True, label="Token (myStrom)",
                            widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}))
    skip_check = forms.BooleanField(required=False, label="Save without checking (the device is asleep or away)")
    clear = forms.BooleanField(required=False, label="Remove the stored credentials")

    def __init__(self, *args, vendor: str = "", generation: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if vendor == Device.Vendor.MYSTROM:
            del self.fields["username"], self.fields["password"]
        else:
            del self.fields["token"]
            if (generation or 1) >= 2:
                del self.fields["username"]

    def credentials(self) -> Credentials:
        data = self.cleaned_data
        if "token" in self.fields:
            return Credentials(token=data.get("token", ""))
        return Credentials(username=data.get("username") or "admin", password=data.get("password", ""))


def _device_page_context(request, device: Device) -> dict:
    user = request.user
    channels = cards.in_order(c for c in device.channels.select_related("device", "room", "device__room")
                              if access.may_view_channel(user, c))
    cards.seed_day_baselines([c.pk for c in channels])
    slots = [{"channel": c, "html": html, "can_control": access.may_control_channel(user, c),
              "form": ChannelSettingsForm(prefix=f"ch{c.pk}", initial={"name": c.name, "room": c.room_id, "visible": c.visible})}
             for c, html in zip(channels, cards.render_cards(channels))]
    live = _live(device)
    events = list(access.visible_events(user, device.events.select_related("channel")).order_by("-ts")[:25])
    manage = access.may_manage_devices(user)
    raw_allowed = access.may_view_raw(user, device)
    return {
        "device": device,
        "slots": slots,
        "live": live,
        "system": live.system if live else None,
        "raw_allowed": raw_allowed,
        "raw_status": ((live.raw_status if live and live.raw_status else device.raw_status) or {}) if raw_allowed else {},
        "health_context": _health_context(device, live),
        "chart": cards.power_chart([c for c in channels if c.kind in ("switch", "light", "meter", "cover")]),
        "events": events,
        "manage": manage,
        "device_form": DeviceSettingsForm(initial={"name": device.name, "room": device.room_id}) if manage else None,
        "credentials_form": CredentialsForm(vendor=device.vendor, generation=device.generation) if manage else None,
        "online": live.online if live else device.online,
        # Cards of channels found while the page is open arrive without a slot: they get
        # controls only if the user may control everything here.
        "can_control_all": manage or (bool(slots) and all(s["can_control"] for s in slots)),
    }


def _live(device: Device):
    m = cards.manager()
    return m.store.get(device.pk) if m is not None else None


def _health_context(device: Device, live) -> dict:
    return {
        "device": device,
        "health": live.health if live else None,
        "online": live.online if live else device.online,
        "stale": live.stale if live else True,
    }


@login_required
def device_detail(request, pk: int):
    device = _device_for(request, pk)
    return render(request, "devices/device.html", _device_page_context(request, device))


@login_required
@require_GET
def device_health(request, pk: int):
    """The connection panel, polled by the device page (health is not a channel, so the
    publisher does not push it)."""
    device = _device_for(request, pk)
    return render(request, "devices/partials.html#health", _health_context(device, _live(device)))


@login_required
@require_GET
def device_raw(request, pk: int):
    """What the device said, as JSON (served as JSON, so nothing in it is ever HTML)."""
    device = _device_for(request, pk)
    if not access.may_view_raw(request.user, device):
        raise PermissionDenied("Only those who may see every channel of this device may read what it says.")
    live = _live(device)
    raw = (live.raw_status if live and live.raw_status else device.raw_status) or {}
    response = JsonResponse({"info": device.raw_info or {}, "status": raw}, json_dumps_params={"indent": 2})
    response["Content-Disposition"] = f'inline; filename="device-{device.pk}.json"'
    return response


@login_required
@require_POST
def device_settings(request, pk: int):
    device = _device_for(request, pk, manage=True)
    if _too_large(request):
        return HttpResponse("That form is too large.", status=413)
    form = DeviceSettingsForm(request.POST)
    if not form.is_valid():
        messages.error(request, "The device settings were not saved: " + "; ".join(
            f"{k}: {' '.join(v)}" for k, v in form.errors.items()))
        return redirect("device", pk=device.pk)
    old_room = device.room_id
    device.name, device.room = form.cleaned_data["name"], form.cleaned_data["room"]
    device.save(update_fields=["name", "room", "updated"])
    AuditEntry.record(request=request, action="device.settings", device=device,
                      detail=f"name {device.name!r}, room {device.room or '-'}")
    for channel in device.channels.select_related("device", "room", "device__room").filter(room__isnull=True):
        _publish_card(channel, {old_room, device.room_id})
    messages.success(request, "Saved.")
    return redirect("device", pk=device.pk)


@login_required
@require_POST
def channel_settings(request, pk: int):
    """Rename a channel, move it to a room, hide it: staff only (access.may_manage_devices)."""
    channel = _channel_for(request, pk)
    _staff_only(request)
    if _too_large(request):
        return HttpResponse("That form is too large.", status=413)
    form = ChannelSettingsForm(request.POST, prefix=f"ch{channel.pk}")
    if not form.is_valid():
        messages.error(request, "The channel settings were not saved: " + "; ".join(
            f"{k}: {' '.join(v)}" for k, v in form.errors.items()))
        return redirect("device", pk=channel.device_id)
    old_room = access.channel_room_pk(channel)
    channel.name = form.cleaned_data["name"]
    channel.room = form.cleaned_data["room"]
    channel.visible = form.cleaned_data["visible"]
    channel.save(update_fields=["name", "room", "visible"])
    AuditEntry.record(request=request, action="channel.settings", device=channel.device, channel=channel,
                      detail=f"name {channel.name!r}, room {channel.room or 'device room'}, "
                             f"{'shown' if channel.visible else 'hidden'}")
    _publish_card(channel, {old_room, access.channel_room_pk(channel)})
    messages.success(request, f"Saved {channel.name or channel.key}.")
    return redirect("device", pk=channel.device_id)


# ----------------------------------------------------------------------------- credentials
async def verify_credentials(device: Device, creds: Credentials) -> str | None:
    """Ask the device with these credentials. None when it accepted them, else why not
    (in the words a card uses)."""
    from devices.drivers.errors import DeviceError
    from devices.drivers.gate import gate_for
    from devices.drivers.http import make_client
    from devices.runtime.sessions import describe_error

    # The device's one turn (drivers/gate.py): the check waits for the runtime's poll in
    # flight instead of overlapping it. (Scaled mode: the owning worker's gate.)
    # Checked before the secret goes out: a host name may point at this machine or
    # outside the LAN by now (the runtime checks the same before every session).
    problem = await manager_module.address_problem(device)
    if problem is not None:
        return f"address refused: {problem}"
    gate = gate_for(mac=device.mac, host=device.host, port=device.port)
    async with make_client() as client:
        try:
            if device.vendor == Device.Vendor.MYSTROM:
                from devices.drivers.mystrom import MyStrom

                await MyStrom(client, device.host, device.port, token=creds.token or None, mac=device.mac,
                              gate=gate).info()
            elif (device.generation or 1) >= 2:
                from devices.drivers.shelly_rpc import ShellyRpcHttp

                await ShellyRpcHttp(client, device.host, device.port, password=creds.password or None,
                                    gate=gate).get_status()
            else:
                from devices.drivers.shelly_gen1 import ShellyGen1

                await ShellyGen1(client, device.host, device.port, username=creds.username or "admin",
                                 password=creds.password or None, device=device.mac, gate=gate).poll()
        except DeviceError as exc:
            return describe_error(exc)
    return None


@login_required
@require_POST
async def device_credentials(request, pk: int):
    if _too_large(request):
        return HttpResponse("That form is too large.", status=413)
    device = await sync_to_async(_device_for)(request, pk, manage=True)
    form = CredentialsForm(request.POST, vendor=device.vendor, generation=device.generation)
    if not form.is_valid():
        await sync_to_async(messages.error)(request, "Not saved: the form was not filled in correctly.")
        return redirect("device", pk=device.pk)
    if form.cleaned_data["clear"]:
        creds = Credentials()
    else:
        creds = form.credentials()
        if not creds:
            await sync_to_async(messages.error)(request, "Nothing to save: give a password or token.")
            return redirect("device", pk=device.pk)
        changed = _address_changed(request, device)
        if changed:
            await sync_to_async(messages.error)(request, f"Not saved: {changed}.")
            return redirect("device", pk=device.pk)
        if not form.cleaned_data["skip_check"]:
            problem = await verify_credentials(device, creds)
            if problem is not None:
                await sync_to_async(AuditEntry.record)(request=request, action="device.credentials", device=device,
                                                       result=AuditEntry.Result.FAILED, detail=f"check failed: {problem}")
                await sync_to_async(messages.error)(request, f"Not saved: the device said {problem}.")
                return redirect("device", pk=device.pk)

    def save():
        device.credentials = creds
        device.auth_required = device.auth_required or bool(creds)
        device.save(update_fields=["credentials", "auth_required", "updated"])
        AuditEntry.record(request=request, action="device.credentials", device=device,
                          detail="removed" if not creds else ("saved without checking" if form.cleaned_data["skip_check"] else "saved and checked"))
        messages.success(request, "Credentials removed." if not creds else "Credentials saved.")

    await sync_to_async(save)()
    return redirect("device", pk=device.pk)


# ----------------------------------------------------------------------------- commands
class CommandRefused(ValueError):
    """The request is not a command this channel understands; the message says why."""


def _number(data, name: str, low: float, high: float) -> float:
    raw = data.get(name)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise CommandRefused(f"{name} must be a number from {low:g} to {high:g}") from None
    if not low <= value <= high:
        raise CommandRefused(f"{name} must be a number from {low:g} to {high:g}")
    return value


def parse_command(kind: str, data) -> tuple[str, dict]:
    """A POSTed form -> (action, params) for `send_command`, or CommandRefused. Only known
    fields, each once, each within its range."""
    unknown = sorted(set(data.keys()) - COMMAND_FIELDS)
    if unknown:
        raise CommandRefused(f"unexpected field {unknown[0][:40]!r}")
    if any(len(data.getlist(key)) > 1 for key in data.keys()):
        raise CommandRefused("each field may be given once")
    action = data.get("action", "")
    allowed = ACTIONS.get(kind, set())
    if action not in allowed:
        if not allowed:
            raise CommandRefused("this channel cannot be controlled")
        raise CommandRefused(f"action must be one of {', '.join(sorted(allowed))}")
    params: dict = {}
    if action == "position":
        params["position"] = _number(data, "position", 0, 100)
    elif action == "brightness":
        params["brightness"] = _number(data, "brightness", 0, 100)
    elif action == "colour":
        hsv = cards.hex_to_hsv(data.get("colour", ""))
        if hsv is None:
            raise CommandRefused("colour must look like #ff8800")
        params.update(h=hsv[0], s=hsv[1], v=hsv[2])
    elif action == "colour_temp":
        params["kelvin"] = int(_number(data, "kelvin", 2700, 6500))
    elif action == "white":  # myStrom's white tone index (1 warmest .. 18)
        params["white"] = int(_number(data, "white", 1, 18))
    fade = data.get("ramp_ms", "")
    if fade not in ("", None):
        try:
            ramp = int(fade)
        except ValueError:
            raise CommandRefused("ramp_ms must be one of " + ", ".join(map(str, sorted(FADES)))) from None
        if ramp not in FADES:
            raise CommandRefused("ramp_ms must be one of " + ", ".join(map(str, sorted(FADES))))
        if kind == Channel.Kind.LIGHT and ramp:
            params["ramp_ms"] = ramp
    return action, params


def _describe_command(action: str, params: dict) -> str:
    extra = " ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in params.items())
    return f"{action} {extra}".strip()


def _command_target(request, pk: int):
    """Sync part of a command: fetch, check access (403 + audit when denied), parse."""
    channel = _channel_for(request, pk, control=True)
    try:
        action, params = parse_command(channel.kind, request.POST)
    except CommandRefused as exc:
        return channel, None, str(exc)
    return channel, (action, params), None


@login_required
@require_POST
async def channel_command(request, pk: int):
    """Run a command and answer with the card as the device now is (an out-of-band
    fragment, swapped by id like a live update). A failure says why on the card."""
    if _too_large(request):
        return HttpResponse("A command is a few bytes; this request is too large.", status=413)
    channel, command, problem = await sync_to_async(_command_target)(request, pk)
    if command is None:
        return HttpResponseBadRequest(f"Not a command this channel understands: {problem}.", content_type="text/plain")
    action, params = command
    before = cards.current_state_object(channel.device_id, channel.key)
    outcome = await manager_module.send_command(channel.device_id, channel.key, action, params)
    ok = bool(outcome.get("ok"))
    error = "" if ok else str(outcome.get("error") or "failed")[:200]
    if ok:
        await cards.wait_for_confirmation(channel.device_id, channel.key, before)
    await sync_to_async(AuditEntry.record)(
        request=request, action="channel.command", device=channel.device, channel=channel,
        result=AuditEntry.Result.OK if ok else AuditEntry.Result.FAILED,
        detail=_describe_command(action, params) + ("" if ok else f": {error}"),
    )

    def card():
        fresh = Channel.objects.select_related("device", "room", "device__room").get(pk=channel.pk)
        html = cards.render_card(fresh, oob=True, error=error)
        if error:
            # The card may be redrawn by a live update a moment later (the device going
            # offline, say); the note at the bottom of the screen stays until dismissed.
            html += render_to_string("devices/partials.html#command-failed",
                                     {"channel": fresh, "error": error, "name": cards.display_name(fresh)})
        return html

    return HttpResponse(await sync_to_async(card)())


# ----------------------------------------------------------------------------- inbox
class AdoptForm(forms.Form):
    name = forms.CharField(max_length=80, required=False, strip=True)
    room = forms.ModelChoiceField(queryset=Room.objects.all(), required=False, empty_label="No room yet")
    new_room = forms.CharField(max_length=80, required=False, strip=True, label="…or a new room")
    username = forms.CharField(max_length=64, required=False, initial="admin")
    password = forms.CharField(max_length=128, required=False, strip=False,
                               widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}))
    token = forms.CharField(max_length=128, required=False, strip=True, label="Token",
                            widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}))
    skip_check = forms.BooleanField(required=False, label="Adopt without checking the password (the device is asleep)")

    def clean_name(self):
        return "".join(ch for ch in self.cleaned_data["name"] if ch.isprintable())

    def clean_new_room(self):
        return "".join(ch for ch in self.cleaned_data["new_room"] if ch.isprintable())


class ScanForm(forms.Form):
    subnet = forms.CharField(max_length=64, label="Subnet", help_text="e.g. 192.168.1.0/24 (at most a /22)")


class AddForm(forms.Form):
    host = forms.CharField(max_length=253, label="Address")
    port = forms.IntegerField(min_value=1, max_value=65535, initial=80)
    token = forms.CharField(max_length=128, required=False, label="myStrom token (if it has one)",
                            widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}))


INBOX_PAGE = 25  # devices per inbox page: each carries an adoption form


def _inbox_context(request, **extra) -> dict:
    # Paginated: the inbox is bounded (discovery.inbox.INBOX_LIMIT) but a page with every
    # waiting device and its form would still be megabytes after a flood on the LAN.
    page = Paginator(Device.objects.filter(adopted=False, ignored=False).order_by("-last_seen", "-pk"),
                     INBOX_PAGE).get_page(request.GET.get("page"))
    return {
        "waiting": [{"device": d, "form": AdoptForm(prefix=f"d{d.pk}", initial={"name": d.name})} for d in page],
        "page": page,
        "moves": pending_moves(),
        "ignored": Device.objects.filter(ignored=True).order_by("name", "mac")[:100],
        "scan_form": extra.pop("scan_form", ScanForm()),
        "add_form": extra.pop("add_form", AddForm()),
        **extra,
    }


@login_required
def inbox(request):
    _staff_only(request)
    return render(request, "devices/inbox.html", _inbox_context(request))


def _inbox_device(request, pk: int) -> Device:
    _staff_only(request)
    return get_object_or_404(Device, pk=pk, adopted=False)


@login_required
@require_POST
async def inbox_adopt(request, pk: int):
    if _too_large(request):
        return HttpResponse("That form is too large.", status=413)
    device = await sync_to_async(_inbox_device)(request, pk)
    form = AdoptForm(request.POST, prefix=f"d{device.pk}")
    valid = await sync_to_async(form.is_valid)()
    if not valid:
        await sync_to_async(messages.error)(request, "Not adopted: the form was not filled in correctly.")
        return redirect("inbox")
    data = form.cleaned_data
    if device.vendor == Device.Vendor.MYSTROM:
        creds = Credentials(token=data["token"])
    else:
        creds = Credentials(username=data["username"] or "admin", password=data["password"])
    changed = _address_changed(request, device) if creds else None
    if changed:
        await sync_to_async(messages.error)(request, f"Not adopted: {changed}.")
        return redirect("inbox")
    if device.auth_required and not creds and not data["skip_check"]:
        await sync_to_async(messages.error)(request, f"{device} asks for a {'token' if device.vendor == 'mystrom' else 'password'}: give it to adopt the device.")
        return redirect("inbox")
    if creds and not data["skip_check"]:
        # Credentials are checked against the device before anything is saved: a typo
        # found now is better than a device that never comes online.
        problem = await verify_credentials(device, creds)
        if problem is not None:
            await sync_to_async(AuditEntry.record)(request=request, action="device.adopt", device=device,
                                                   result=AuditEntry.Result.FAILED, detail=f"check failed: {problem}")
            await sync_to_async(messages.error)(request, f"Not adopted: the device said {problem}.")
            return redirect("inbox")

    def adopt():
        room = data["room"]
        if data["new_room"]:
            room, _ = Room.objects.get_or_create(name=data["new_room"], defaults={"order": Room.objects.count()})
        device.name = data["name"] or device.name
        device.room = room
        device.adopted = True
        if creds:
            device.credentials = creds
        device.save()
        AuditEntry.record(request=request, action="device.adopt", device=device,
                          detail=f"into {room or 'no room'}" + (" with credentials" if creds else ""))
        messages.success(request, f"Adopted {device}. Its channels appear as soon as it answers.")

    await sync_to_async(adopt)()
    return redirect("inbox")


@login_required
@require_POST
def inbox_ignore(request, pk: int):
    device = _inbox_device(request, pk)
    device.ignored = request.POST.get("undo") != "1"
    device.save(update_fields=["ignored", "updated"])
    AuditEntry.record(request=request, action="device.ignore" if device.ignored else "device.unignore", device=device)
    messages.success(request, f"{'Ignored' if device.ignored else 'Back in the inbox'}: {device}.")
    return redirect("inbox")


@login_required
@require_POST
async def inbox_scan(request):
    from devices.discovery.scan import SubnetRefused
    from devices.discovery.service import scan_and_record

    await sync_to_async(_staff_only)(request)
    if _too_large(request):
        return HttpResponse("That form is too large.", status=413)
    form = ScanForm(request.POST)
    if not form.is_valid():
        return await sync_to_async(render)(request, "devices/inbox.html", await sync_to_async(_inbox_context)(request, scan_form=form))
    try:
        report, outcomes = await scan_and_record(form.cleaned_data["subnet"])
    except SubnetRefused as exc:
        form.add_error("subnet", str(exc))
        return await sync_to_async(render)(request, "devices/inbox.html", await sync_to_async(_inbox_context)(request, scan_form=form))
    new = sum(1 for o in outcomes if o.kind == "created")
    text = f"Scanned {report.network}: {len(report.found)} device(s) answered, {new} new."
    if report.needs_token:
        text += f" {len(report.needs_token)} address(es) answered like a myStrom device with a token: add them by address with the token."
    await sync_to_async(AuditEntry.record)(request=request, action="discovery.scan", detail=text)
    await sync_to_async(messages.success)(request, text)
    return redirect("inbox")


@login_required
@require_POST
async def inbox_add(request):
    from devices.discovery.identify import AddressRefused
    from devices.discovery.inbox import InboxRefused
    from devices.discovery.scan import NotADevice
    from devices.discovery.service import add_device

    await sync_to_async(_staff_only)(request)
    if _too_large(request):
        return HttpResponse("That form is too large.", status=413)
    form = AddForm(request.POST)
    if form.is_valid():
        try:
            outcome = await add_device(form.cleaned_data["host"].strip(), form.cleaned_data["port"],
                                       token=form.cleaned_data["token"] or None, request=request)
        except (AddressRefused, NotADevice, InboxRefused) as exc:
            form.add_error("host", str(exc))
        else:
            if outcome.kind == "pending":
                text = (f"{outcome.mac} is known at {outcome.address} and has credentials: that it is at "
                        f"{outcome.pending_address} waits for your confirmation here.")
            elif outcome.adopted:
                text = f"{outcome.mac} is already adopted; its address is now {outcome.address}."
            else:
                text = f"Found {outcome.vendor} device {outcome.mac} at {outcome.address}: it is in the inbox."
            await sync_to_async(messages.success)(request, text)
            return redirect("inbox")
    return await sync_to_async(render)(request, "devices/inbox.html", await sync_to_async(_inbox_context)(request, add_form=form))


# ----------------------------------------------------------------------------- pending moves
# A device with credentials claimed at a new address waits for staff (discovery/inbox.py,
# docs/security.md): "<device> seems to have moved to <address> — confirm / dismiss".


def _address_changed(request, device: Device) -> str | None:
    """Credentials in a form go to the device's address, so only to the one the page showed
    (a device without credentials follows a claimed move by itself, and an impostor could
    otherwise race the household's click). Forms without the field are not checked."""
    shown = request.POST.get("shown_address")
    if shown is not None and shown != device.address:
        return f"{device} is at {device.address} now, not at {shown[:60]} as the page showed; look at it again"
    return None


def pending_moves() -> list[dict]:
    from devices.forms import PendingMoveForm

    moved = Device.objects.exclude(pending_host="").order_by("-pending_since", "pk")[:50]
    return [{"device": d, "form": PendingMoveForm(initial={"host": d.pending_host, "port": d.pending_port})}
            for d in moved]


@login_required
@require_POST
def inbox_move(request, pk: int):
    from devices.discovery.inbox import MoveChanged, confirm_move, dismiss_move
    from devices.forms import PendingMoveForm

    _staff_only(request)
    if _too_large(request):
        return HttpResponse("That form is too large.", status=413)
    form = PendingMoveForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Nothing changed: the form was not filled in correctly.")
        return redirect("inbox")
    confirm = form.cleaned_data["decision"] == "confirm"
    try:
        device = (confirm_move if confirm else dismiss_move)(
            pk, form.cleaned_data["host"], form.cleaned_data["port"], request=request)
    except MoveChanged as exc:
        messages.error(request, f"Nothing changed: {exc}.")
        return redirect("inbox")
    messages.success(request, f"{device} is followed at {device.address} now." if confirm
                     else f"{device} stays at {device.address}; the other address is forgotten.")
    return redirect("inbox")


# ----------------------------------------------------------------------------- events
EVENT_FILTERS = {
    "all": "Everything",
    "presses": "Button presses and inputs",
    "presence": "Online / offline",
    "commands": "Commands",
    "device": "Device changes",
}
PRESENCE_KINDS = {"online", "offline"}
DEVICE_KINDS = {"discovered", "address_changed", "move_pending", "move_dismissed", "ota_begin", "ota_progress", "ota_success", "ota_error", "reboot"}


@dataclass
class EventRow:
    ts: object
    what: str
    kind: str
    device: Device | None
    channel: Channel | None
    detail: str
    who: str = ""
    result: str = ""
    source: str = ""


@login_required
def events(request):
    user = request.user
    filters = dict(EVENT_FILTERS)
    if user.is_staff:
        filters["audit"] = "Audit trail (all changes)"
    shown = request.GET.get("show", "all")
    if shown not in filters:
        shown = "all"
    device_pk = request.GET.get("device", "")
    visible_devices = Device.objects.filter(adopted=True)
    if not user.is_staff:
        visible_devices = visible_devices.filter(pk__in=access.visible_channels(user).values("device_id"))
    devices_list = list(visible_devices.order_by("name", "mac"))
    allowed_pks = {d.pk for d in devices_list}
    chosen = int(device_pk) if device_pk.isdigit() and int(device_pk) in allowed_pks else None
    pks = {chosen} if chosen else allowed_pks

    # Staff filter the audit trail by who, what and how it ended.
    audit = {"user": "", "action": "", "result": ""}
    audit_users: list[str] = []
    audit_actions: list[str] = []
    if user.is_staff:
        audit_users = list(AuditEntry.objects.exclude(username="").order_by("username")
                           .values_list("username", flat=True).distinct())
        audit_actions = list(AuditEntry.objects.order_by("action").values_list("action", flat=True).distinct())
        for key, choices in (("user", audit_users), ("action", audit_actions),
                             ("result", [v for v, _ in AuditEntry.Result.choices])):
            value = request.GET.get(key, "")
            audit[key] = value if value in choices else ""
    audit_filtered = any(audit.values())
    if audit_filtered and shown not in ("commands", "audit"):
        shown = "audit"

    rows: list[EventRow] = []
    if shown not in ("commands", "audit"):
        qs = DeviceEvent.objects.filter(device_id__in=pks).select_related("device", "channel")
        if shown == "presence":
            qs = qs.filter(kind__in=PRESENCE_KINDS)
        elif shown == "device":
            qs = qs.filter(kind__in=DEVICE_KINDS)
        elif shown == "presses":
            qs = qs.exclude(kind__in=PRESENCE_KINDS | DEVICE_KINDS)
        # Events of a channel the user cannot see stay hidden even on a shared device.
        qs = access.visible_events(user, qs)
        for e in qs.order_by("-ts")[:EVENT_PAGE]:
            what = ("presence" if e.kind in PRESENCE_KINDS else "device" if e.kind in DEVICE_KINDS else "press")
            rows.append(EventRow(e.ts, what, e.kind, e.device, e.channel, e.detail))
    if shown in ("all", "commands", "audit"):
        qs = AuditEntry.objects.select_related("device", "channel")
        if shown == "audit":  # staff only (see filters): every entry, with or without a device
            if chosen:
                qs = qs.filter(device_id=chosen)
        else:
            qs = qs.filter(action="channel.command", device_id__in=pks)
        if not user.is_staff:
            qs = qs.filter(channel__in=access.visible_channels(user))
        if audit["user"]:
            qs = qs.filter(username=audit["user"])
        if audit["action"]:
            qs = qs.filter(action=audit["action"])
        if audit["result"]:
            qs = qs.filter(result=audit["result"])
        for a in qs.order_by("-ts")[:EVENT_PAGE]:
            what = "command" if a.action == "channel.command" else "audit"
            rows.append(EventRow(a.ts, what, a.action, a.device, a.channel, a.detail, a.username, a.result,
                                 a.source_address or ""))
    rows.sort(key=lambda r: r.ts, reverse=True)
    return render(request, "devices/events.html", {
        "rows": rows[:EVENT_PAGE], "filters": filters, "shown": shown, "devices": devices_list,
        "chosen": chosen, "limit": EVENT_PAGE, "audit": audit, "audit_users": audit_users,
        "audit_actions": audit_actions, "audit_results": AuditEntry.Result.choices,
    })


# ----------------------------------------------------------------------------- small endpoints
@require_GET
@never_cache
def healthz(request):
    """For monitoring: 200 when the database answers; says whether the runtime runs."""
    body = {"status": "ok"}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        counts = Device.objects.aggregate(
            n_adopted=Count("id", filter=Q(adopted=True)),
            n_inbox=Count("id", filter=Q(adopted=False, ignored=False)),
            n_online=Count("id", filter=Q(adopted=True, online=True)),
        )
        body["database"] = "ok"
        body["devices"] = {key.removeprefix("n_"): value for key, value in counts.items()}
    except Exception as exc:  # the point of a health check is to report this, not crash
        body.update(status="error", database=f"unavailable: {type(exc).__name__}")
    rt = runtime_module.current()
    body["runtime"] = "running" if rt is not None and rt.running else "stopped"
    return JsonResponse(body, status=200 if body["status"] == "ok" else 503)


@require_GET
def manifest(request):
    """Web-app manifest so the dashboard can be installed to a phone's home screen."""
    from django.templatetags.static import static

    return JsonResponse(
        {
            "name": "homedash",
            "short_name": "homedash",
            "start_url": "/",
            "display": "standalone",
            "background_color": "#111827",
            "theme_color": "#111827",
            "icons": [
                {"src": static("icons/icon-192.png"), "sizes": "192x192", "type": "image/png"},
                {"src": static("icons/icon-512.png"), "sizes": "512x512", "type": "image/png"},
            ],
        },
        content_type="application/manifest+json",
    )
