"""Shared fixtures: the real device captures in ../shared/payloads (read at test time,
never copied into the repository)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAYLOADS = (REPO.parent / "shared" / "payloads").resolve()


def payload_files(vendor: str, pattern: str = "*.json") -> list[Path]:
    """Capture files of one vendor; empty when ../shared is absent (tests then skip)."""
    folder = PAYLOADS / vendor
    return sorted(folder.glob(pattern)) if folder.is_dir() else []


def load_payload(vendor: str, name: str):
    path = PAYLOADS / vendor / name
    if not path.is_file():
        pytest.skip(f"real capture {vendor}/{name} not available (../shared/payloads is absent)")
    return json.loads(path.read_text())


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
