from __future__ import annotations

import pytest

from tests.security.secfixtures import build_secure_house


@pytest.fixture
def shouse(db):
    return build_secure_house()


@pytest.fixture(autouse=True)
def no_debuglog_hub(monkeypatch):
    """No log hub runs in these tests: answer at once instead of waiting for it."""
    from devices import debuglogs

    async def ask(message, timeout=0):
        if message.get("type") == "log.status":
            return {"ok": True, "status": {}}
        return {"ok": False, "error": "no hub in this test"}

    monkeypatch.setattr(debuglogs, "ask", ask)
