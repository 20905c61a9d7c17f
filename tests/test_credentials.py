"""Device credentials are encrypted at rest, readable only with the credential keys, and
never appear in plaintext in the database file."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.db import connection

from devices import credentials as creds_module
from devices.credentials import Credentials, LockedCredentials
from devices.models import Device

PASSWORD = "Plaintext-Shelly-Pw-7391"
TOKEN = "Plaintext-myStrom-Token-2280"


def test_repr_never_shows_secrets():
    creds = Credentials(username="admin", password=PASSWORD, token=TOKEN)
    assert PASSWORD not in repr(creds) and TOKEN not in str(creds)


def test_round_trip_and_rotation(settings):
    old = Fernet.generate_key().decode()
    settings.CREDENTIAL_KEYS = [old]
    token = creds_module.encrypt(Credentials(password=PASSWORD))
    new = Fernet.generate_key().decode()
    # The new key first, the old one kept as a fallback: old tokens still read...
    settings.CREDENTIAL_KEYS = [new, old]
    assert creds_module.decrypt(token).password == PASSWORD
    rotated = creds_module.rotate(token)
    # ...and after rotation the old key is no longer needed.
    settings.CREDENTIAL_KEYS = [new]
    assert creds_module.decrypt(rotated).password == PASSWORD
    with pytest.raises(creds_module.CredentialsUnreadable):
        creds_module.decrypt(token)


@pytest.mark.django_db(transaction=True)
def test_plaintext_never_reaches_the_database_file():
    device = Device.objects.create(mac="AABBCC112233", vendor="shelly", generation=2, host="192.0.2.5",
                                   credentials=Credentials(password=PASSWORD))
    switch = Device.objects.create(mac="AABBCC112234", vendor="mystrom", host="192.0.2.6",
                                   credentials=Credentials(token=TOKEN))
    assert Device.objects.get(pk=device.pk).credentials.password == PASSWORD
    assert Device.objects.get(pk=switch.pk).credentials.token == TOKEN
    assert Device.objects.get(pk=device.pk).has_credentials

    with connection.cursor() as cursor:
        cursor.execute("SELECT credentials FROM devices_device WHERE id = %s", [device.pk])
        stored = cursor.fetchone()[0]
        cursor.execute("PRAGMA wal_checkpoint(FULL)")
    assert stored.startswith("gAAAA") and PASSWORD not in stored

    name = Path(connection.settings_dict["NAME"])
    assert name.is_file(), "the test database must be a real file for this check"
    for path in [name, name.with_name(name.name + "-wal")]:
        if path.exists():
            raw = path.read_bytes()
            assert PASSWORD.encode() not in raw and TOKEN.encode() not in raw


@pytest.mark.django_db
def test_unreadable_credentials_are_kept_not_wiped(settings):
    device = Device.objects.create(mac="AABBCC112235", vendor="shelly", host="192.0.2.7",
                                   credentials=Credentials(password=PASSWORD))
    settings.CREDENTIAL_KEYS = [Fernet.generate_key().decode()]  # the old key is lost
    loaded = Device.objects.get(pk=device.pk)
    assert isinstance(loaded.credentials, LockedCredentials)
    assert not loaded.credentials and loaded.has_credentials
    loaded.name = "renamed while the key was missing"
    loaded.save()
    with connection.cursor() as cursor:
        cursor.execute("SELECT credentials FROM devices_device WHERE id = %s", [device.pk])
        assert cursor.fetchone()[0] == loaded.credentials.ciphertext


def test_mac_is_normalised():
    from django.core.exceptions import ValidationError

    from devices.models import normalise_mac

    assert normalise_mac("aa:bb:cc:dd:ee:ff") == "AABBCCDDEEFF"
    assert normalise_mac("AA-BB-CC-DD-EE-01") == "AABBCCDDEE01"
    for bad in ["", "AABBCC", "GGBBCCDDEEFF", "AA:BB:CC:DD:EE:FF:00", "<script>"]:
        with pytest.raises(ValidationError):
            normalise_mac(bad)
