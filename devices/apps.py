from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


def _device_saved(sender, instance, **kwargs):
    from devices.cards import forget_cards
    from devices.runtime.manager import device_changed_from_sync_code

    if sender.__name__ == "Device":
        device_pk = instance.pk
        forget_cards(device_pk=device_pk)
    else:
        device_pk = instance.device_id
        forget_cards(channel_pk=instance.pk)
    device_changed_from_sync_code(device_pk)


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
