"""`manage.py rotate_keys`: re-encrypt every stored device credential with a new key.

Order matters so that a crash at any point loses nothing: first the new key is stored in
front of the old ones (everything stays readable), then every row is re-encrypted, then
every row is checked to open with the new key alone, and only then are the old keys
dropped. When the keys come from HOMEDASH_ENCRYPTION_KEYS rather than the data directory,
homedash cannot rewrite them: the command prints the value to set instead.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction

from devices.models import Device

TABLE = Device._meta.db_table


def _raw_rows() -> list[tuple[int, str]]:
    """(pk, ciphertext) of every device with stored credentials, straight from the column."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, credentials FROM {TABLE} WHERE credentials <> '' ORDER BY id")
        return list(cursor.fetchall())


def _write_keys(path: Path, keys: list[str]) -> None:
    """Replace the key file atomically, readable by its owner only."""
    tmp = path.with_name(path.name + ".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(",".join(keys) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class Command(BaseCommand):
    help = "Re-encrypt all device credentials with a new key, then retire the old key(s)."

    def add_arguments(self, parser):
        parser.add_argument("--new-key", help="Use this Fernet key instead of generating one.")
        parser.add_argument("--keep-old", action="store_true", help="Keep the old keys as fallbacks afterwards.")

    def handle(self, *args, new_key=None, keep_old=False, **options):
        new = new_key or Fernet.generate_key().decode()
        try:
            Fernet(new)
        except (ValueError, TypeError):
            raise CommandError("--new-key is not a Fernet key (32 url-safe base64 bytes)") from None
        old = [k for k in settings.CREDENTIAL_KEYS if k != new]
        key_file = Path(settings.DATA_DIR) / "encryption_keys"
        from_env = bool(os.environ.get("HOMEDASH_ENCRYPTION_KEYS") or os.environ.get("HOMEDASH_ENCRYPTION_KEYS_FILE"))

        # 1. New key first, old ones still there: nothing becomes unreadable, whatever happens next.
        both = [new, *old]
        if not from_env:
            _write_keys(key_file, both)
        settings.CREDENTIAL_KEYS = both
        rotator = MultiFernet([Fernet(k) for k in both])

        # 2. Re-encrypt row by row, on the raw column: no decrypted value leaves this loop.
        rotated = 0
        with transaction.atomic():
            for pk, token in _raw_rows():
                try:
                    fresh = rotator.rotate(token.encode()).decode()
                except InvalidToken:
                    raise CommandError(f"device {pk}: its credentials open with none of the configured keys; "
                                       "nothing was changed, fix the keys and run again") from None
                with connection.cursor() as cursor:
                    cursor.execute(f"UPDATE {TABLE} SET credentials = %s WHERE id = %s", [fresh, pk])
                rotated += 1

        # 3. Every row must open with the new key alone before the old ones go.
        only_new = Fernet(new)
        for pk, token in _raw_rows():
            try:
                only_new.decrypt(token.encode())
            except InvalidToken:
                raise CommandError(f"device {pk} does not open with the new key; old keys kept") from None

        final = both if keep_old else [new]
        if from_env:
            self.stdout.write("The keys come from HOMEDASH_ENCRYPTION_KEYS; set it to:\n" + ",".join(final))
        else:
            _write_keys(key_file, final)
        settings.CREDENTIAL_KEYS = final
        self.stdout.write(self.style.SUCCESS(
            f"Re-encrypted the credentials of {rotated} device(s); "
            + ("old keys kept as fallbacks." if keep_old else "old keys retired.")))
