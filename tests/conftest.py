"""Shared fixtures for the whole suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.payloads import PAYLOADS, REPO, load_payload, payload_files  # noqa: F401  (re-exported)


@pytest.fixture
def payload():
    """payload("shelly", "gen1_SHSW-1_Shelly1__GET_status.json") -> parsed JSON, or skip."""
    return load_payload


@pytest.fixture(autouse=True, scope="session")
def fast_password_hashing():
    """Real hashing costs ~0.5 s per user; the tests create many. (Servers started by tests
    keep the real hasher.)"""
    from django.test import override_settings

    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


@pytest.fixture(autouse=True)
def fresh_cache():
    """Nothing a test leaves in Django's (in-process) cache, such as an account's failed
    log-ins counted by homedash/slowdown.py, reaches the next test."""
    from django.core.cache import cache

    cache.clear()
    yield


def pytest_configure(config):
    """The suite never runs in the household's data directory (./var by default): its test
    database, debug-log state and collected files would land beside the household's. pytest-django
    loads the settings before this file, so the directory is chosen outside: `make test`
    makes a temporary one and removes it afterwards."""
    from django.conf import settings

    household = (REPO / "var").resolve()
    data = Path(settings.DATA_DIR).resolve()
    if data == household or household in data.parents:
        pytest.exit(
            f"the tests would use {data}, the household's data directory: run `make test` / "
            "`make test-fast`, or set HOMEDASH_DATA_DIR=$(mktemp -d)", returncode=4)
