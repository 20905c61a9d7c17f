"""Household management for staff: members, their room levels, the debug-log permission.

`/household/` lists every member and group with their level per room. Staff create a
member with a username and an initial password (Django's password validators apply; the
person changes it later in the admin or is given a new one here), set or remove a room
level for a user or a group, grant or revoke "may read debug logs", and deactivate or
reactivate a member.

Every change goes through the ORM, so the signal receivers in `devices.consumers` and
`devices.logviews` close the affected users' open sockets (their `user.<pk>` group) and
the page reconnects with the new rights. Every change is recorded in the audit trail.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import Group, Permission
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from devices import access
from devices.models import AuditEntry, Room, RoomAccess

MAX_FORM_BODY = 4 * 1024
LEVEL_CHOICES = [("none", "No access"), ("view", "View"), ("control", "Control")]


def _staff_only(request) -> None:
    if not access.may_manage_devices(request.user):
        raise PermissionDenied("Only the household's administrators may do that.")


def _may_change(request, member, action: str) -> bool:
    """access.may_manage_member, with a refusal in the audit trail and on the page."""
    if access.may_manage_member(request.user, member):
        return True
    AuditEntry.record(request=request, action=action, result=AuditEntry.Result.DENIED,
                      detail=f"user {member.get_username()}: only a superuser may change an administrator")
    messages.error(request, f"Only a superuser may change {member.get_username()}'s rights.")
    return False


def _too_large(request) -> bool:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0) > MAX_FORM_BODY
    except ValueError:
        return True


class MemberForm(forms.Form):
    username = forms.CharField(max_length=150, widget=forms.TextInput(attrs={"autocomplete": "off"}))
    password = forms.CharField(widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}))
    password_again = forms.CharField(label="Password (again)",
                                     widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}))

    def clean_username(self):
        User = get_user_model()
        name = self.cleaned_data["username"].strip()
        User.username_validator(name)
        if User.objects.filter(username__iexact=name).exists():
            raise ValidationError("Somebody already has that name.")
        return name

    def clean(self):
        data = super().clean()
        if data.get("password") and data.get("password") != data.get("password_again"):
            raise ValidationError("The two passwords differ.")
        if data.get("password") and data.get("username"):
            try:
                validate_password(data["password"], get_user_model()(username=data["username"]))
            except ValidationError as exc:
                self.add_error("password", exc)
        return data


class LevelForm(forms.Form):
    who = forms.RegexField(regex=r"^(user|group):\d{1,10}$", max_length=20)
    room = forms.ModelChoiceField(queryset=Room.objects.all())
    level = forms.ChoiceField(choices=LEVEL_CHOICES)


class FlagForm(forms.Form):
    value = forms.ChoiceField(choices=[("1", "on"), ("0", "off")])


def _log_permission() -> Permission:
    app, codename = access.DEBUG_LOG_PERMISSION.split(".")
    return Permission.objects.get(content_type__app_label=app, codename=codename)


def _context(request, **extra) -> dict:
    User = get_user_model()
    rooms = list(Room.objects.order_by("order", "name"))
    grants: dict[tuple[str, int], dict[int, str]] = {}
    for ra in RoomAccess.objects.all():
        key = ("user", ra.user_id) if ra.user_id else ("group", ra.group_id)
        grants.setdefault(key, {})[ra.room_id] = ra.level
    log_perm = _log_permission()
    with_log = set(log_perm.user_set.values_list("pk", flat=True))
    members = []
    for u in User.objects.order_by("-is_active", "username").prefetch_related("groups"):
        levels = grants.get(("user", u.pk), {})
        members.append({
            "user": u,
            "levels": [(room, "control" if u.is_staff else levels.get(room.pk, "none")) for room in rooms],
            "logs": u.is_staff or u.pk in with_log,
            "logs_direct": u.pk in with_log,
            "groups": [g.name for g in u.groups.all()],
            "may_change": access.may_manage_member(request.user, u),
        })
    groups = []
    for g in Group.objects.order_by("name"):
        levels = grants.get(("group", g.pk), {})
        groups.append({"group": g, "levels": [(room, levels.get(room.pk, "none")) for room in rooms]})
    context = {
        "rooms": rooms, "members": members, "groups": groups, "level_choices": LEVEL_CHOICES,
        "member_form": MemberForm(),
    }
    context.update(extra)
    return context


@login_required
@require_GET
@never_cache
def household(request):
    _staff_only(request)
    return render(request, "household/household.html", _context(request))


@login_required
@require_POST
def add_member(request):
    _staff_only(request)
    if _too_large(request):
        return HttpResponse("That form is too large.", status=413)
    form = MemberForm(request.POST)
    if not form.is_valid():
        AuditEntry.record(request=request, action="member.create", result=AuditEntry.Result.FAILED,
                          detail="refused: " + "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items()
                                                         if k != "password")[:400])
        return render(request, "household/household.html", _context(request, member_form=form), status=400)
    user = get_user_model().objects.create_user(username=form.cleaned_data["username"],
                                                password=form.cleaned_data["password"])
    AuditEntry.record(request=request, action="member.create", detail=user.get_username())
    messages.success(request, f"{user.get_username()} may now log in. Give them rooms below.")
    return redirect("household")


@login_required
@require_POST
def set_level(request):
    _staff_only(request)
    if _too_large(request):
        return HttpResponse("That form is too large.", status=413)
    form = LevelForm(request.POST)
    if not form.is_valid():
        return HttpResponse("That is not a room level.", status=400)
    kind, pk = form.cleaned_data["who"].split(":")
    room, level = form.cleaned_data["room"], form.cleaned_data["level"]
    if kind == "user":
        principal = get_object_or_404(get_user_model(), pk=int(pk))
        if not _may_change(request, principal, "access.change"):
            return redirect("household")
        lookup = {"user": principal, "group": None}
        name = f"user {principal.get_username()}"
    else:
        principal = get_object_or_404(Group, pk=int(pk))
        lookup = {"group": principal, "user": None}
        name = f"group {principal.name}"
    with transaction.atomic():
        existing = RoomAccess.objects.filter(room=room, **lookup).first()
        before = existing.level if existing else "none"
        if level == "none":
            if existing:
                existing.delete()  # post_delete: the affected sockets close
        elif existing:
            if existing.level != level:
                existing.level = level
                existing.save()  # post_save: the affected sockets close
        else:
            RoomAccess.objects.create(room=room, level=level, **lookup)
    if before != level:
        AuditEntry.record(request=request, action="access.change" if level != "none" else "access.remove",
                          detail=f"{name}: {room.name}: {before} -> {level}")
        messages.success(request, f"{name.capitalize()}: {room.name} is now '{dict(LEVEL_CHOICES)[level]}'.")
    return redirect("household")


def _member(request, pk: int):
    member = get_object_or_404(get_user_model(), pk=pk)
    return member


@login_required
@require_POST
def set_logs(request, pk: int):
    _staff_only(request)
    if _too_large(request):
        return HttpResponse("That form is too large.", status=413)
    form = FlagForm(request.POST)
    if not form.is_valid():
        return HttpResponse("Say 1 or 0.", status=400)
    member = _member(request, pk)
    if not _may_change(request, member, "access.logs"):
        return redirect("household")
    grant = form.cleaned_data["value"] == "1"
    if grant:
        member.user_permissions.add(_log_permission())  # m2m_changed: sockets re-decide
    else:
        member.user_permissions.remove(_log_permission())
    AuditEntry.record(request=request, action="access.logs",
                      detail=f"user {member.get_username()}: debug logs {'granted' if grant else 'revoked'}")
    messages.success(request, f"{member.get_username()} {'may' if grant else 'may no longer'} read debug logs.")
    return redirect("household")


@login_required
@require_POST
def set_active(request, pk: int):
    _staff_only(request)
    if _too_large(request):
        return HttpResponse("That form is too large.", status=413)
    form = FlagForm(request.POST)
    if not form.is_valid():
        return HttpResponse("Say 1 or 0.", status=400)
    member = _member(request, pk)
    active = form.cleaned_data["value"] == "1"
    if member.pk == request.user.pk and not active:
        AuditEntry.record(request=request, action="member.deactivate", result=AuditEntry.Result.DENIED,
                          detail=f"user {member.get_username()}: may not deactivate oneself")
        messages.error(request, "You cannot deactivate yourself.")
        return redirect("household")
    if not _may_change(request, member, "member.activate" if active else "member.deactivate"):
        return redirect("household")
    if member.is_active != active:
        member.is_active = active
        member.save(update_fields=["is_active"])  # post_save: the member's sockets close
        AuditEntry.record(request=request, action="member.activate" if active else "member.deactivate",
                          detail=f"user {member.get_username()}")
        messages.success(request, f"{member.get_username()} is {'active again' if active else 'deactivated'}.")
    return redirect("household")


household_urls = [
    path("", household, name="household"),
    path("members/add", add_member, name="household-add-member"),
    path("access", set_level, name="household-set-level"),
    path("members/<int:pk>/logs", set_logs, name="household-set-logs"),
    path("members/<int:pk>/active", set_active, name="household-set-active"),
]
