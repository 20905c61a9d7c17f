"""Settings come from HOMEDASH_* variables; bad values fail at start naming the variable;
secrets are generated once, privately, in the data directory."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from homedash import config
from tests.payloads import REPO


@pytest.fixture
def env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("HOMEDASH_"):
            monkeypatch.delenv(name)

    def set_(name, value):
        monkeypatch.setenv("HOMEDASH_" + name, value)

    return set_


@pytest.mark.parametrize(
    ("name", "value", "reader"),
    [
        ("PORT", "eighty", lambda: config.bind()),
        ("PORT", "70000", lambda: config.bind()),
        ("HOST", "my-laptop", lambda: config.bind()),
        ("DEBUG", "maybe", lambda: config.env_bool("DEBUG", False)),
        ("DATABASE_URL", "mysql://u:p@db/home", lambda: config.database(REPO)),
        ("DATABASE_URL", "postgres://u:p@db/", lambda: config.database(REPO)),
        ("CHANNEL_LAYER", "rabbitmq://x", lambda: config.channel_layer()),
        ("LOG_LEVEL", "loud", lambda: config.env_choice("LOG_LEVEL", "INFO", ["DEBUG", "INFO"])),
        ("TIME_ZONE", "Mars/Olympus_Mons", lambda: config.env_time_zone("TIME_ZONE", "UTC")),
    ],
)
def test_bad_value_names_the_variable(env, name, value, reader):
    env(name, value)
    with pytest.raises(ImproperlyConfigured, match=f"HOMEDASH_{name}"):
        reader()


def test_bad_encryption_key_names_the_variable(env, tmp_path):
    env("ENCRYPTION_KEYS", "not-a-fernet-key")
    with pytest.raises(ImproperlyConfigured, match="HOMEDASH_ENCRYPTION_KEYS"):
        config.encryption_keys(tmp_path)


def test_good_values_are_read(env, tmp_path):
    env("PORT", "8080")
    env("HOST", "0.0.0.0")
    env("DEBUG", "yes")
    env("ALLOWED_HOSTS", "homedash.lan, 192.0.2.10")
    env("DATABASE_URL", "postgres://home:s%40cret@db.lan:5433/homedash")
    env("CHANNEL_LAYER", "redis://127.0.0.1:6379/1")
    assert config.bind() == config.Bind("0.0.0.0", 8080)
    assert config.env_bool("DEBUG", False) is True
    assert config.env_list("ALLOWED_HOSTS", []) == ["homedash.lan", "192.0.2.10"]
    db = config.database(tmp_path)
    assert (db["ENGINE"], db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]) == (
        "django.db.backends.postgresql", "homedash", "home", "s@cret", "db.lan", "5433")
    assert config.channel_layer()["BACKEND"] == "channels_redis.core.RedisChannelLayer"


def test_sqlite_default_uses_wal_and_a_busy_timeout(env, tmp_path):
    db = config.database(tmp_path)
    assert db["NAME"] == str(tmp_path / "homedash.sqlite3")
    assert "journal_mode=WAL" in db["OPTIONS"]["init_command"]
    assert db["OPTIONS"]["timeout"] >= 5


def test_secret_from_file(env, tmp_path):
    secret = tmp_path / "key.txt"
    secret.write_text("from-a-file\n")
    env("SECRET_KEY_FILE", str(secret))
    assert config.secret_key(tmp_path) == "from-a-file"
    env("SECRET_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured, match="HOMEDASH_SECRET_KEY_FILE"):
        config.secret_key(tmp_path)


def test_keys_are_generated_once_with_private_permissions(env, tmp_path):
    data = tmp_path / "data"
    env("DATA_DIR", str(data))
    directory = config.data_dir(REPO)
    assert directory == data and stat.S_IMODE(data.stat().st_mode) == 0o700

    first_secret = config.secret_key(directory)
    first_keys = config.encryption_keys(directory)
    for name in ("secret_key", "encryption_keys"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600
    assert len(first_secret) >= 50
    Fernet(first_keys[0])  # a usable key
    assert first_keys[0] not in first_secret  # two separate secrets
    # Stable across restarts.
    assert config.secret_key(directory) == first_secret
    assert config.encryption_keys(directory) == first_keys


def test_loosened_permissions_are_tightened(env, tmp_path):
    config.secret_key(tmp_path)
    (tmp_path / "secret_key").chmod(0o644)
    config.secret_key(tmp_path)
    assert stat.S_IMODE((tmp_path / "secret_key").stat().st_mode) == 0o600


def _manage(args, env_extra, tmp_path, umask=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMEDASH_")}
    env.update({"HOMEDASH_DATA_DIR": str(tmp_path / "data")}, **env_extra)
    return subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60,
                          preexec_fn=None if umask is None else (lambda: os.umask(umask)))


def test_manage_py_reports_a_bad_variable_without_traceback(tmp_path):
    result = _manage(["check"], {"HOMEDASH_PORT": "eighty"}, tmp_path)
    assert result.returncode == 2
    assert "HOMEDASH_PORT" in result.stderr and "eighty" in result.stderr
    assert "Traceback" not in result.stderr


def test_first_start_creates_its_secrets(tmp_path):
    result = _manage(["check"], {}, tmp_path)
    assert result.returncode == 0, result.stderr
    for name in ("secret_key", "encryption_keys"):
        path = tmp_path / "data" / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_existing_open_data_directory_is_made_private(env, tmp_path):
    """A directory made by hand or restored from a backup (0755, files 0644) is tightened."""
    data = tmp_path / "data"
    (data / "static" / "css").mkdir(parents=True)
    for path in (data, data / "static", data / "static" / "css"):
        path.chmod(0o755)
    for path in (data / "homedash.sqlite3", data / "secret_key", data / "debuglogs.json",
                 data / "static" / "css" / "app.css"):
        path.write_text("x")
        path.chmod(0o644)
    elsewhere = tmp_path / "not-ours.txt"  # a link out of the directory is not followed
    elsewhere.write_text("x")
    elsewhere.chmod(0o644)
    (data / "link").symlink_to(elsewhere)
    env("DATA_DIR", str(data))

    assert config.data_dir(REPO) == data

    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(data) == 0o700
    assert mode(data / "static") == 0o700 and mode(data / "static" / "css") == 0o700
    for name in ("homedash.sqlite3", "secret_key", "debuglogs.json", "static/css/app.css"):
        assert mode(data / name) == 0o600, name
    assert mode(elsewhere) == 0o644


def test_files_homedash_creates_are_private(tmp_path):
    """The umask is set before anything opens a file: the database SQLite creates, and its
    -wal and -shm files, are 0600 even in a directory that existed as 0755."""
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    script = (
        "import os, stat\n"
        "from django.conf import settings\n"
        "from django.db import connection\n"
        "with connection.cursor() as c:\n"
        "    c.execute('create table t (x)'); c.execute('insert into t values (1)')\n"
        "    for p in sorted(settings.DATA_DIR.iterdir()):\n"
        "        print('mode', p.name, oct(stat.S_IMODE(p.stat().st_mode)))\n"
    )
    # Started as a shell usually starts it (this test process already runs under 077).
    result = _manage(["shell", "-c", script], {}, tmp_path, umask=0o022)
    assert result.returncode == 0, result.stderr
    modes = dict(line.split()[1:] for line in result.stdout.splitlines() if line.startswith("mode "))
    assert {"homedash.sqlite3", "homedash.sqlite3-wal", "homedash.sqlite3-shm", "secret_key",
            "encryption_keys"} <= set(modes), modes
    assert set(modes.values()) == {"0o600"}, modes
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
