"""Shared pieces of the benchmarks: the machine, /proc readings, statistics, a `serve`
subprocess, a simulated household subprocess, log-in, and the result rows the report is
made of. Everything binds and talks to loopback only."""

from __future__ import annotations

import gzip
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
# Data dirs and logs of this run: a private temporary directory, never the household's ./var
# (bench/run.py makes it, exports it to its children and removes it after a clean run).
WORK = Path(os.environ.get("HOMEDASH_BENCH_WORK") or tempfile.mkdtemp(prefix="homedash-bench-"))
PASSWORD = "bench-household-pw-1"
USER = "demo"
CLK_TCK = os.sysconf("SC_CLK_TCK")


class SkipItem(Exception):
    """An item that cannot run on this machine (no Chromium, say): reported, not failed."""


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise SkipItem("Chromium is not installed (`make chromium` installs Debian's as root)")
    return path


# ----------------------------------------------------------------------------- machine
def machine() -> dict[str, Any]:
    mem_kb = 0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    model = ""
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    chromium = shutil.which("chromium") or ""
    chromium_version = ""
    if chromium:
        try:
            chromium_version = subprocess.run([chromium, "--version"], capture_output=True, text=True,
                                              timeout=20).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            pass
    return {
        "cores": os.cpu_count(), "memory_gib": round(mem_kb / 1024 / 1024, 1), "cpu": model,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "kernel": platform.release(), "chromium": chromium_version,
    }


def loadavg() -> float:
    with open("/proc/loadavg") as fh:
        return float(fh.read().split()[0])


# ----------------------------------------------------------------------------- /proc
def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of one process (not its children)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def descendants_cpu(root: int, needle: str) -> float:
    """CPU seconds of the live descendants of `root` whose command line contains `needle`
    (the Chromium processes Playwright started for the harness)."""
    parents: dict[int, int] = {}
    cmdlines: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                parents[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdlines[int(entry)] = fh.read().decode(errors="replace")
        except OSError:
            continue
    total = 0.0
    for pid, cmd in cmdlines.items():
        if needle not in cmd:
            continue
        p, seen = pid, 0
        while p > 1 and seen < 64:
            p = parents.get(p, 0)
            seen += 1
            if p == root:
                try:
                    total += cpu_seconds(pid)
                except OSError:
                    pass
                break
    return total


# ----------------------------------------------------------------------------- statistics
def percentile(values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return float("nan")
    data = sorted(values)
    k = (len(data) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def median(values: list[float]) -> float:
    return percentile(values, 50)


def fmt(value: float, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


# ----------------------------------------------------------------------------- results
@dataclass
class Figure:
    """One line of the report: the value of every repeated run, its target and verdict."""

    name: str
    unit: str
    runs: list[float]
    target: str = ""
    limit: float | None = None       # the target as a number, if it is one
    lower_is_better: bool = True
    digits: int = 1
    note: str = ""
    spread_kind: str = "min–max"     # or "p10–p90" when runs are many samples
    show_verdicts = True             # class-wide: off in the quick mode (sizes too small for claims)

    @property
    def median(self) -> float:
        return median(self.runs)

    def spread(self) -> str:
        if not self.runs:
            return "–"
        if len(self.runs) == 1:
            return "(1 run)"
        if self.spread_kind == "p10–p90":
            return f"{fmt(percentile(self.runs, 10), self.digits)}–{fmt(percentile(self.runs, 90), self.digits)}"
        return f"{fmt(min(self.runs), self.digits)}–{fmt(max(self.runs), self.digits)}"

    def verdict(self) -> str:
        if not Figure.show_verdicts:
            return "(quick mode)" if self.limit is not None else ""
        if self.limit is None or not self.runs or math.isnan(self.median):
            return "" if self.limit is None else "not measured"
        m = self.median
        ok = m <= self.limit if self.lower_is_better else m >= self.limit
        if ok:
            return "met"
        if self.unit == "×":
            return f"**missed**: {fmt(m, self.digits)}× where the target is {'≤' if self.lower_is_better else '≥'} {fmt(self.limit, self.digits)}×"
        if self.lower_is_better:
            by = m - self.limit
            ratio = m / self.limit if self.limit else float("inf")
        else:
            by = self.limit - m
            ratio = self.limit / m if m else float("inf")
        return f"**missed** by {fmt(by, self.digits)} {self.unit} ({ratio:.1f}×)".replace("  ", " ")

    def row(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return (f"| {self.name} | {fmt(self.median, self.digits)}{unit} | {self.spread()} | {len(self.runs)} "
                f"| {self.target} | {self.verdict()} | {self.note} |")


@dataclass
class Section:
    key: str
    title: str
    method: str
    figures: list[Figure] = field(default_factory=list)
    extra: str = ""        # more markdown (a per-run table, findings)
    seconds: float = 0.0
    error: str = ""
    skipped: bool = False

    def markdown(self) -> str:
        out = [f"## {self.title}", "", self.method.strip(), ""]
        if self.error:
            out += [f"**Not measured in this run:** {self.error}", ""]
        if self.figures:
            spread_kinds = {f.spread_kind for f in self.figures}
            spread = "spread (" + "/".join(sorted(spread_kinds)) + ")"
            out += [f"| figure | median | {spread} | runs | target | verdict | note |",
                    "|---|---:|---:|---:|---|---|---|"]
            out += [f.row() for f in self.figures]
            out.append("")
        if self.extra:
            out += [self.extra.strip(), ""]
        out.append(f"_Took {self.seconds:.0f} s in this run._")
        out.append("")
        return "\n".join(out)


# ----------------------------------------------------------------------------- processes
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMEDASH_")}
    env.update({
        "HOMEDASH_DATA_DIR": str(data_dir), "HOMEDASH_ALLOW_LOOPBACK_DEVICES": "true",
        "HOMEDASH_DISCOVERY": "false", "HOMEDASH_COIOT_PORT": "0", "HOMEDASH_DISCOVERY_BIND": "127.0.0.1",
        "HOMEDASH_MDNS": "false", "HOMEDASH_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


class Server:
    """`manage.py serve` on a free loopback port, its output in a log file."""

    def __init__(self, data_dir: Path, profile: Path | None = None) -> None:
        self.profile = profile    # run serve under cProfile, stats written here at stop
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.log_path = data_dir / "serve.log"
        self.ready_after: float | None = None

    def manage(self, *args: str, timeout: float = 300.0, **env: str) -> str:
        result = subprocess.run([PY, "manage.py", *args], cwd=REPO, env=server_env(self.data_dir, **env),
                                capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def prepare(self, rows: list[dict] | None = None) -> None:
        """The household user, rooms and devices (via `manage.py demo --prepare`). A fresh
        data directory starts as a copy of one migrated once per run (saves the migrations)."""
        if not (self.data_dir / "homedash.sqlite3").exists():
            template = migrated_template()
            for item in template.iterdir():
                if item.is_file() and item.name != "serve.log":
                    shutil.copy2(item, self.data_dir / item.name)
        rows_file = self.data_dir / "rows.json"
        rows_file.write_text(json.dumps(rows or []))
        self.manage("demo", "--prepare", str(rows_file), "--password", PASSWORD, HOMEDASH_DEMO="true")

    def start(self, timeout: float = 90.0) -> float:
        """Start and wait for /healthz to say the runtime runs; returns seconds to ready."""
        import httpx

        log = open(self.log_path, "a")
        started = time.monotonic()
        prefix = [PY] + (["-m", "cProfile", "-o", str(self.profile)] if self.profile else [])
        self.process = subprocess.Popen(
            prefix + ["manage.py", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=REPO, env=server_env(self.data_dir), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = started + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"serve exited early:\n{self.log_path.read_text()[-3000:]}")
                try:
                    body = client.get(self.url + "/healthz").json()
                    if body.get("runtime") == "running":
                        self.ready_after = time.monotonic() - started
                        return self.ready_after
                except (httpx.HTTPError, ValueError):
                    pass
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"serve was not ready after {timeout} s:\n{self.log_path.read_text()[-3000:]}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> float:
        return rss_mb(self.pid)

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    # -- the database, read directly (sqlite, WAL: reading beside the server is fine)
    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        con = sqlite3.connect(f"file:{self.data_dir / 'homedash.sqlite3'}?mode=ro", uri=True, timeout=10)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()

    def channel_ids(self) -> dict[tuple[str, str], int]:
        """(device MAC, channel key) -> channel pk (the card's DOM id is channel-<pk>)."""
        rows = self.query("SELECT c.id, d.mac, c.key FROM devices_channel c JOIN devices_device d ON c.device_id = d.id")
        return {(mac, key): pk for pk, mac, key in rows}

    def wait_for_channels(self, keys: set[tuple[str, str]], timeout: float = 120.0) -> dict[tuple[str, str], int]:
        """The runtime creates channel rows when a device first reports: wait for them."""
        deadline = time.monotonic() + timeout
        ids: dict = {}
        while time.monotonic() < deadline:
            ids = self.channel_ids()
            if keys <= set(ids):
                return ids
            time.sleep(0.2)
        missing = len(keys - set(ids))
        raise RuntimeError(f"{missing} of {len(keys)} channels never appeared in the database")

    def wait_channel_count(self, minimum: int, timeout: float = 120.0, settle: float = 3.0) -> int:
        """Wait until at least `minimum` channels exist and the count stopped growing."""
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            (count,), = self.query("SELECT count(*) FROM devices_channel")
            if count != last:
                last, since = count, time.monotonic()
            elif count >= minimum and time.monotonic() - since >= settle:
                return count
            time.sleep(0.5)
        return last

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


_TEMPLATE: Path | None = None


def migrated_template() -> Path:
    global _TEMPLATE
    if _TEMPLATE is None:
        path = WORK / "template"
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        result = subprocess.run([PY, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=REPO,
                                env=server_env(path), capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"migrate failed:\n{result.stdout}\n{result.stderr}")
        con = sqlite3.connect(path / "homedash.sqlite3")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()
        _TEMPLATE = path
    return _TEMPLATE


def login(url: str) -> dict[str, str]:
    """Log in as the household user; returns the cookies (sessionid, csrftoken)."""
    import httpx

    with httpx.Client(base_url=url, timeout=20.0, follow_redirects=False) as client:
        page = client.get("/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert token is not None, "no CSRF token on the login page"
        reply = client.post("/login/", data={"username": USER, "password": PASSWORD,
                                              "csrfmiddlewaretoken": token.group(1)},
                            headers={"Referer": url + "/login/", "Origin": url})
        if reply.status_code not in (302, 303):
            raise RuntimeError(f"login failed: HTTP {reply.status_code}")
        return dict(client.cookies.items())


class SimHouse:
    """bench/simhouse.py in a subprocess: the devices, and JSON-line commands."""

    def __init__(self, models: list[str], count: int | None, work: Path, *, seed: int = 11,
                 poll_interval: float = 5.0, update_period: float = 15.0) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.rows_path = work / f"sim-rows-{secrets.token_hex(3)}.json"
        self.log_path = work / "simhouse.log"
        args = [PY, str(REPO / "bench" / "simhouse.py"), "--models", ",".join(models), "--rows", str(self.rows_path),
                "--seed", str(seed), "--poll-interval", str(poll_interval), "--update-period", str(update_period)]
        if count is not None:
            args += ["--count", str(count)]
        log = open(self.log_path, "a")
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOMEDASH_")}
        env["HOMEDASH_DATA_DIR"] = str(work / "sim-data")  # settings want one; the simulator never writes it
        self.process = subprocess.Popen(args, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=log, text=True, env=env)
        log.close()
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(10)
            raise RuntimeError(f"simulator did not start:\n{self.log_path.read_text()[-3000:]}")
        self.ready = json.loads(line)
        self.rows = json.loads(self.rows_path.read_text())

    @property
    def pid(self) -> int:
        return self.process.pid

    def request(self, **message: Any) -> dict:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"simulator died:\n{self.log_path.read_text()[-3000:]}")
        return json.loads(line)

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.process.stdin.close()
            except (BrokenPipeError, ValueError):
                pass
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> SimHouse:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def profile_table(path: Path, top: int = 12) -> str:
    """The functions that took the most time in a cProfile dump, as markdown."""
    import pstats

    stats = pstats.Stats(str(path))
    total = busy_seconds(stats) or 1.0
    rows = sorted(((k, v) for k, v in stats.stats.items() if not _idle(k)), key=lambda item: item[1][2],
                  reverse=True)[:top]
    out = ["| function | own time s | share of busy time | cumulative s |", "|---|---:|---:|---:|"]
    for (filename, line, name), (_cc, _nc, tt, ct, _callers) in rows:
        short = filename.split("site-packages/")[-1].replace(str(REPO) + "/", "")
        out.append(f"| `{short}:{line}({name})` | {tt:.2f} | {100 * tt / total:.0f} % | {ct:.2f} |")
    return "\n".join(out)


def _idle(key: tuple) -> bool:
    return "epoll" in key[2] or "select" in key[2] and key[0] == "~"


def busy_seconds(stats) -> float:
    """Profiled time minus the time spent waiting in epoll (idle)."""
    return stats.total_tt - sum(v[2] for k, v in stats.stats.items() if _idle(k))


def profile_cumulative(path: Path, wanted: dict[str, str]) -> dict[str, float]:
    """Cumulative seconds of a few named functions ({label: "file-part:function"})."""
    import pstats

    stats = pstats.Stats(str(path))
    out = {}
    for label, key in wanted.items():
        part, _, func = key.rpartition(":")
        best = 0.0
        for (filename, _line, name), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():
            if name == func and filename.endswith(part):
                best = max(best, ct)
        out[label] = best
    out["(everything, wall clock of the profiled process)"] = busy_seconds(stats)
    return out


def gzip_size(data: bytes) -> int:
    return len(gzip.compress(data, 6))


def work_dir(name: str) -> Path:
    path = WORK / name
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path
