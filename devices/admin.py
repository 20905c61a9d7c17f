"""Django admin for everything homedash stores. Credentials are write-only: the form has
empty password fields that replace the stored secret only when something is typed."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError

from devices import access
from devices.credentials import Credentials
from devices.models import normalise_mac
from devices.models import AuditEntry, Channel, Device, DeviceEvent, Reading, Room, RoomAccess


class StaffManaged:
    """homedash's own models in the admin: staff manage devices, credentials and rooms, so
    the access module decides here too (not Django's per-model permissions)."""

    def has_module_permission(self, request):
        return access.may_manage_devices(request.user)

    def has_view_permission(self, request, obj=None):
        return access.may_manage_devices(request.user)

    def has_add_permission(self, request, *args):
        return access.may_manage_devices(request.user)

    def has_change_permission(self, request, obj=None):
        return access.may_manage_devices(request.user)

    def has_delete_permission(self, request, obj=None):
        return access.may_manage_devices(request.user)


class DeviceAdminForm(forms.ModelForm):
    username = forms.CharField(
        required=False, help_text="Shelly Gen1 only (usually 'admin'). Leave empty to keep the stored one."
    )
    password = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Shelly password. Stored encrypted and never shown again; leave empty to keep it.",
    )
    token = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="myStrom API token. Stored encrypted and never shown again; leave empty to keep it.",
    )
    clear_credentials = forms.BooleanField(required=False, help_text="Forget the stored credentials.")
    mac = forms.CharField(label="MAC", max_length=17, help_text="12 hex digits; colons or dashes are fine.")

    class Meta:
        model = Device
        exclude = ["credentials"]

    def clean_mac(self):
        try:
            return normalise_mac(self.cleaned_data["mac"])
        except ValidationError as exc:
            raise forms.ValidationError(exc.messages) from None

    def clean(self):
        data = super().clean()
        host, port = data.get("host"), data.get("port")
        if host and port and "host" not in self.errors:
            from django.conf import settings

            from devices.discovery.identify import AddressRefused, check_device_address_sync

            # A name is checked for where it points now (a name resolving to 127.0.0.1
            # would get the device's token); the runtime checks again before connecting.
            try:
                data["host"] = check_device_address_sync(host, port, allow_loopback=settings.ALLOW_LOOPBACK_DEVICES)
            except AddressRefused as exc:
                self.add_error("host", str(exc))
        return data

    def save(self, commit=True):
        device = super().save(commit=False)
        data = self.cleaned_data
        if data.get("clear_credentials"):
            device.credentials = Credentials()
        elif data.get("password") or data.get("token") or data.get("username"):
            old = device.credentials if isinstance(device.credentials, Credentials) else Credentials()
            device.credentials = Credentials(
                username=data.get("username") or old.username,
                password=data.get("password") or old.password,
                token=data.get("token") or old.token,
            )
        if commit:
            device.save()
        return device


def _tell_runtime(pks) -> None:
    """A bulk update sends no post_save: tell the runtime about each device, after the
    commit (see devices.apps)."""
    from django.db import transaction

    from devices.runtime.manager import device_changed_from_sync_code

    for pk in pks:
        transaction.on_commit(lambda pk=pk: device_changed_from_sync_code(pk))


class ChannelInline(StaffManaged, admin.TabularInline):
    model = Channel
    extra = 0
    fields = ["key", "kind", "name", "room", "order", "visible"]
    show_change_link = True


@admin.register(Room)
class RoomAdmin(StaffManaged, admin.ModelAdmin):
    list_display = ["name", "order", "icon", "device_count"]
    list_editable = ["order"]
    search_fields = ["name"]

    @admin.display(description="devices")
    def device_count(self, room):
        return room.devices.count()


@admin.register(Device)
class DeviceAdmin(StaffManaged, admin.ModelAdmin):
    form = DeviceAdminForm
    list_display = ["__str__", "vendor", "generation", "model_name", "mac", "address", "room", "adopted", "online", "last_seen", "credentials_set"]
    list_filter = ["vendor", "generation", "adopted", "ignored", "online", "found_by", "room"]
    search_fields = ["name", "mac", "host", "model_code", "model_name"]
    readonly_fields = ["online", "last_seen", "firmware", "raw_info", "raw_status", "created", "updated"]
    inlines = [ChannelInline]
    actions = ["adopt", "send_to_inbox", "ignore"]
    fieldsets = [
        (None, {"fields": ["name", "room", "vendor", "generation", "model_code", "model_name", "mac"]}),
        ("Network", {"fields": ["host", "port", "poll_interval", "found_by"]}),
        ("Credentials (write-only)", {"fields": ["auth_required", "username", "password", "token", "clear_credentials"]}),
        ("Inbox", {"fields": ["adopted", "ignored"]}),
        ("Seen", {"classes": ["collapse"], "fields": ["online", "last_seen", "firmware", "raw_info", "raw_status", "created", "updated"]}),
    ]

    @admin.display(boolean=True, description="credentials")
    def credentials_set(self, device):
        return device.has_credentials

    @admin.action(description="Adopt selected devices")
    def adopt(self, request, queryset):
        pks = list(queryset.values_list("pk", flat=True))
        count = queryset.update(adopted=True, ignored=False)
        for device in Device.objects.filter(pk__in=pks):
            AuditEntry.record(request=request, action="device.adopt", device=device)
        _tell_runtime(pks)
        self.message_user(request, f"Adopted {count} device(s).", messages.SUCCESS)

    @admin.action(description="Move selected devices back to the inbox")
    def send_to_inbox(self, request, queryset):
        pks = list(queryset.values_list("pk", flat=True))
        queryset.update(adopted=False)
        _tell_runtime(pks)

    @admin.action(description="Ignore selected devices")
    def ignore(self, request, queryset):
        pks = list(queryset.values_list("pk", flat=True))
        queryset.update(ignored=True, adopted=False)
        _tell_runtime(pks)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        changed = [name for name in form.changed_data if name not in ("password", "token", "username")]
        if any(form.cleaned_data.get(k) for k in ("password", "token", "clear_credentials")):
            AuditEntry.record(request=request, action="device.credentials", device=obj)
        if changed:
            AuditEntry.record(request=request, action="device.change" if change else "device.add",
                              device=obj, detail=", ".join(changed))


@admin.register(Channel)
class ChannelAdmin(StaffManaged, admin.ModelAdmin):
    list_display = ["__str__", "device", "key", "kind", "room", "order", "visible"]
    list_filter = ["kind", "visible", "room"]
    search_fields = ["name", "key", "device__name", "device__mac"]
    list_select_related = ["device", "room"]


@admin.register(RoomAccess)
class RoomAccessAdmin(StaffManaged, admin.ModelAdmin):
    list_display = ["room", "user", "group", "level"]
    list_filter = ["level", "room"]
    search_fields = ["user__username", "group__name", "room__name"]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        AuditEntry.record(request=request, action="access.change", detail=str(obj))

    def delete_model(self, request, obj):
        AuditEntry.record(request=request, action="access.remove", detail=str(obj))
        super().delete_model(request, obj)


@admin.register(Reading)
class ReadingAdmin(StaffManaged, admin.ModelAdmin):
    list_display = ["ts", "channel", "metric", "value", "resolution"]
    list_filter = ["metric", "resolution"]
    search_fields = ["channel__name", "channel__device__name"]
    date_hierarchy = "ts"
    list_select_related = ["channel__device"]


@admin.register(DeviceEvent)
class DeviceEventAdmin(StaffManaged, admin.ModelAdmin):
    list_display = ["ts", "device", "channel", "kind", "detail"]
    list_filter = ["kind"]
    search_fields = ["device__name", "device__mac", "detail"]
    date_hierarchy = "ts"
    list_select_related = ["device", "channel"]


@admin.register(AuditEntry)
class AuditEntryAdmin(StaffManaged, admin.ModelAdmin):
    list_display = ["ts", "username", "action", "device", "channel", "source_address", "result", "detail"]
    list_filter = ["result", "action"]
    search_fields = ["username", "action", "detail", "device__name"]
    date_hierarchy = "ts"

    # The audit trail is evidence: nobody edits it through the admin.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


# ----------------------------------------------------------------------------- household
class RoomAccessInline(StaffManaged, admin.TabularInline):
    model = RoomAccess
    extra = 0
    fields = ["room", "level"]


class GroupRoomAccessInline(RoomAccessInline):
    fk_name = "group"


class UserRoomAccessInline(RoomAccessInline):
    fk_name = "user"


def _audit_access_formset(request, formset, owner: str) -> None:
    """Record every room level added, changed or removed through an admin inline."""
    for obj in formset.new_objects:
        AuditEntry.record(request=request, action="access.change", detail=f"{owner}: added {obj}")
    for obj, fields in formset.changed_objects:
        AuditEntry.record(request=request, action="access.change", detail=f"{owner}: changed {obj} ({', '.join(fields)})")
    for obj in formset.deleted_objects:
        AuditEntry.record(request=request, action="access.remove", detail=f"{owner}: removed {obj}")


_ACCESS_FIELDS = {"is_active", "is_staff", "is_superuser", "groups", "user_permissions", "permissions", "password"}


class HouseholdUserAdmin(UserAdmin):
    """Django's user admin, plus the user's room levels inline; every change of rights is audited."""

    inlines = [*UserAdmin.inlines, UserRoomAccessInline]

    # Who may make whom staff, superuser, or give permissions/groups: access decides
    # (superusers only), so a staff account cannot raise itself or touch an administrator.
    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if not access.may_manage_privileges(request.user):
            fields += ["is_staff", "is_superuser", "groups", "user_permissions"]
        return fields

    def has_change_permission(self, request, obj=None):
        # Their own page stays theirs (name, e-mail); its privilege fields are read-only.
        if obj is not None and obj.pk != request.user.pk and not access.may_manage_member(request.user, obj):
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        if obj is not None and not access.may_manage_member(request.user, obj):
            return False
        return super().has_delete_permission(request, obj)

    def get_actions(self, request):
        actions = super().get_actions(request)
        if not access.may_manage_privileges(request.user):
            actions.pop("delete_selected", None)  # bulk delete checks no single member
        return actions

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        changed = sorted(set(form.changed_data) & _ACCESS_FIELDS)
        if not change:
            AuditEntry.record(request=request, action="member.create", detail=f"user {obj.get_username()} (admin)")
        elif changed:
            AuditEntry.record(request=request, action="access.change",
                              detail=f"user {obj.get_username()}: {', '.join(changed)} (admin)")

    def save_formset(self, request, form, formset, change):
        super().save_formset(request, form, formset, change)
        if formset.model is RoomAccess:
            _audit_access_formset(request, formset, f"user {form.instance.get_username()}")

    def user_change_password(self, request, id, form_url=""):
        response = super().user_change_password(request, id, form_url)
        if request.method == "POST":
            user = self.get_object(request, id)
            ok = response.status_code == 302
            AuditEntry.record(request=request, action="member.password",
                              result=AuditEntry.Result.OK if ok else AuditEntry.Result.FAILED,
                              detail=f"user {user.get_username() if user else id} (admin)")
        return response


class HouseholdGroupAdmin(GroupAdmin):
    inlines = [*GroupAdmin.inlines, GroupRoomAccessInline]

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if not access.may_manage_privileges(request.user):
            fields.append("permissions")  # a group's permissions pass to its members
        return fields

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if form.changed_data:
            AuditEntry.record(request=request, action="access.change",
                              detail=f"group {obj.name}: {', '.join(sorted(form.changed_data))} (admin)")

    def save_formset(self, request, form, formset, change):
        super().save_formset(request, form, formset, change)
        if formset.model is RoomAccess:
            _audit_access_formset(request, formset, f"group {form.instance.name}")


for _model, _admin in ((get_user_model(), HouseholdUserAdmin), (Group, HouseholdGroupAdmin)):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)
    admin.site.register(_model, _admin)
