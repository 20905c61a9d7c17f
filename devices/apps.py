from django.apps import AppConfig
from django.db import transaction
from django.db.models.signals import post_delete, post_save


def _device_saved(sender, instance, created=False, **kwargs):
    if sender.__name__ == "Device":
        device_pk, channel_pk = instance.pk, None
        if not instance.adopted and (created or kwargs.get("signal") is post_delete):
            # A device entering or leaving the inbox was never followed: the runtime has
            # nothing to re-read (a flood of announcements must not reload it per packet).
            return
    else:
        device_pk, channel_pk = instance.device_id, instance.pk

    from devices.cards import forget_cards

    def forget():
        forget_cards(device_pk=device_pk) if channel_pk is None else forget_cards(channel_pk=channel_pk)

    def tell_runtime():
        from devices.runtime.manager import device_changed_from_sync_code

        forget()  # again: a page drawn before the commit may have cached the old row
        device_changed_from_sync_code(device_pk)

    forget()

    # After the commit, not now: the runtime re-reads the row from another thread (another
    # connection), which until then still sees the old host and credentials — the admin
    # saves inside a transaction, and a reload at post_save applied each edit one save late.
    # Outside a transaction on_commit runs at once.
    transaction.on_commit(tell_runtime)


class DevicesConfig(AppConfig):
    name = "devices"
    verbose_name = "Devices"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Adopting, editing, re-addressing or deleting a device (or renaming / moving a
        # channel) takes effect in the runtime at once, wherever it runs.
        from devices.models import Channel, Device

        for model in (Device, Channel):
            post_save.connect(_device_saved, sender=model, dispatch_uid=f"runtime-{model.__name__}-save")
            post_delete.connect(_device_saved, sender=model, dispatch_uid=f"runtime-{model.__name__}-delete")
