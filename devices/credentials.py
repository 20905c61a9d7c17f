"""Device credentials, encrypted at rest.

A Shelly password or a myStrom token opens a device to anyone who has it, so the database
only ever holds Fernet tokens made with homedash's own credential keys (not SECRET_KEY:
rotating one must not brick the other). MultiFernet decrypts with any configured key and
encrypts with the first, which is what key rotation needs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import models


@dataclass(frozen=True)
class Credentials:
    """What a device may need: Shelly Gen1 username + password, Shelly Gen2+ password
    (the user is always "admin"), myStrom token."""

    username: str = ""
    password: str = ""
    token: str = ""

    def __bool__(self) -> bool:
        return bool(self.password or self.token)

    def __repr__(self) -> str:  # never let a secret reach a log line through repr()
        parts = [f"username={self.username!r}"] if self.username else []
        parts += [f"{name}=<set>" for name in ("password", "token") if getattr(self, name)]
        return f"Credentials({', '.join(parts)})"

    __str__ = __repr__


class CredentialsUnreadable(Exception):
    """Stored credentials cannot be decrypted with any configured key."""


@dataclass(frozen=True, repr=False)
class LockedCredentials(Credentials):
    """Credentials we hold but cannot read (the key that made them is not configured).
    Saving the row keeps the ciphertext as it was: a misconfigured key must not wipe the
    household's device passwords."""

    ciphertext: str = ""

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "Credentials(<unreadable: encryption key missing>)"

    __str__ = __repr__


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.CREDENTIAL_KEYS))


def encrypt(creds: Credentials) -> str:
    return fernet().encrypt(json.dumps(asdict(creds)).encode()).decode()


def decrypt(token: str) -> Credentials:
    try:
        data = json.loads(fernet().decrypt(token.encode()))
    except (InvalidToken, ValueError) as exc:
        raise CredentialsUnreadable("stored device credentials cannot be decrypted with the configured keys") from exc
    return Credentials(**{k: str(data.get(k, "")) for k in ("username", "password", "token")})


def rotate(token: str) -> str:
    """Re-encrypt with the newest key (used by the key rotation command)."""
    return fernet().rotate(token.encode()).decode()


class EncryptedCredentialsField(models.TextField):
    """Holds a :class:`Credentials` in Python and a Fernet token in the database."""

    description = "Device credentials encrypted with the credential keys"

    def from_db_value(self, value, expression, connection):
        return self.to_python(value)

    def to_python(self, value):
        if isinstance(value, Credentials):
            return value
        if not value:
            return Credentials()
        try:
            return decrypt(value)
        except CredentialsUnreadable:
            return LockedCredentials(ciphertext=value)

    def get_prep_value(self, value):
        if isinstance(value, LockedCredentials):
            return value.ciphertext
        if value in (None, "") or (isinstance(value, Credentials) and not (value or value.username)):
            return ""
        if not isinstance(value, Credentials):
            raise TypeError("EncryptedCredentialsField stores Credentials objects only")
        return encrypt(value)

    def value_to_string(self, obj):
        # dumpdata gets the ciphertext, never the plaintext.
        return self.get_prep_value(self.value_from_object(obj))
