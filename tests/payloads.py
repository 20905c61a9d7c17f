"""Real device captures in ../shared/payloads, read at test time (never copied into the
repository). Import from here (`from tests.payloads import ...`): several folders have a
conftest.py, so `import conftest` would be ambiguous."""

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
