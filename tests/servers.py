"""Start the real `manage.py serve` as a subprocess for tests that need a live server
(browser tests, websocket tests over the wire). It binds to loopback on a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    def __init__(self, data_dir: Path, *, extra_env: dict[str, str] | None = None, args: list[str] | None = None):
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = extra_env or {}
        self.args = args or []
        self.process: subprocess.Popen | None = None
        self.output = ""
        self.ready_after: float | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOMEDASH_")}
        env.update({"HOMEDASH_DATA_DIR": str(self.data_dir), "HOMEDASH_ALLOW_LOOPBACK_DEVICES": "true",
                    "HOMEDASH_DISCOVERY": "false", "HOMEDASH_COIOT_PORT": "0",
                    "HOMEDASH_DISCOVERY_BIND": "127.0.0.1", "HOMEDASH_MDNS": "false", "PYTHONUNBUFFERED": "1"}, **self.extra_env)
        return env

    def manage(self, *args: str, timeout: float = 60.0) -> str:
        """Run another manage.py command against the same data directory (e.g. to put
        devices in its database before or while it serves)."""
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=self.env(),
                                capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def start(self, timeout: float = 30.0) -> "LiveServer":
        env = self.env()
        started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(self.port), *self.args],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited early:\n{self.process.stdout.read()}")
            try:
                body = httpx.get(self.url + "/healthz", timeout=1).json()
                if body.get("runtime") == "running" or "--no-runtime" in self.args:
                    self.ready_after = time.monotonic() - started
                    return self
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"serve did not become ready in {timeout} s:\n{self.output}")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            out, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
        self.output += out or ""
        code = self.process.returncode
        self.process = None
        return code

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
