"""`rotate_keys` re-encrypts every credential with a new key and retires the old one only
once every row opens with the new key."""

from __future__ import annotations

import stat

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection

from devices.credentials import Credentials
from devices.models import Device

pytestmark = pytest.mark.django_db


def _raw(pk):
    with connection.cursor() as cursor:
        cursor.execute("SELECT credentials FROM devices_device WHERE id = %s", [pk])
        return cursor.fetchone()[0]


def test_rotation_with_keys_in_the_data_dir(settings, tmp_path, monkeypatch):
    monkeypatch.delenv("HOMEDASH_ENCRYPTION_KEYS", raising=False)
    old = Fernet.generate_key().decode()
    settings.DATA_DIR = tmp_path
    settings.CREDENTIAL_KEYS = [old]
    (tmp_path / "encryption_keys").write_text(old + "\n")
    a = Device.objects.create(mac="AABBCC000020", vendor="shelly", host="10.1.2.3", credentials=Credentials(password="pw-one-11"))
    b = Device.objects.create(mac="AABBCC000021", vendor="mystrom", host="10.1.2.4", credentials=Credentials(token="tok-two-22"))
    Device.objects.create(mac="AABBCC000022", vendor="mystrom", host="10.1.2.5")  # no credentials
    before = {a.pk: _raw(a.pk), b.pk: _raw(b.pk)}

    call_command("rotate_keys", stdout=open("/dev/null", "w"))

    keys = (tmp_path / "encryption_keys").read_text().strip().split(",")
    assert len(keys) == 1 and keys[0] != old
    assert stat.S_IMODE((tmp_path / "encryption_keys").stat().st_mode) == 0o600
    for pk, secret in ((a.pk, "pw-one-11"), (b.pk, "tok-two-22")):
        assert _raw(pk) != before[pk]
        assert secret in Fernet(keys[0]).decrypt(_raw(pk).encode()).decode()
    assert Device.objects.get(pk=a.pk).credentials.password == "pw-one-11"
    assert Device.objects.get(pk=b.pk).credentials.token == "tok-two-22"


def test_unreadable_rows_stop_the_rotation_and_keep_the_old_keys(settings, tmp_path, monkeypatch):
    monkeypatch.delenv("HOMEDASH_ENCRYPTION_KEYS", raising=False)
    old = Fernet.generate_key().decode()
    settings.DATA_DIR = tmp_path
    settings.CREDENTIAL_KEYS = [old]
    (tmp_path / "encryption_keys").write_text(old + "\n")
    stranger = Fernet(Fernet.generate_key()).encrypt(b'{"password": "x"}').decode()
    device = Device.objects.create(mac="AABBCC000023", vendor="shelly", host="10.1.2.6")
    with connection.cursor() as cursor:
        cursor.execute("UPDATE devices_device SET credentials = %s WHERE id = %s", [stranger, device.pk])
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="none of the configured keys"):
        call_command("rotate_keys", stdout=open("/dev/null", "w"))
    keys = (tmp_path / "encryption_keys").read_text().strip().split(",")
    assert old in keys and _raw(device.pk) == stranger  # nothing lost
