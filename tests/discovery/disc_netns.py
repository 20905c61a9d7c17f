"""Run a helper script inside a private network namespace (``unshare -rn``): a sealed
loopback with multicast switched on, where mDNS may be sent and 127.x.y.z:80 bound without
a single packet reaching a real network (engineering.md §0).

Any suite may use it: ``result = run_json_in_netns(script, args)``. When namespaces are
not available the caller skips — except under ``CI=true``, where a skipped mDNS test would
hide a broken build, so it fails instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SETUP = "ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"private network namespace required under CI=true: {reason}")
    pytest.skip(reason)


def require_private_netns() -> None:
    """Skip (or fail under CI) unless ``unshare -rn`` plus loopback multicast works."""
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            _unavailable(f"{tool!r} is not installed")
    try:
        probe = subprocess.run(["unshare", "-rn", "sh", "-c", SETUP], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        _unavailable(f"unshare -rn failed: {exc}")
    if probe.returncode != 0:
        _unavailable(f"unshare -rn is not permitted here: {probe.stderr.strip()[:200]}")


def run_json_in_netns(script: Path, args: list[str] | None = None, *, timeout: float = 60.0) -> Any:
    """Run ``python script args...`` in a fresh namespace; its last stdout line is JSON."""
    require_private_netns()
    env = {**os.environ, "HOMEDASH_PRIVATE_NETNS": "1", "PYTHONPATH": str(REPO)}
    command = f'{SETUP} && exec "$0" "$@"'
    proc = subprocess.run(
        ["unshare", "-rn", "sh", "-c", command, sys.executable, str(script), *(args or [])],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO,
    )
    if proc.returncode != 0:
        raise AssertionError(f"{script.name} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if not lines:
        raise AssertionError(f"{script.name} printed nothing:\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1])
