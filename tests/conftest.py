"""Shared fixtures for the whole suite."""

from __future__ import annotations

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
