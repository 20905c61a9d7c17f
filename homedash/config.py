"""Configuration from HOMEDASH_* environment variables, and the secrets homedash keeps for
itself in its data directory.

Every reader names its variable in the error, so a typo fails at start with a message the
household can act on instead of a traceback from deep inside Django.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from django.core.exceptions import ImproperlyConfigured

PREFIX = "HOMEDASH_"
TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off"}


def _raw(name: str) -> str | None:
    value = os.environ.get(PREFIX + name)
    if value is None:
        return None
    value = value.strip()
    return value if value != "" else None


def _fail(name: str, message: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"{PREFIX}{name}: {message}")


def env_str(name: str, default: str | None = None) -> str | None:
    value = _raw(name)
    return default if value is None else value


def env_bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None:
        return default
    if value.lower() in TRUE:
        return True
    if value.lower() in FALSE:
        return False
    raise _fail(name, f"expected true or false, got {value!r}")


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    value = _raw(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise _fail(name, f"expected a whole number, got {value!r}") from None
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise _fail(name, f"expected a number from {minimum} to {maximum}, got {number}")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    value = _raw(name)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def env_secret(name: str) -> str | None:
    """A secret given directly or, for container secrets, as HOMEDASH_<NAME>_FILE."""
    value = _raw(name)
    if value is not None:
        return value
    path = _raw(name + "_FILE")
    if path is None:
        return None
    try:
        return Path(path).read_text().strip() or None
    except OSError as exc:
        raise _fail(name + "_FILE", f"cannot read {path!r}: {exc.strerror}") from None


def env_address(name: str, default: str) -> str:
    """An IP address to bind to (no host names: binding must not depend on DNS)."""
    value = _raw(name) or default
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise _fail(name, f"expected an IP address such as 127.0.0.1 or 0.0.0.0, got {value!r}") from None


# ----------------------------------------------------------------------------- data dir
# The data directory holds the household's secrets (the session key, the key that decrypts
# the devices' passwords, the database): nobody but homedash's own user may read any of it.
PRIVATE_DIR = 0o700


def data_dir(base_dir: Path) -> Path:
    raw = _raw("DATA_DIR")
    path = Path(raw).expanduser() if raw else base_dir / "var"
    if not path.is_absolute():
        path = (Path.cwd() / path).resolve()
    # Before anything opens a file: SQLite creates its -wal, -shm and journal files itself,
    # collectstatic and the debug-log state write their own, and all of them take their mode
    # from the process umask.
    os.umask(0o077)
    try:
        path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    except OSError as exc:
        raise _fail("DATA_DIR", f"cannot create {str(path)!r}: {exc.strerror}") from None
    if not os.access(path, os.W_OK):
        raise _fail("DATA_DIR", f"{str(path)!r} is not writable")
    tighten(path)
    return path


def _tighten_one(path: Path) -> None:
    """Take group and other rights away (the owner's stay as they were)."""
    try:
        info = path.lstat()
    except OSError:
        return
    if stat.S_ISLNK(info.st_mode) or info.st_uid != os.getuid():
        return  # never follow a link out of the directory, never touch someone else's file
    if stat.S_IMODE(info.st_mode) & 0o077:
        try:
            path.chmod(stat.S_IMODE(info.st_mode) & 0o700)
        except OSError:
            pass


def tighten(directory: Path) -> None:
    """An existing data directory may come from an older homedash, a backup restored with
    default modes or a hand-made `mkdir` (0755, files 0644): take group and other rights
    away from the directory, the files directly in it and the collected static tree. Only
    those: a data directory pointed at a shared place keeps the rest of it as it was."""
    _tighten_one(directory)
    try:
        entries = list(directory.iterdir())
    except OSError:
        return
    for entry in entries:
        if entry.is_file() and not entry.is_symlink():
            _tighten_one(entry)
    static = directory / "static"
    if static.is_dir() and not static.is_symlink():
        for root, dirs, files in os.walk(static):
            _tighten_one(Path(root))
            for name in files:
                _tighten_one(Path(root) / name)


def _write_private(path: Path, content: str) -> None:
    """Create a file only its owner can read, without a window where it is world-readable."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content + "\n")


def _read_private(path: Path) -> str:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        # Someone loosened it; put it back rather than refuse to start.
        path.chmod(0o600)
    return path.read_text().strip()


def stored_secret(directory: Path, filename: str, make) -> str:
    """Read a secret kept in the data directory, generating it on first start."""
    path = directory / filename
    if not path.exists():
        try:
            _write_private(path, make())
        except FileExistsError:  # another process won the race: use its value
            pass
    return _read_private(path)


def secret_key(directory: Path) -> str:
    return env_secret("SECRET_KEY") or stored_secret(
        directory, "secret_key", lambda: secrets.token_urlsafe(50)
    )


def encryption_keys(directory: Path) -> list[str]:
    """Fernet keys for device credentials, newest first. Separate from SECRET_KEY so that
    rotating one never makes the stored credentials unreadable."""
    from cryptography.fernet import Fernet

    raw = env_secret("ENCRYPTION_KEYS")
    keys = (
        [k.strip() for k in raw.split(",") if k.strip()]
        if raw
        else stored_secret(directory, "encryption_keys", lambda: Fernet.generate_key().decode()).split(",")
    )
    for key in keys:
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise _fail(
                "ENCRYPTION_KEYS",
                "each key must be a Fernet key (32 url-safe base64 bytes, 44 characters)",
            ) from None
    return keys


# ----------------------------------------------------------------------------- database
def database(directory: Path) -> dict:
    url = _raw("DATABASE_URL")
    if url is None or url.startswith("sqlite:"):
        path = directory / "homedash.sqlite3"
        if url is not None:
            rest = url[len("sqlite:"):].removeprefix("//")
            if rest not in ("", "/"):
                path = Path(rest if rest.startswith("/") else Path.cwd() / rest)
                # A database kept outside the data directory is just as private.
                for suffix in ("", "-wal", "-shm", "-journal"):
                    _tighten_one(path.with_name(path.name + suffix))
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(path),
            # WAL lets the runtime write readings while pages read; the busy timeout and
            # IMMEDIATE transactions avoid "database is locked" under that concurrency.
            "OPTIONS": {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            "TEST": {"NAME": str(directory / "test-homedash.sqlite3")},
        }
    parsed = urlparse(url)
    if parsed.scheme not in ("postgres", "postgresql"):
        raise _fail("DATABASE_URL", f"expected sqlite:///path or postgres://user:pass@host/db, got scheme {parsed.scheme!r}")
    if not parsed.path.strip("/"):
        raise _fail("DATABASE_URL", "the PostgreSQL URL names no database")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parsed.path.lstrip("/")),
        "USER": unquote(parsed.username or ""),
        "PASSWORD": unquote(parsed.password or ""),
        "HOST": parsed.hostname or "",
        "PORT": str(parsed.port or ""),
        "CONN_MAX_AGE": 60,
    }


def channel_layer() -> dict:
    value = _raw("CHANNEL_LAYER") or "memory"
    if value == "memory":
        return {
            "BACKEND": "homedash.layers.HouseholdChannelLayer",
            # Consumers re-join their groups periodically, and the expiry is raised too:
            # sockets stay open for days on a wall-mounted tablet.
            "CONFIG": {"capacity": 500, "group_expiry": 7 * 86400},
        }
    if value.startswith(("redis://", "rediss://", "unix://")):
        return {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [value], "capacity": 2000, "expiry": 15, "group_expiry": 7 * 86400},
        }
    raise _fail("CHANNEL_LAYER", f"expected 'memory' or a redis://host:port/db URL, got {value!r}")


@dataclass(frozen=True)
class Bind:
    host: str
    port: int


def bind() -> Bind:
    return Bind(env_address("HOST", "127.0.0.1"), env_int("PORT", 8000, minimum=1, maximum=65535))


def env_choice(name: str, default: str, choices: list[str]) -> str:
    value = (_raw(name) or default).upper()
    if value not in choices:
        raise _fail(name, f"expected one of {', '.join(choices)}, got {value!r}")
    return value


def env_time_zone(name: str, default: str) -> str:
    import zoneinfo

    value = _raw(name) or default
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise _fail(name, f"unknown time zone {value!r} (use a name like Europe/Zurich)") from None
    return value
