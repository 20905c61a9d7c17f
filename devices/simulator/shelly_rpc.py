"""Simulated Shelly Gen2/Gen3/Gen4 devices: the JSON-RPC ("NG") firmware on the wire.

One :class:`ShellyRpc` is one device on its own (host, port). It speaks what homedash and
real third-party clients (aioshelly) speak to real devices (facts: ../shared/reference/shelly.md):

* ``GET /shelly``; ``GET /rpc/<Method>?k=v`` (query values parsed as JSON, bare strings
  allowed); ``POST /rpc/<Method>`` (params body → bare result); ``POST /rpc`` (whole frame →
  whole frame); method names are case-insensitive.
* ``ws://host/rpc``: request/response frames addressed with ``dst``; ``NotifyStatus`` (deep
  diff of the status, only after the client sent a frame with ``src``), ``NotifyEvent``
  (button presses, OTA progress, config changes, scheduled restarts).
* Digest authentication (``shelly_auth``): HTTP header flavour and the websocket JSON flavour,
  pre-2.0 and 2.x firmware rules.
* ``ws://host/debug/log`` and UDP debug datagrams to ``sys.debug.udp.addr``.
* Outbound websocket to ``ws.server`` (``NotifyFullStatus`` with ``dst:"ws"``), including the
  sleeping Plus H&T that is only reachable while awake and says "Bye" before sleeping.
* OTA (``Shelly.Update``) and reboots that drop every socket and reset the uptime.

Payload shapes follow the real captures of the same model (tests compare them key by key);
the values are our own. Payload details that changed between firmware releases are switched
on the simulated version (``fw=``), so an old-firmware device looks like an old one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import hashlib
import json
import random
import re
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from .base import HANG_SECONDS, OVERSIZED_BYTES, SimDevice, check_send_target, json_response
from .shelly_auth import DigestGuard, Verdict, make_ha1

# ---------------------------------------------------------------------------- limits
PEER_QUEUE = 256              # frames waiting to be written to one websocket
FRAMES_PENDING = 16           # request frames one websocket may have in processing at once
DEBUG_CONNECTIONS = 3         # /debug/log sockets a device accepts (shelly.md §5)
DEBUG_RING = 200              # debug lines buffered per debug socket; oldest dropped first
UDP_RING = 512                # debug lines waiting for the next UDP datagram
UDP_LINE_MAX = 128            # real devices cut UDP log lines at about this length
UDP_DATAGRAM_MAX = 1200       # stay below any MTU, several NUL-separated lines per datagram
COMPONENTS_PAGE = 10          # Shelly.GetComponents page size
# Status keys that change every second; real devices do not push them, so neither does the
# deep diff behind NotifyStatus.
VOLATILE_SYS = frozenset({"uptime", "unixtime", "time", "ram_free", "ram_min_free", "fs_free"})
JSON_COMPACT = (",", ":")


# ---------------------------------------------------------------------------- models
@dataclass(frozen=True)
class ModelSpec:
    """What a model is made of (shelly.md §7) and the payload quirks of its captures."""

    model: str
    app: str
    gen: int
    id_prefix: str            # device id is f"{id_prefix}-{mac lower}"
    host_label: str           # mixed-case mDNS host name prefix, e.g. "ShellyPlus1PM"
    label: str
    oui: str
    switches: int = 0
    covers: int = 0
    profiles: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (switches, covers)
    default_profile: str | None = None
    inputs: int = 0
    input_type: str = "switch"
    input_factory_reset: bool = True
    pf: bool = False          # switch status carries "pf"
    undervoltage_limit: bool = False
    em: bool = False          # em:0 + emdata:0 (triphase meter)
    device_temperature: bool = False  # temperature:0 of the meter itself
    sensor: bool = False      # temperature:0, humidity:0, devicepower:0, ht_ui
    sleeping: bool = False
    eth: bool = False
    uplink: str = "wifi"      # "wifi" or "eth"
    ui: bool = False
    knx: bool = False
    matter: bool = False
    bthome: bool = False
    modbus: bool = False
    ble_enabled: bool = True
    ip6: bool = False
    addon_type: bool = True
    alt_app: str | None = None  # Gen4: alternative (Zigbee) firmware offered in sys.alt
    ram_size: int = 260000
    fs_size: int = 458752


MODELS: dict[str, ModelSpec] = {
    spec.model: spec
    for spec in (
        ModelSpec("SNSW-001P16EU", "Plus1PM", 2, "shellyplus1pm", "ShellyPlus1PM", "Plus 1PM",
                  "441793", switches=1, inputs=1),
        ModelSpec("SNSW-102P16EU", "Plus2PM", 2, "shellyplus2pm", "ShellyPlus2PM", "Plus 2PM",
                  "5443B2", profiles={"switch": (2, 0), "cover": (0, 1)}, default_profile="cover",
                  inputs=2, pf=True, undervoltage_limit=True, ble_enabled=False,
                  ram_size=249080, fs_size=393216),
        ModelSpec("SPSW-104PE16EU", "Pro4PM", 2, "shellypro4pm", "ShellyPro4PM", "Pro 4PM",
                  "34987A", switches=4, inputs=4, input_factory_reset=False, pf=True,
                  undervoltage_limit=True, eth=True, ui=True, knx=True, bthome=True,
                  ble_enabled=False, ip6=True, addon_type=False, ram_size=245180, fs_size=524288),
        ModelSpec("SNSN-0013A", "PlusHT", 2, "shellyplusht", "ShellyPlusHT", "Plus H&T",
                  "08B61F", sensor=True, sleeping=True, addon_type=False, ram_size=235192),
        ModelSpec("SNSN-0024X", "PlusI4", 2, "shellyplusi4", "ShellyPlusI4", "Plus i4",
                  "CC7B5C", inputs=4, input_type="button", ram_size=265816, fs_size=393216),
        ModelSpec("SPEM-003CEBEU", "Pro3EM", 2, "shellypro3em", "ShellyPro3EM", "Pro 3EM",
                  "A8032A", profiles={"triphase": (0, 0)}, default_profile="triphase", em=True,
                  device_temperature=True, eth=True, uplink="eth", modbus=True,
                  ble_enabled=False, ram_size=241568, fs_size=524288),
        ModelSpec("S3SW-001P16EU", "S1PMG3", 3, "shelly1pmg3", "Shelly1PMG3", "1PM Gen3",
                  "34B7DA", switches=1, inputs=1, knx=True, matter=True, bthome=True, ip6=True,
                  fs_size=917504),
        ModelSpec("S4SW-001P16EU", "S1PMG4", 4, "shelly1pmg4", "Shelly1PMG4", "1PM Gen4",
                  "A085E3", switches=1, inputs=1, knx=True, matter=True, bthome=True, modbus=True,
                  ble_enabled=False, ip6=True, alt_app="S1PMG4ZB", ram_size=342588,
                  fs_size=917504),
    )
}

# Canonical spelling of component types in method names (clients may use any case).
TYPE_NAMES = {
    "sys": "Sys", "wifi": "Wifi", "cloud": "Cloud", "mqtt": "Mqtt", "ble": "BLE", "ws": "Ws",
    "eth": "Eth", "knx": "KNX", "matter": "Matter", "bthome": "BTHome", "modbus": "Modbus",
    "ui": "Ui", "ht_ui": "HT_UI", "switch": "Switch", "cover": "Cover", "input": "Input",
    "em": "EM", "emdata": "EMData", "temperature": "Temperature", "humidity": "Humidity",
    "devicepower": "DevicePower",
}
READ_ONLY_CONFIG = {"emdata", "devicepower", "bthome"}

# NotifyEvent sequences of a button-type input for each kind of press.
PRESS_SEQUENCES = {
    "single": ["btn_down", "btn_up", "single_push"],
    "double": ["btn_down", "btn_up", "btn_down", "btn_up", "double_push"],
    "triple": ["btn_down", "btn_up"] * 3 + ["triple_push"],
    "long": ["btn_down", "long_push", "btn_up"],
    "btn_down": ["btn_down"],
    "btn_up": ["btn_up"],
}


# ---------------------------------------------------------------------------- firmware
def parse_version(ver: str) -> tuple[int, int, int]:
    match = re.match(r"(\d+)\.(\d+)\.(\d+)", ver)
    return (int(match[1]), int(match[2]), int(match[3])) if match else (0, 0, 0)


# Build dates we give each release line (only the 8-digit prefix matters to clients:
# aioshelly compares it against minimum-firmware and virtual-components dates).
_RELEASE_DATES = {
    (0, 14): "20230311", (1, 0): "20230810", (1, 1): "20231220", (1, 2): "20240215",
    (1, 3): "20240410", (1, 4): "20240820", (1, 5): "20250120", (1, 6): "20250512",
    (1, 7): "20260312", (2, 0): "20260706",
}


def build_id(ver: str) -> str:
    """fw_id like ``20260312-101523/1.7.5-g3a9c0de`` (date per release line, our own hash)."""
    major, minor, _ = parse_version(ver)
    lines = sorted(_RELEASE_DATES)
    date = _RELEASE_DATES.get((major, minor))
    if date is None:
        older = [k for k in lines if k <= (major, minor)]
        date = _RELEASE_DATES[older[-1]] if older else _RELEASE_DATES[lines[0]]
    digest = hashlib.sha1(f"homedash-sim/{ver}".encode()).hexdigest()
    clock = int(digest[:6], 16) % 86400
    return f"{date}-{clock // 3600:02d}{clock // 60 % 60:02d}{clock % 60:02d}/{ver}-g{digest[-7:]}"


class RpcError(Exception):
    """An RPC error frame: ``{"code": ..., "message": ...}``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# ---------------------------------------------------------------------------- state
@dataclass
class _Switch:
    load_w: float
    output: bool = False
    source: str = "init"
    apower: float = 0.0
    voltage: float = 230.0
    current: float = 0.0
    freq: float = 50.0
    pf: float = 0.0
    total_wh: float = 0.0
    by_minute: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    ret_total: float = 0.0
    temp_c: float = 41.0
    timer_started_at: float | None = None
    timer_duration: float | None = None
    timer: asyncio.TimerHandle | None = None


@dataclass
class _Cover:
    state: str = "closed"
    source: str = "init"
    current_pos: float = 0.0
    target_pos: int | None = None
    last_direction: str = "close"
    move_started_at: float | None = None
    apower: float = 0.0
    voltage: float = 230.0
    current: float = 0.0
    pf: float = 0.0
    freq: float = 50.0
    total_wh: float = 0.0
    by_minute: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    temp_c: float = 44.0
    task: asyncio.Task | None = None


@dataclass
class _Phase:
    load_w: float
    voltage: float = 230.0
    pf: float = 0.8
    act_energy: float = 0.0
    ret_energy: float = 0.0

    @property
    def current(self) -> float:
        return self.load_w / self.voltage / max(self.pf, 0.05)


@dataclass
class _Sensor:
    temp_c: float = 21.4
    rh: float = 47.5
    battery_v: float = 5.8
    battery_pct: int = 88
    external: bool = False


@dataclass
class CallContext:
    """Who is calling: decides the ``source`` of state changes and whether auth is checked."""

    transport: str            # "ws_in", "http", "ws_out"
    check_auth: bool

    @property
    def source(self) -> str:
        return {"ws_in": "WS_in", "http": "HTTP_in", "ws_out": "WS_out"}.get(self.transport, "init")


Handler = Callable[[dict[str, Any], CallContext], Awaitable[Any]]


class _Peer:
    """One websocket the device writes to: an inbound /rpc client, the outbound ws.server
    connection, or a /debug/log listener. Writes go through a bounded queue so a slow reader
    costs the device a few dropped frames, not unbounded memory."""

    def __init__(self, device: ShellyRpc, ws: Any, *, outbound: bool = False,
                 limit: int = PEER_QUEUE, faulty: bool = True) -> None:
        self.device = device
        self.ws = ws
        self.outbound = outbound
        self.src: str | None = None
        # Whether this client has sent an authenticated frame since the password last changed:
        # a protected device does not push its state to a client that never proved it may see it.
        self.authenticated = False
        self.limit = limit
        self.faulty = faulty
        self.dropped = 0
        self.pending = asyncio.Semaphore(FRAMES_PENDING)
        self._queue: collections.deque[str] = collections.deque()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._writer = device.spawn(self._write_loop())

    @property
    def notify_dst(self) -> str | None:
        """Where notifications go: ``"ws"`` on the outbound socket; on inbound sockets the
        client's ``src``, and nothing at all before the client sent one."""
        return "ws" if self.outbound else self.src

    def send(self, text: str) -> None:
        if len(self._queue) >= self.limit:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(text)
        self._idle.clear()
        self._wakeup.set()

    async def drain(self, timeout: float = 2.0) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)

    async def _write_loop(self) -> None:
        while not self.ws.closed:
            if not self._queue:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            text = self._queue.popleft()
            if self.faulty:
                text = self.device._faulty_frame(text)
            try:
                await self.ws.send_str(text)
            except (ConnectionError, RuntimeError, aiohttp.ClientError):
                break
        self._idle.set()

    def close(self) -> None:
        self._writer.cancel()


def deep_diff(old: Any, new: Any) -> dict[str, Any]:
    """Keys of ``new`` that differ from ``old``, recursively; removed keys become None
    (how the firmware clears e.g. ``timer_started_at``)."""
    out: dict[str, Any] = {}
    for key, value in new.items():
        if key not in old:
            out[key] = value
        elif isinstance(value, dict) and isinstance(old[key], dict):
            sub = deep_diff(old[key], value)
            if sub:
                out[key] = sub
        elif old[key] != value:
            out[key] = value
    for key in old:
        if key not in new:
            out[key] = None
    return out


def query_value(raw: str) -> Any:
    """``GET /rpc/<Method>?k=v``: v is JSON when it parses (numbers, booleans, null,
    quoted strings, objects), otherwise a bare string (fw >= 1.0 behaviour)."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _temperature(celsius: float) -> dict[str, float]:
    return {"tC": round(celsius, 1), "tF": round(celsius * 9 / 5 + 32, 1)}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


# ---------------------------------------------------------------------------- device
class ShellyRpc(SimDevice):
    """A Shelly Gen2/Gen3/Gen4 device.

    Public simulation hooks (same names as the other simulated devices): ``await reboot()``,
    ``set_secret(password | None)``, ``flip(channel)``, ``press(channel, kind)``,
    ``wake()`` / ``sleep()`` (sleepers), ``describe()``. ``flip``/``press``/``wake``/``sleep``
    return the background task doing the work, so callers may await it or not.
    """

    vendor = "shelly"

    def __init__(
        self,
        model: str = "SNSW-001P16EU",
        *,
        mac: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str | None = None,
        password: str | None = None,
        rng: random.Random | None = None,
        fw: str = "1.7.5",
        profile: str | None = None,
        debug_log_open: bool = False,
        # authentication (fw 2.x rules; all tunable so tests never wait for real minutes)
        nonce_lifetime: float = 3600.0,
        nonce_slots: int = 32,
        slot_throttle: float = 2.0,
        auth_fail_limit: int = 5,
        auth_fail_window: float = 600.0,
        auth_lockout: tuple[float, ...] = (10.0, 30.0, 60.0, 300.0),
        # simulated physics and timings
        drift_period: float | None = 30.0,
        minute_period: float = 60.0,
        debug_rate: float = 5.0,
        cover_travel_time: float = 10.0,
        reboot_time: float = 1.0,
        ota_step: float = 0.3,
        press_gap: float = 0.02,
        # sleeping devices
        wake_period: float | None = None,
        awake_time: float = 3.0,
        ws_server: str | None = None,
        updates: dict[str, str] | None = None,
    ) -> None:
        if model not in MODELS:
            raise ValueError(f"unknown Shelly RPC model {model!r}; known: {sorted(MODELS)}")
        self.spec = MODELS[model]
        self.model = model
        self.label = self.spec.label
        self.oui = self.spec.oui
        if mac is not None:
            mac = re.sub(r"[^0-9A-Fa-f]", "", mac)
        super().__init__(mac=mac, host=host, port=port, name=name, rng=rng)
        self.device_id = f"{self.spec.id_prefix}-{self.mac.lower()}"
        self.gen = self.spec.gen
        self.app = self.spec.app
        self.ver = fw
        self.profile = profile or self.spec.default_profile
        if self.spec.profiles and self.profile not in self.spec.profiles:
            raise ValueError(f"{model} has profiles {sorted(self.spec.profiles)}, not {self.profile!r}")
        self.debug_log_open = debug_log_open
        self.drift_period = drift_period
        self.minute_period = minute_period
        self.debug_rate = debug_rate
        self.cover_travel_time = cover_travel_time
        self.reboot_time = reboot_time
        self.ota_step = ota_step
        self.press_gap = press_gap
        self.wake_period = wake_period
        self.awake_time = awake_time
        if updates is None:
            updates = {"beta": "2.0.0-beta1"} if parse_version(fw) < (2, 0, 0) else {}
        self.updates: dict[str, str] = dict(updates)

        self.password: str | None = None
        self.guard = DigestGuard(
            self.device_id, fw2=self.fw2, nonce_lifetime=nonce_lifetime, nonce_slots=nonce_slots,
            slot_throttle=slot_throttle, fail_limit=auth_fail_limit, fail_window=auth_fail_window,
            lockout_steps=tuple(auth_lockout),
        )
        self._debug_peers: set[_Peer] = set()
        self._peers: set[_Peer] = set()
        self.set_secret(password)

        # Live state.
        self.cfg_rev = self.rng.randint(8, 40)
        self._reset_reason = 1
        self._restart_required = False
        self._boot_wall = time.time()
        self._minute_ts = int(self._boot_wall // 60 * 60)
        self._ssid = "homedash-sim"
        self._rssi = -self.rng.randint(42, 71)
        self._sensor = _Sensor(temp_c=round(self.rng.uniform(18.5, 24.5), 1),
                               rh=round(self.rng.uniform(35, 60), 1))
        self._phases = {p: _Phase(load_w=round(self.rng.uniform(40, 600), 1),
                                  voltage=round(self.rng.uniform(228, 233), 1),
                                  act_energy=round(self.rng.uniform(1e4, 5e5), 2))
                        for p in "abc"}
        self._device_temp = round(self.rng.uniform(38, 50), 1)
        self.switches: list[_Switch] = []
        self.covers: list[_Cover] = []
        self.input_states: list[bool | None] = []
        self.config: dict[str, Any] = {}
        self._build_components()
        if ws_server is not None:
            self.config["ws"].update({"enable": True, "server": ws_server})
        if self.spec.sleeping:
            self.config["sys"]["sleep"]["wakeup_period"] = int(max(1, round(wake_period or 7200)))

        # Sessions and background work.
        self._outbound: set[_Peer] = set()   # live outbound sockets (ws.connected)
        self._debug_reserved = 0
        self._udp_lines: collections.deque[str] = collections.deque(maxlen=UDP_RING)
        self._udp_seq = 0
        self.udp_datagrams_sent = 0
        self._boot_tasks: set[asyncio.Task] = set()
        self._snapshot: dict[str, Any] = {}
        self._ws_active: dict[str, Any] = dict(self.config["ws"])
        self._shutdown_at: float | None = None
        self._ota_running = False
        self.ota_will_fail = False      # set by tests / the control API to make Shelly.Update fail
        self._awake = False
        self._wake_cause = "periodic"
        self._sleep_now: asyncio.Event | None = None
        self._wake_lock: asyncio.Lock | None = None
        self._reboot_lock: asyncio.Lock | None = None
        self._periodic_wake: asyncio.Task | None = None
        self.events_sent: collections.deque[dict[str, Any]] = collections.deque(maxlen=200)
        self._table_cache: tuple[str | None, dict[str, tuple[str, Handler]]] | None = None

    # ================================================================ identity
    @property
    def fw_id(self) -> str:
        return build_id(self.ver)

    @property
    def fw2(self) -> bool:
        return parse_version(self.ver) >= (2, 0, 0)

    @property
    def _modern(self) -> bool:
        """Payload shape of fw >= 1.2 (the 1.7.x captures); older releases lack a few keys."""
        return parse_version(self.ver) >= (1, 2, 0)

    @property
    def _pre1(self) -> bool:
        return parse_version(self.ver) < (1, 0, 0)

    @property
    def secret(self) -> str:
        if self.password:
            return self.password
        return "(ha1 set over RPC)" if self.guard.enabled else ""

    @property
    def online(self) -> bool:
        return self._site is not None

    @property
    def awake(self) -> bool:
        return self._awake

    def describe(self) -> dict[str, Any]:
        row = super().describe()
        row.update({
            "gen": self.gen, "id": self.device_id, "name": self.name, "fw": self.ver,
            "auth": self.guard.enabled, "profile": self.profile, "sleeping": self.spec.sleeping,
            "online": self.online,
        })
        return row

    def device_info(self, ident: bool = False) -> dict[str, Any]:
        """``GET /shelly`` and ``Shelly.GetDeviceInfo``."""
        info: dict[str, Any] = {"name": self.name, "id": self.device_id, "mac": self.mac}
        if not self._pre1:
            info["slot"] = 1
        info.update({"model": self.model, "gen": self.gen, "fw_id": self.fw_id, "ver": self.ver,
                     "app": self.app, "auth_en": self.guard.enabled,
                     "auth_domain": self.device_id if self.guard.enabled else None})
        if self.spec.profiles:
            info["profile"] = self.profile
        if self.spec.matter:
            info["matter"] = False
        if parse_version(self.ver) >= (1, 5, 0):
            info["provision"] = "complete"
        if ident:
            info.update({"key": hashlib.sha256(self.mac.encode()).hexdigest()[:32],
                         "batch": "2411-HDSim", "fw_sbits": "04"})
        return info

    # ================================================================ components
    def _build_components(self) -> None:
        """Components for the model and profile; config starts from our own defaults."""
        spec = self.spec
        if spec.profiles:
            n_switches, n_covers = spec.profiles[self.profile or ""]
        else:
            n_switches, n_covers = spec.switches, spec.covers
        loads = [8.5, 11.0, 42.0, 60.0, 75.0, 150.0, 900.0, 1850.0]
        self.switches = [_Switch(load_w=self.rng.choice(loads), total_wh=round(self.rng.uniform(0, 9e4), 3),
                                 temp_c=round(self.rng.uniform(36, 52), 1))
                         for _ in range(n_switches)]
        self.covers = [_Cover(total_wh=round(self.rng.uniform(1, 400), 3)) for _ in range(n_covers)]
        self.input_states = [None if spec.input_type == "button" else False for _ in range(spec.inputs)]
        self.config = self._default_config(n_switches, n_covers)

    def _default_config(self, n_switches: int, n_covers: int) -> dict[str, Any]:
        spec, modern, pre1 = self.spec, self._modern, self._pre1
        cfg: dict[str, Any] = {}
        ble: dict[str, Any] = {"enable": spec.ble_enabled, "rpc": {"enable": True}}
        if not modern:
            ble["observer"] = {"enable": False}
        cfg["ble"] = ble
        if spec.bthome:
            cfg["bthome"] = {}
        cfg["cloud"] = {"enable": False, "server": "cloud.homedash.invalid:6022/jrpc"}
        for i in range(n_covers):
            cfg[f"cover:{i}"] = {
                "id": i, "name": None,
                "motor": {"idle_power_thr": 3, "idle_confirm_period": 0.5},
                "maxtime_open": 30, "maxtime_close": 30, "initial_state": "stopped",
                "invert_directions": False, "maintenance_mode": False, "in_mode": "dual",
                "in_locked": False, "swap_inputs": False,
                "safety_switch": {"enable": False, "direction": "both", "action": "stop",
                                  "allowed_move": None},
                "power_limit": 2800, "voltage_limit": 280, "undervoltage_limit": 0,
                "current_limit": 10,
                "obstruction_detection": {"enable": False, "direction": "both", "action": "stop",
                                          "power_thr": 8, "holdoff": 1},
                "slat": {"enable": False, "open_time": 1.5, "close_time": 1.5, "step": 20,
                         "retain_pos": False, "precise_ctl": False},
            }
        if spec.sensor:
            cfg["devicepower:0"] = {}
        if spec.em:
            cfg["em:0"] = {"id": 0, "name": None, "blink_mode_selector": "active_energy",
                           "phase_selector": "all", "monitor_phase_sequence": False, "reverse": {}}
            cfg["emdata:0"] = {}
        if spec.eth:
            eth: dict[str, Any] = {"enable": True}
            if modern:
                eth["server_mode"] = False
            eth.update({"ipv4mode": "dhcp", "ip": None, "netmask": None, "gw": None, "nameserver": None})
            cfg["eth"] = eth
        if spec.sensor:
            cfg["ht_ui"] = {"temperature_unit": "C"}
            cfg["humidity:0"] = {"id": 0, "name": None, "report_thr": 5, "offset": 0}
        for i in range(spec.inputs):
            inp: dict[str, Any] = {"id": i, "name": None, "type": spec.input_type, "enable": True,
                                   "invert": False}
            if spec.input_factory_reset:
                inp["factory_reset"] = True
            cfg[f"input:{i}"] = inp
        if spec.knx:
            cfg["knx"] = {"enable": False, "ia": "15.15.255", "routing": {"addr": "224.0.23.12:3671"}}
        if spec.matter:
            cfg["matter"] = {"enable": False}
        if spec.modbus:
            cfg["modbus"] = {"enable": False}
        mqtt: dict[str, Any] = {"enable": False, "server": None, "client_id": self.device_id, "user": None}
        if not pre1:
            mqtt["ssl_ca"] = None
        mqtt.update({"topic_prefix": self.device_id, "rpc_ntf": True, "status_ntf": False,
                     "use_client_cert": False, "enable_rpc": True, "enable_control": True})
        cfg["mqtt"] = mqtt
        for i in range(n_switches):
            sw: dict[str, Any] = {"id": i, "name": None, "in_mode": "follow"}
            if modern:
                sw["in_locked"] = False
            sw.update({"initial_state": "match_input" if modern else "off", "auto_on": False,
                       "auto_on_delay": 60, "auto_off": False, "auto_off_delay": 60,
                       "power_limit": 4480, "voltage_limit": 280})
            if spec.undervoltage_limit and modern:
                sw["undervoltage_limit"] = 0
            sw.update({"autorecover_voltage_errors": False, "current_limit": 16})
            if modern:
                sw["reverse"] = False
            cfg[f"switch:{i}"] = sw
        device: dict[str, Any] = {"name": self.name, "mac": self.mac, "fw_id": self.fw_id,
                                  "discoverable": True}
        if not spec.sleeping:
            device["eco_mode"] = False
        if self.profile:
            device["profile"] = self.profile
        if spec.addon_type:
            device["addon_type"] = None
        debug: dict[str, Any] = {}
        if not pre1:
            debug.update({"level": 2, "file_level": None})
        debug.update({"mqtt": {"enable": False}, "websocket": {"enable": False}, "udp": {"addr": None}})
        sys_cfg: dict[str, Any] = {"device": device, "location": None, "debug": debug, "ui_data": {},
                                   "rpc_udp": {"dst_addr": None, "listen_port": None},
                                   "sntp": {"server": "ntp.homedash.invalid"}}
        if spec.sleeping:
            sys_cfg["sleep"] = {"wakeup_period": 7200}
        sys_cfg["cfg_rev"] = self.cfg_rev
        cfg["sys"] = sys_cfg
        if spec.device_temperature:
            cfg["temperature:0"] = {"id": 0, "name": None, "report_thr_C": 5.0, "offset_C": 0.0}
        if spec.sensor:
            cfg["temperature:0"] = {"id": 0, "name": None, "report_thr_C": 0.5, "offset_C": 0}
        if spec.ui:
            cfg["ui"] = {"idle_brightness": 30}
        ap: dict[str, Any] = {"ssid": f"{spec.host_label}-{self.mac}", "is_open": True, "enable": False}
        if not pre1:
            ap["range_extender"] = {"enable": False}

        def sta(ssid: str, enable: bool) -> dict[str, Any]:
            return {"ssid": ssid, "is_open": False, "enable": enable, "ipv4mode": "dhcp", "ip": None,
                    "netmask": None, "gw": None, "nameserver": None}

        cfg["wifi"] = {"ap": ap, "sta": sta(self._ssid, True), "sta1": sta("", False),
                       "roam": {"rssi_thr": -80, "interval": 60}}
        cfg["ws"] = {"enable": False, "server": None, "ssl_ca": "ca.pem"}
        return dict(sorted(cfg.items()))

    def get_config(self) -> dict[str, Any]:
        """``Shelly.GetConfig``."""
        cfg = copy.deepcopy(self.config)
        device = cfg["sys"]["device"]
        device.update({"name": self.name, "fw_id": self.fw_id})
        if "profile" in device:
            device["profile"] = self.profile
        cfg["sys"]["cfg_rev"] = self.cfg_rev
        return cfg

    # ---------------------------------------------------------------- status
    def _energy(self, total: float, by_minute: list[float]) -> dict[str, Any]:
        return {"total": round(total, 3), "by_minute": [round(v, 3) for v in by_minute],
                "minute_ts": self._minute_ts}

    def _switch_status(self, i: int, sw: _Switch) -> dict[str, Any]:
        out: dict[str, Any] = {"id": i, "source": sw.source, "output": sw.output,
                               "apower": round(sw.apower, 1), "voltage": round(sw.voltage, 1)}
        if self._modern:
            out["freq"] = round(sw.freq, 1)
        out["current"] = round(sw.current, 3)
        if self.spec.pf:
            out["pf"] = round(sw.pf, 2)
        out["aenergy"] = self._energy(sw.total_wh, sw.by_minute)
        if self._modern:
            out["ret_aenergy"] = self._energy(sw.ret_total, [0.0, 0.0, 0.0])
        out["temperature"] = _temperature(sw.temp_c)
        if sw.timer_started_at is not None:
            out["timer_started_at"] = round(sw.timer_started_at, 2)
            out["timer_duration"] = sw.timer_duration
        return out

    def _cover_status(self, i: int, cv: _Cover) -> dict[str, Any]:
        out: dict[str, Any] = {"id": i, "source": cv.source, "state": cv.state}
        if cv.move_started_at is not None:
            cfg = self.config[f"cover:{i}"]
            out["move_timeout"] = float(cfg["maxtime_open" if cv.state == "opening" else "maxtime_close"])
            out["move_started_at"] = round(cv.move_started_at, 2)
        out.update({"apower": round(cv.apower, 1), "voltage": round(cv.voltage, 1),
                    "current": round(cv.current, 3), "pf": round(cv.pf, 2), "freq": round(cv.freq, 1),
                    "aenergy": self._energy(cv.total_wh, cv.by_minute),
                    "temperature": _temperature(cv.temp_c), "pos_control": True,
                    "last_direction": cv.last_direction, "current_pos": int(round(cv.current_pos))})
        if cv.target_pos is not None:
            out["target_pos"] = cv.target_pos
        return out

    def _sys_status(self) -> dict[str, Any]:
        spec, modern = self.spec, self._modern
        now = time.time()
        local = time.localtime(now)
        out: dict[str, Any] = {"mac": self.mac, "restart_required": self._restart_required,
                               "time": f"{local.tm_hour:02d}:{local.tm_min:02d}", "unixtime": int(now)}
        if modern:
            out["last_sync_ts"] = int(self._boot_wall)
        ram_free = int(spec.ram_size * 0.42) + (self.uptime() * 7) % 4096
        out.update({"uptime": self.uptime(), "ram_size": spec.ram_size, "ram_free": ram_free})
        if modern:
            out["ram_min_free"] = int(spec.ram_size * 0.31)
        out.update({"fs_size": spec.fs_size, "fs_free": int(spec.fs_size * 0.37) // 4096 * 4096,
                    "cfg_rev": self.cfg_rev, "kvs_rev": 0})
        if not spec.sleeping or modern:
            out["schedule_rev"] = 0
        out["webhook_rev"] = 0
        if modern:
            out["btrelay_rev"] = 0
            if spec.bthome:
                out["bthc_rev"] = 0
        out["available_updates"] = {stage: {"version": ver} for stage, ver in sorted(self.updates.items())}
        if spec.alt_app:
            out["alt"] = {spec.alt_app: {
                "name": f"Shelly {spec.label} Zigbee", "desc": f"{spec.label} with Zigbee firmware",
                "beta": {"version": self.updates.get("beta", self.ver),
                         "build_id": build_id(self.updates.get("beta", self.ver))},
                "stable": {"version": self.ver, "build_id": self.fw_id}}}
        if not spec.sleeping:
            out["reset_reason"] = self._reset_reason
        if modern:
            out["utc_offset"] = local.tm_gmtoff
        if spec.sleeping:
            out["wakeup_reason"] = {"boot": "deepsleep_wake", "cause": self._wake_cause}
            out["wakeup_period"] = self.config["sys"]["sleep"]["wakeup_period"]
        return out

    def full_status(self) -> dict[str, Any]:
        """``Shelly.GetStatus``."""
        spec, modern = self.spec, self._modern
        st: dict[str, Any] = {"ble": {}}
        if spec.bthome:
            st["bthome"] = {} if self.config["ble"]["enable"] else {"errors": ["bluetooth_disabled"]}
        st["cloud"] = {"connected": False}
        for i, cv in enumerate(self.covers):
            st[f"cover:{i}"] = self._cover_status(i, cv)
        if spec.sensor:
            s = self._sensor
            st["devicepower:0"] = {"id": 0, "battery": {"V": round(s.battery_v, 2), "percent": s.battery_pct},
                                   "external": {"present": s.external}}
            st["ht_ui"] = {}
            st["humidity:0"] = {"id": 0, "rh": round(s.rh, 1)}
            st["temperature:0"] = {"id": 0, **_temperature(s.temp_c)}
        if spec.em:
            st["em:0"], st["emdata:0"] = self._em_status()
        if spec.device_temperature:
            st["temperature:0"] = {"id": 0, **_temperature(self._device_temp)}
        if spec.eth:
            eth: dict[str, Any] = {"ip": self.host if spec.uplink == "eth" else None}
            if modern:
                eth["ip6"] = None
            st["eth"] = eth
        for i, state in enumerate(self.input_states):
            st[f"input:{i}"] = {"id": i, "state": state}
        if spec.knx:
            st["knx"] = {}
        if spec.matter:
            st["matter"] = {"num_fabrics": 0, "commissionable": False}
        if spec.modbus:
            st["modbus"] = {}
        st["mqtt"] = {"connected": False}
        for i, sw in enumerate(self.switches):
            st[f"switch:{i}"] = self._switch_status(i, sw)
        st["sys"] = self._sys_status()
        if spec.ui:
            st["ui"] = {}
        st["wifi"] = self._wifi_status()
        st["ws"] = {"connected": bool(self._outbound)}
        return dict(sorted(st.items()))

    def _wifi_status(self) -> dict[str, Any]:
        if self.spec.uplink == "eth":
            out: dict[str, Any] = {"sta_ip": None, "status": "disconnected", "ssid": None}
            if self._modern:
                out["bssid"] = None
            out["rssi"] = 0
            return out
        out = {"sta_ip": self.host, "status": "got ip", "ssid": self._ssid}
        if self._modern:
            out["bssid"] = "02:1a:11:f0:5e:01"
        out["rssi"] = self._rssi
        if self.spec.ip6 and self._modern:
            mac = bytes.fromhex(self.mac)
            eui = bytes([mac[0] ^ 0x02]) + mac[1:3] + b"\xff\xfe" + mac[3:]
            groups = [f"{int.from_bytes(eui[i:i + 2], 'big'):x}" for i in range(0, 8, 2)]
            out["sta_ip6"] = ["fe80::" + ":".join(groups)]
        return out

    def _em_status(self) -> tuple[dict[str, Any], dict[str, Any]]:
        em: dict[str, Any] = {"id": 0}
        data: dict[str, Any] = {"id": 0}
        total_current = total_act = total_aprt = 0.0
        for name, ph in self._phases.items():
            aprt = ph.load_w / max(ph.pf, 0.05)
            em.update({f"{name}_current": round(ph.current, 3), f"{name}_voltage": round(ph.voltage, 1),
                       f"{name}_act_power": round(ph.load_w, 1), f"{name}_aprt_power": round(aprt, 1),
                       f"{name}_pf": round(ph.pf, 2), f"{name}_freq": 50.0})
            data.update({f"{name}_total_act_energy": round(ph.act_energy, 2),
                         f"{name}_total_act_ret_energy": round(ph.ret_energy, 2)})
            total_current += ph.current
            total_act += ph.load_w
            total_aprt += aprt
        em.update({"n_current": None, "total_current": round(total_current, 3),
                   "total_act_power": round(total_act, 3), "total_aprt_power": round(total_aprt, 3),
                   "user_calibrated_phase": []})
        data["total_act"] = round(sum(p.act_energy for p in self._phases.values()), 2)
        data["total_act_ret"] = round(sum(p.ret_energy for p in self._phases.values()), 2)
        return em, data

    # ================================================================ HTTP / websocket server
    def setup_routes(self, app: web.Application) -> None:
        app.router.add_get("/shelly", self._h_shelly)
        app.router.add_get("/rpc", self._h_rpc_ws)
        app.router.add_post("/rpc", self._h_rpc_frame)
        app.router.add_route("GET", "/rpc/{method}", self._h_rpc_rest)
        app.router.add_route("POST", "/rpc/{method}", self._h_rpc_rest)
        app.router.add_get("/debug/log", self._h_debug_log)

    async def _h_shelly(self, request: web.Request) -> web.Response:
        return json_response(self.device_info())

    def _http_auth_failure(self, verdict: Verdict) -> web.Response:
        if verdict.throttled:
            return json_response({"code": 429, "message": verdict.throttled}, status=429)
        assert verdict.challenge is not None
        # Empty body, the challenge is all in the header (as the mOS HTTP channel does).
        return web.Response(status=401, headers={"WWW-Authenticate": verdict.challenge.www_authenticate()})

    async def _h_rpc_rest(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        ctx = CallContext("http", check_auth=False)
        try:
            name, handler = self._lookup(method)
            if not self._is_open(name):
                verdict = self.guard.check_header(request.method, request.raw_path,
                                                  request.headers.get("Authorization"))
                if not verdict.ok:
                    return self._http_auth_failure(verdict)
            if request.method == "GET":
                params: Any = {key: query_value(value) for key, value in request.query.items()}
            else:
                body = await request.read()
                try:
                    params = json.loads(body) if body.strip() else {}
                except ValueError as err:
                    raise RpcError(-103, "Invalid JSON params") from err
            if not isinstance(params, dict):
                raise RpcError(-103, "Invalid params: expected an object")
            result = await self._invoke(name, handler, params, ctx)
        except RpcError as err:
            # The mOS REST channel maps error codes 403/404 to the same HTTP status and every
            # other error to 500, with the error object as the body.
            status = err.code if err.code in (403, 404) else 500
            return json_response({"code": err.code, "message": err.message}, status=status)
        return json_response(result)

    async def _h_rpc_frame(self, request: web.Request) -> web.Response:
        try:
            frame = json.loads(await request.read())
        except ValueError:
            return json_response({"code": -103, "message": "Invalid JSON frame"}, status=400)
        if not isinstance(frame, dict):
            return json_response({"code": -103, "message": "Invalid frame"}, status=400)
        ctx = CallContext("http", check_auth=True)
        method = frame.get("method")
        if "auth" not in frame and isinstance(method, str) and self.guard.enabled:
            # No JSON auth object: the standard HTTP digest header protects the request.
            with contextlib.suppress(RpcError):
                name, _ = self._lookup(method)
                if not self._is_open(name):
                    verdict = self.guard.check_header(request.method, request.raw_path,
                                                      request.headers.get("Authorization"))
                    if not verdict.ok:
                        return self._http_auth_failure(verdict)
                    ctx.check_auth = False
        reply = await self._process_frame(frame, ctx, always_reply=True)
        return json_response(reply)

    async def _h_rpc_ws(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=64 * 1024)
        if not ws.can_prepare(request).ok:
            return web.Response(status=400, text="websocket expected")
        await ws.prepare(request)
        self.track_websocket(ws)
        peer = _Peer(self, ws)
        self._peers.add(peer)
        ctx = CallContext("ws_in", check_auth=True)
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    frame = json.loads(msg.data)
                except ValueError:
                    self.log("shos_rpc_inst.c:118     dropped invalid frame", level=1)
                    continue
                # Frames are served concurrently (bounded), so a client that pipelines
                # requests shows up in max_in_flight exactly like it would load a device.
                await peer.pending.acquire()
                self.spawn(self._serve_frame(peer, frame, ctx))
        finally:
            self._peers.discard(peer)
            self.untrack_websocket(ws)
            peer.close()
        return ws

    async def _serve_frame(self, peer: _Peer, frame: Any, ctx: CallContext) -> None:
        try:
            method = frame.get("method") if isinstance(frame, dict) else None
            with self.handling(f"WS {method}"):
                if self.faults.latency:
                    await asyncio.sleep(self.faults.latency)
                if self.faults.hang:
                    await asyncio.sleep(HANG_SECONDS)
                    return
                if isinstance(frame, dict) and isinstance(frame.get("src"), str) and not peer.outbound:
                    peer.src = frame["src"]
                reply = await self._process_frame(frame, ctx, peer=peer)
                if reply is not None:
                    peer.send(json.dumps(reply, separators=JSON_COMPACT))
        finally:
            peer.pending.release()

    def _faulty_frame(self, text: str) -> str:
        f = self.faults
        if f.malformed:
            return "<html><body>not json {"
        if f.oversized:
            return '{"pad":"' + "x" * OVERSIZED_BYTES + '"}'
        if f.truncated:
            return text[: max(1, len(text) // 2)]
        return text

    # ================================================================ RPC core
    def _is_open(self, canonical: str) -> bool:
        # Only GetDeviceInfo is allowed without authentication (shelly.md §3.5, §4.2).
        return canonical == "Shelly.GetDeviceInfo"

    def _lookup(self, method: str) -> tuple[str, Handler]:
        entry = self._method_table().get(method.lower())
        if entry is None:
            # Unknown methods: the Mongoose-OS RPC core these firmwares are built on answers
            # 404 "No handler for <method>" (seen on the X MOD1; only the Android-based Wall
            # Display answers -114 "Method not found"), and the REST channel maps it to HTTP 404.
            raise RpcError(404, f"No handler for {method}")
        return entry

    async def _invoke(self, name: str, handler: Handler, params: dict[str, Any], ctx: CallContext) -> Any:
        if self._shutdown_at is not None:
            left = max(0, int((self._shutdown_at - asyncio.get_running_loop().time()) * 1000))
            raise RpcError(-109, f"shutting down in {left} ms")
        self.log(f"shos_rpc_inst.c:243     {name} via {ctx.source} {json.dumps(params, separators=JSON_COMPACT)[:80]}")
        return await handler(params, ctx)

    async def _process_frame(self, frame: Any, ctx: CallContext, *, always_reply: bool = False,
                             peer: _Peer | None = None) -> dict[str, Any] | None:
        if not isinstance(frame, dict):
            return None
        frame_id = frame.get("id")
        src = frame.get("src")
        method = frame.get("method")

        def reply(**body: Any) -> dict[str, Any]:
            out: dict[str, Any] = {"id": frame_id, "src": self.device_id}
            if isinstance(src, str):
                out["dst"] = src
            out.update(body)
            return out

        if not isinstance(method, str):
            # A response to something we never asked, or garbage: nothing to answer.
            return reply(error={"code": -103, "message": "Missing required 'method'"}) if always_reply else None
        try:
            name, handler = self._lookup(method)
            if ctx.check_auth and not self._is_open(name):
                verdict = self.guard.check_json(frame.get("auth"))
                if not verdict.ok:
                    if verdict.throttled:
                        return reply(error={"code": 429, "message": verdict.throttled})
                    assert verdict.challenge is not None
                    # The challenge travels as a JSON *string* in error.message.
                    return reply(error={"code": 401, "message": json.dumps(verdict.challenge.ws_message())})
                if peer is not None:
                    peer.authenticated = True
            params = frame.get("params")
            if params is None:
                params = {}
            if not isinstance(params, dict):
                raise RpcError(-103, "Invalid params: expected an object")
            result = await self._invoke(name, handler, params, ctx)
        except RpcError as err:
            body = {"error": {"code": err.code, "message": err.message}}
            return reply(**body) if frame_id is not None or always_reply else None
        return reply(result=result) if frame_id is not None or always_reply else None

    # ---------------------------------------------------------------- method table
    def _method_table(self) -> dict[str, tuple[str, Handler]]:
        # The set of methods only changes with the profile (component set).
        if self._table_cache is not None and self._table_cache[0] == self.profile:
            return self._table_cache[1]
        table: dict[str, tuple[str, Handler]] = {}

        def add(name: str, handler: Handler) -> None:
            table[name.lower()] = (name, handler)

        add("Shelly.GetDeviceInfo", self._m_get_device_info)
        add("Shelly.GetStatus", self._m_get_status)
        add("Shelly.GetConfig", self._m_get_config)
        add("Shelly.GetComponents", self._m_get_components)
        add("Shelly.ListMethods", self._m_list_methods)
        add("Shelly.SetAuth", self._m_set_auth)
        add("Shelly.Reboot", self._m_reboot)
        add("Shelly.CheckForUpdate", self._m_check_for_update)
        add("Shelly.Update", self._m_update)
        if len(self.spec.profiles) > 1:
            add("Shelly.ListProfiles", self._m_list_profiles)
            add("Shelly.SetProfile", self._m_set_profile)
        status = self.full_status()
        kinds = {key.split(":")[0] for key in list(status) + list(self.config)}
        for kind in sorted(kinds):
            prefix = TYPE_NAMES.get(kind, kind.capitalize())
            if kind in status or any(k.startswith(kind + ":") for k in status):
                add(f"{prefix}.GetStatus", self._generic_get_status(kind))
            if kind in self.config or any(k.startswith(kind + ":") for k in self.config):
                add(f"{prefix}.GetConfig", self._generic_get_config(kind))
                if kind not in READ_ONLY_CONFIG:
                    add(f"{prefix}.SetConfig", self._generic_set_config(kind))
        if self.switches:
            add("Switch.Set", self._m_switch_set)
            add("Switch.Toggle", self._m_switch_toggle)
            add("Switch.ResetCounters", self._m_switch_reset_counters)
        if self.covers:
            add("Cover.Open", self._m_cover_open)
            add("Cover.Close", self._m_cover_close)
            add("Cover.Stop", self._m_cover_stop)
            add("Cover.GoToPosition", self._m_cover_goto)
        self._table_cache = (self.profile, table)
        return table

    # ---------------------------------------------------------------- params
    @staticmethod
    def _param(params: dict[str, Any], name: str, kind: type | tuple[type, ...], required: bool = True) -> Any:
        if name not in params or params[name] is None:
            if required:
                raise RpcError(-103, f"Argument '{name}' is missing")
            return None
        value = params[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise RpcError(-103, f"Argument '{name}' has the wrong type")
        if not isinstance(value, kinds):
            raise RpcError(-103, f"Argument '{name}' has the wrong type")
        return value

    def _component_key(self, kind: str, params: dict[str, Any]) -> str:
        if kind in self.config:          # singletons: sys, wifi, ws, ble, eth, ...
            return kind
        cid = self._param(params, "id", int)
        key = f"{kind}:{cid}"
        if key not in self.config and key not in self._status_keys():
            raise RpcError(-105, f"Argument 'id', value {cid} not found!")
        return key

    def _status_keys(self) -> set[str]:
        keys = {f"switch:{i}" for i in range(len(self.switches))}
        keys |= {f"cover:{i}" for i in range(len(self.covers))}
        keys |= {f"input:{i}" for i in range(len(self.input_states))}
        return keys

    # ---------------------------------------------------------------- Shelly.*
    async def _m_get_device_info(self, params: dict[str, Any], ctx: CallContext) -> Any:
        return self.device_info(ident=bool(params.get("ident")))

    async def _m_get_status(self, params: dict[str, Any], ctx: CallContext) -> Any:
        return self.full_status()

    async def _m_get_config(self, params: dict[str, Any], ctx: CallContext) -> Any:
        return self.get_config()

    async def _m_get_components(self, params: dict[str, Any], ctx: CallContext) -> Any:
        offset = self._param(params, "offset", int, required=False) or 0
        include = self._param(params, "include", list, required=False) or ["status", "config"]
        keys = self._param(params, "keys", list, required=False)
        dynamic_only = bool(self._param(params, "dynamic_only", bool, required=False))
        status, config = self.full_status(), self.get_config()
        names = list(dict.fromkeys(list(config) + list(status)))
        if keys is not None:
            names = [k for k in names if k in keys]
        if dynamic_only:
            # Virtual components (ids >= 200: boolean:200, number:200, ...) are the only
            # dynamic ones; our devices have none, like the captures of the same models.
            names = [k for k in names if ":" in k and int(k.split(":")[1]) >= 200]
        page = names[offset: offset + COMPONENTS_PAGE]
        components = []
        for key in page:
            item: dict[str, Any] = {"key": key}
            if "status" in include and key in status:
                item["status"] = status[key]
            if "config" in include and key in config:
                item["config"] = config[key]
            components.append(item)
        return {"components": components, "cfg_rev": self.cfg_rev, "offset": offset, "total": len(names)}

    async def _m_list_methods(self, params: dict[str, Any], ctx: CallContext) -> Any:
        return {"methods": sorted(name for name, _ in self._method_table().values())}

    async def _m_set_auth(self, params: dict[str, Any], ctx: CallContext) -> Any:
        user = self._param(params, "user", str)
        realm = self._param(params, "realm", str)
        ha1 = self._param(params, "ha1", str, required=False)
        if user != "admin":
            raise RpcError(-103, "Argument 'user' must be 'admin'")
        if realm != self.device_id:
            raise RpcError(-103, f"Argument 'realm' must be '{self.device_id}'")
        if ha1 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", ha1):
            raise RpcError(-103, "Argument 'ha1' must be 64 hex digits")
        if ha1 is None:
            self.password = None
        elif not (self.password and make_ha1(self.device_id, self.password) == ha1.lower()):
            self.password = None
        self.guard.set_ha1(ha1)
        self._credentials_changed()
        return None

    async def _m_reboot(self, params: dict[str, Any], ctx: CallContext) -> Any:
        delay_ms = self._param(params, "delay_ms", int, required=False)
        delay_ms = 1000 if delay_ms is None else max(0, delay_ms)
        self._schedule_restart(delay_ms)
        return None

    def _schedule_restart(self, delay_ms: int) -> None:
        loop = asyncio.get_running_loop()
        self._shutdown_at = loop.time() + delay_ms / 1000
        self._emit_events([{"component": "sys", "event": "scheduled_restart", "time_ms": delay_ms}])

        async def later() -> None:
            await asyncio.sleep(delay_ms / 1000)
            await self.reboot()

        self.spawn(later())

    async def _m_check_for_update(self, params: dict[str, Any], ctx: CallContext) -> Any:
        return {stage: {"version": ver, "build_id": build_id(ver)} for stage, ver in sorted(self.updates.items())}

    async def _m_update(self, params: dict[str, Any], ctx: CallContext) -> Any:
        stage = self._param(params, "stage", str, required=False)
        url = self._param(params, "url", str, required=False)
        if self._ota_running:
            raise RpcError(-109, "Update already in progress")
        if url is not None:
            target = self.updates.get("stable", self.ver)
        else:
            stage = stage or "stable"
            if stage not in ("stable", "beta"):
                raise RpcError(-103, "Argument 'stage' must be 'stable' or 'beta'")
            if stage not in self.updates:
                # Our choice of code: we have no capture of a device refusing an update.
                raise RpcError(-103, f"No {stage} update available")
            target = self.updates[stage]
        self._ota_running = True
        self.spawn(self._run_ota(target))
        return None

    async def _m_list_profiles(self, params: dict[str, Any], ctx: CallContext) -> Any:
        profiles = {}
        for name, (n_sw, n_cv) in self.spec.profiles.items():
            comps = [{"type": "switch", "count": n_sw}] if n_sw else [{"type": "cover", "count": n_cv}]
            profiles[name] = {"components": comps}
        return {"profiles": profiles}

    async def _m_set_profile(self, params: dict[str, Any], ctx: CallContext) -> Any:
        name = self._param(params, "name", str)
        if name not in self.spec.profiles:
            raise RpcError(-103, f"Argument 'name', value {name!r} is not a valid profile")
        was = self.profile
        if name != was:
            self.profile = name
            for cv in self.covers:
                if cv.task is not None:
                    cv.task.cancel()
            n_sw, n_cv = self.spec.profiles[name]
            keep = {k: v for k, v in self.config.items() if not k.startswith(("switch:", "cover:"))}
            self.switches = [_Switch(load_w=60.0) for _ in range(n_sw)]
            self.covers = [_Cover() for _ in range(n_cv)]
            fresh = self._default_config(n_sw, n_cv)
            keep.update({k: v for k, v in fresh.items() if k.startswith(("switch:", "cover:"))})
            keep["sys"]["device"]["profile"] = name
            self.config = dict(sorted(keep.items()))
            self.cfg_rev += 1
            self._schedule_restart(1000)
        return {"profile_was": was}

    # ---------------------------------------------------------------- generic component methods
    def _generic_get_status(self, kind: str) -> Handler:
        async def handler(params: dict[str, Any], ctx: CallContext) -> Any:
            key = self._component_key(kind, params)
            status = self.full_status()
            if key not in status:
                raise RpcError(-105, f"Argument 'id', value {params.get('id')} not found!")
            return status[key]
        return handler

    def _generic_get_config(self, kind: str) -> Handler:
        async def handler(params: dict[str, Any], ctx: CallContext) -> Any:
            key = self._component_key(kind, params)
            return self.get_config()[key]
        return handler

    def _generic_set_config(self, kind: str) -> Handler:
        async def handler(params: dict[str, Any], ctx: CallContext) -> Any:
            key = self._component_key(kind, params)
            patch = self._param(params, "config", dict)
            return self.apply_config(key, patch)
        return handler

    def apply_config(self, key: str, patch: dict[str, Any]) -> dict[str, Any]:
        """``<Type>.SetConfig``: merge ``patch`` into one component's config, strictly (unknown
        keys and wrong types are -103, so a typo in homedash is not silently ignored)."""
        if key == "sys":
            device_patch = patch.get("device")
            if isinstance(device_patch, dict):
                for k in ("mac", "fw_id", "profile"):
                    if k in device_patch:
                        raise RpcError(-103, f"Argument 'config': sys.device.{k} is read-only")
            udp = patch.get("debug", {}).get("udp", {}) if isinstance(patch.get("debug"), dict) else {}
            if isinstance(udp, dict) and udp.get("addr") is not None:
                try:
                    self._parse_udp_target(udp["addr"])
                except ValueError as err:
                    raise RpcError(-103, f"Argument 'config': {err}") from err
        merged = copy.deepcopy(self.config[key])
        self._merge(merged, patch, f"{key}.")
        before = self.config[key]
        self.config[key] = merged
        restart_required = key == "ws"
        self.cfg_rev += 1
        self.config["sys"]["cfg_rev"] = self.cfg_rev
        if restart_required:
            self._restart_required = True
        self._after_config(key, before, merged)
        event: dict[str, Any] = {"component": key, "event": "config_changed",
                                 "restart_required": restart_required, "cfg_rev": self.cfg_rev}
        if ":" in key:
            event["id"] = int(key.split(":")[1])
        self._emit_events([event])
        self._commit()
        return {"restart_required": restart_required}

    def _merge(self, target: dict[str, Any], patch: dict[str, Any], path: str) -> None:
        for k, v in patch.items():
            if k not in target:
                raise RpcError(-103, f"Argument 'config': unknown key '{path}{k}'")
            if k in ("id", "cfg_rev") and path.count(".") == 1:
                raise RpcError(-103, f"Argument 'config': '{path}{k}' is read-only")
            current = target[k]
            if isinstance(current, dict) and current and isinstance(v, dict):
                self._merge(current, v, f"{path}{k}.")
            elif current is None or v is None or _kind(current) == _kind(v):
                target[k] = copy.deepcopy(v)
            else:
                raise RpcError(-103, f"Argument 'config': '{path}{k}' must be {_kind(current)}")

    def _after_config(self, key: str, before: dict[str, Any], after: dict[str, Any]) -> None:
        if key == "sys":
            self.name = after["device"]["name"] or self.name
            if not after["debug"]["websocket"]["enable"]:
                # Turning the stream off closes the listeners (shelly.md §5).
                for peer in list(self._debug_peers):
                    self.spawn(peer.ws.close())
            if self.spec.sleeping:
                self.wake_period = float(after["sleep"]["wakeup_period"])
        elif key.startswith("input:"):
            i = int(key.split(":")[1])
            if after["type"] != before["type"]:
                self.input_states[i] = None if after["type"] == "button" else False

    # ---------------------------------------------------------------- switches
    def _switch(self, params: dict[str, Any]) -> tuple[int, _Switch]:
        cid = self._param(params, "id", int)
        if not 0 <= cid < len(self.switches):
            raise RpcError(-105, f"Argument 'id', value {cid} not found!")
        return cid, self.switches[cid]

    async def _m_switch_set(self, params: dict[str, Any], ctx: CallContext) -> Any:
        cid, sw = self._switch(params)
        on = self._param(params, "on", bool)
        toggle_after = self._param(params, "toggle_after", (int, float), required=False)
        if toggle_after is not None and toggle_after <= 0:
            raise RpcError(-103, "Argument 'toggle_after' must be positive")
        was_on = sw.output
        self.set_output(cid, on, source=ctx.source, toggle_after=toggle_after)
        return {"was_on": was_on}

    async def _m_switch_toggle(self, params: dict[str, Any], ctx: CallContext) -> Any:
        cid, sw = self._switch(params)
        was_on = sw.output
        self.set_output(cid, not was_on, source=ctx.source)
        return {"was_on": was_on}

    async def _m_switch_reset_counters(self, params: dict[str, Any], ctx: CallContext) -> Any:
        cid, sw = self._switch(params)
        previous = round(sw.total_wh, 3)
        sw.total_wh = 0.0
        sw.by_minute = [0.0, 0.0, 0.0]
        self._commit()
        return {"aenergy": {"total": previous}}

    def set_output(self, channel: int, on: bool, *, source: str, toggle_after: float | None = None) -> None:
        sw = self.switches[channel]
        if sw.timer is not None:
            sw.timer.cancel()
            sw.timer = None
        sw.timer_started_at = sw.timer_duration = None
        sw.output = on
        sw.source = source
        self._settle_power(sw)
        if toggle_after is not None and self.online:
            sw.timer_started_at = time.time()
            sw.timer_duration = float(toggle_after)
            sw.timer = asyncio.get_running_loop().call_later(
                toggle_after, lambda: self.set_output(channel, not on, source="timer"))
        self._commit()

    def _settle_power(self, sw: _Switch) -> None:
        if sw.output:
            sw.apower = sw.load_w * (1 + self.rng.uniform(-0.02, 0.02))
            sw.pf = 0.94 if sw.load_w > 50 else 0.62
            sw.current = sw.apower / sw.voltage / sw.pf
        else:
            sw.apower = sw.current = sw.pf = 0.0

    def set_load(self, channel: int, watts: float) -> None:
        """What is plugged into switch ``channel`` draws ``watts`` while on."""
        sw = self.switches[channel]
        sw.load_w = float(watts)
        self._settle_power(sw)
        self._commit()

    # ---------------------------------------------------------------- covers
    def _cover(self, params: dict[str, Any]) -> tuple[int, _Cover]:
        cid = self._param(params, "id", int)
        if not 0 <= cid < len(self.covers):
            raise RpcError(-105, f"Argument 'id', value {cid} not found!")
        return cid, self.covers[cid]

    async def _m_cover_open(self, params: dict[str, Any], ctx: CallContext) -> Any:
        cid, _ = self._cover(params)
        duration = self._param(params, "duration", (int, float), required=False)
        self.move_cover(cid, 100, source=ctx.source, duration=duration)
        return None

    async def _m_cover_close(self, params: dict[str, Any], ctx: CallContext) -> Any:
        cid, _ = self._cover(params)
        duration = self._param(params, "duration", (int, float), required=False)
        self.move_cover(cid, 0, source=ctx.source, duration=duration)
        return None

    async def _m_cover_stop(self, params: dict[str, Any], ctx: CallContext) -> Any:
        cid, _ = self._cover(params)
        self.stop_cover(cid, source=ctx.source)
        return None

    async def _m_cover_goto(self, params: dict[str, Any], ctx: CallContext) -> Any:
        cid, cv = self._cover(params)
        pos = self._param(params, "pos", int, required=False)
        rel = self._param(params, "rel", int, required=False)
        if pos is None and rel is None:
            raise RpcError(-103, "Argument 'pos' is missing")
        target = pos if pos is not None else int(round(cv.current_pos)) + int(rel)
        if pos is not None and not 0 <= pos <= 100:
            raise RpcError(-103, "Argument 'pos' must be between 0 and 100")
        self.move_cover(cid, max(0, min(100, target)), source=ctx.source, positioning=True)
        return None

    def move_cover(self, channel: int, target: int, *, source: str, duration: float | None = None,
                   positioning: bool = False) -> None:
        cv = self.covers[channel]
        if cv.task is not None:
            cv.task.cancel()
            cv.task = None
        if int(round(cv.current_pos)) == target:
            cv.source = source
            self._finish_cover(cv)
            self._commit()
            return
        opening = target > cv.current_pos
        cv.state = "opening" if opening else "closing"
        cv.last_direction = "open" if opening else "close"
        cv.source = source
        cv.move_started_at = time.time()
        cv.target_pos = target if positioning else None
        cv.apower = 118.0 + self.rng.uniform(-4, 4)
        cv.pf = 0.97
        cv.current = cv.apower / cv.voltage / cv.pf
        self._commit()
        if self.online:
            cv.task = self._spawn_boot(self._cover_travel(cv, target, duration))

    async def _cover_travel(self, cv: _Cover, target: int, duration: float | None) -> None:
        # Position moves linearly: 100 % takes cover_travel_time seconds.
        tick = max(0.05, self.cover_travel_time / 20)
        speed = 100.0 / max(self.cover_travel_time, 0.01)
        started = asyncio.get_running_loop().time()
        try:
            while True:
                await asyncio.sleep(tick)
                step = speed * tick
                if cv.current_pos < target:
                    cv.current_pos = min(target, cv.current_pos + step)
                else:
                    cv.current_pos = max(target, cv.current_pos - step)
                timed_out = duration is not None and asyncio.get_running_loop().time() - started >= duration
                if int(round(cv.current_pos)) == target or timed_out:
                    if not timed_out:
                        cv.current_pos = float(target)
                    self._finish_cover(cv)
                    self._commit()
                    return
                self._commit()
        finally:
            cv.task = None

    def _finish_cover(self, cv: _Cover) -> None:
        pos = int(round(cv.current_pos))
        cv.state = "open" if pos >= 100 else ("closed" if pos <= 0 else "stopped")
        cv.move_started_at = None
        cv.target_pos = None
        cv.apower = cv.current = cv.pf = 0.0

    def stop_cover(self, channel: int, *, source: str) -> None:
        cv = self.covers[channel]
        if cv.task is not None:
            cv.task.cancel()
            cv.task = None
        cv.source = source
        if cv.state in ("opening", "closing"):
            self._finish_cover(cv)
            cv.state = "stopped"
        self._commit()

    # ================================================================ notifications
    def _notifiable(self, status: dict[str, Any]) -> dict[str, Any]:
        out = dict(status)
        out["sys"] = {k: v for k, v in status["sys"].items() if k not in VOLATILE_SYS}
        return out

    def _commit(self) -> None:
        """Push what changed since the last push as one NotifyStatus (deep diff)."""
        if not self.online:
            return
        new = self._notifiable(self.full_status())
        diff = deep_diff(self._snapshot, new)
        self._snapshot = new
        if not diff:
            return
        for key, value in diff.items():
            comp = new.get(key)
            # Component changes carry their "id" (e.g. the per-minute aenergy push), except a
            # bare temperature update, which real devices send without it.
            if (":" in key and isinstance(value, dict) and isinstance(comp, dict) and "id" in comp
                    and set(value) - {"temperature", "id"}):
                value = diff[key] = {"id": comp["id"], **value}
            if isinstance(value, dict) and isinstance(comp, dict) and {"aenergy", "ret_aenergy"} & set(value):
                # The minute's energy counters are always pushed whole.
                value.update({k: comp[k] for k in ("aenergy", "ret_aenergy") if k in comp})
        self._notify("NotifyStatus", {"ts": round(time.time(), 2), **diff})
        for key, value in diff.items():
            self.log(f"shelly_notification:162 Status change of {key}: {json.dumps(value, separators=JSON_COMPACT)}")

    def _notify(self, method: str, params: dict[str, Any]) -> None:
        for peer in list(self._peers):
            dst = peer.notify_dst
            if dst is None or (self.guard.enabled and not peer.outbound and not peer.authenticated):
                continue
            frame = {"src": self.device_id, "dst": dst, "method": method, "params": params}
            peer.send(json.dumps(frame, separators=JSON_COMPACT))

    def _emit_events(self, events: list[dict[str, Any]]) -> None:
        ts = round(time.time(), 2)
        stamped = [{**event, "ts": ts} for event in events]
        self.events_sent.extend(stamped)
        if self.online:
            self._notify("NotifyEvent", {"ts": ts, "events": stamped})
        for event in stamped:
            self.log(f"shelly_notification:211 Event from {event['component']}: "
                     f"{json.dumps(event, separators=JSON_COMPACT)}")

    # ================================================================ things happening to the device
    def flip(self, channel: int = 0) -> asyncio.Task:
        """Someone used the wall switch / the device's own button: the state changes without
        homedash asking (NotifyStatus with a non-homedash ``source``)."""
        channels = len(self.switches) or len(self.covers) or len(self.input_states)
        if channels and not 0 <= channel < channels:
            raise ValueError(f"{self.model} has no channel {channel}")
        return self.spawn(self._flip(channel))

    async def _flip(self, channel: int) -> None:
        spec = self.spec
        if self.switches:
            if not 0 <= channel < len(self.switches):
                raise ValueError(f"{self.model} has no switch {channel}")
            if channel < len(self.input_states) and self.input_states[channel] is not None:
                self.input_states[channel] = not self.input_states[channel]
            self.set_output(channel, not self.switches[channel].output, source="switch")
        elif self.covers:
            cv = self.covers[channel]
            if cv.state in ("opening", "closing"):
                self.stop_cover(channel, source="switch")
            else:
                self.move_cover(channel, 100 if cv.last_direction == "close" else 0, source="switch")
        elif self.input_states:
            await self._press(channel, "single")
        elif spec.sensor:
            s = self._sensor
            s.temp_c = round(s.temp_c + self.rng.choice((-1, 1)) * self.rng.uniform(0.6, 1.5), 1)
            s.rh = round(min(95.0, max(10.0, s.rh + self.rng.uniform(-3, 3))), 1)
            if self.spec.sleeping and not self._awake:
                await self._wake_cycle("sensor")
            else:
                self._commit()
        elif spec.em:
            phase = self._phases["a"]
            phase.load_w = phase.load_w + 1500 if phase.load_w < 1500 else phase.load_w - 1500
            self._commit()

    def press(self, channel: int = 0, kind: str = "single") -> asyncio.Task:
        """A press on input ``channel``. Button-type inputs emit the NotifyEvent sequence of
        ``kind`` (single, double, triple, long, btn_down, btn_up); switch-type inputs are
        rocker switches and change ``input:N.state`` instead. A sleeper wakes up."""
        if not (self.spec.sleeping and not self.input_states):
            if not 0 <= channel < len(self.input_states):
                raise ValueError(f"{self.model} has no input {channel}")
            if kind.removesuffix("_push") not in PRESS_SEQUENCES:
                raise ValueError(f"unknown press kind {kind!r}; one of {sorted(PRESS_SEQUENCES)}")
        return self.spawn(self._press(channel, kind))

    async def _press(self, channel: int, kind: str) -> None:
        if self.spec.sleeping and not self.input_states:
            if not self._awake:
                await self._wake_cycle("button")
            return
        if not 0 <= channel < len(self.input_states):
            raise ValueError(f"{self.model} has no input {channel}")
        kind = kind.removesuffix("_push")
        if self.input_states[channel] is not None:
            self.input_states[channel] = not self.input_states[channel]
            in_mode = self.config.get(f"switch:{channel}", {}).get("in_mode")
            if channel < len(self.switches) and in_mode in ("follow", "flip"):
                target = self.input_states[channel] if in_mode == "follow" else not self.switches[channel].output
                self.set_output(channel, bool(target), source="switch")
            else:
                self._commit()
            return
        for i, event in enumerate(PRESS_SEQUENCES[kind]):
            if i:
                await asyncio.sleep(self.press_gap)
            self._emit_events([{"component": f"input:{channel}", "id": channel, "event": event}])

    def set_secret(self, value: str | None) -> None:
        """Set (or with None/"" remove) the device password, as the owner would in the
        device's web UI. Every client has to authenticate again."""
        self.password = value or None
        self.guard.set_password(self.password)
        self._credentials_changed()

    def _credentials_changed(self) -> None:
        # Debug-log listeners authenticated once, at the upgrade: throw them out. RPC frames
        # carry their own auth and fail on their next request; until then no pushes.
        for peer in list(self._debug_peers):
            self.spawn(peer.ws.close())
        for peer in list(self._peers):
            peer.authenticated = False

    def set_debug_udp(self, addr: str | None) -> None:
        """Same as ``Sys.SetConfig {"debug":{"udp":{"addr": addr}}}``; raises ValueError for a
        target outside loopback (unless in a private network namespace)."""
        if addr is not None:
            self._parse_udp_target(addr)
        try:
            self.apply_config("sys", {"debug": {"udp": {"addr": addr}}})
        except RpcError as err:
            raise ValueError(err.message) from err

    # ================================================================ lifecycle
    def _spawn_boot(self, coro: Awaitable[Any]) -> asyncio.Task:
        """A task that lives as long as this boot (power off / reboot cancels it)."""
        task = self.spawn(coro)
        self._boot_tasks.add(task)
        task.add_done_callback(self._boot_tasks.discard)
        return task

    async def start(self) -> None:
        self._wake_lock = self._wake_lock or asyncio.Lock()
        self._reboot_lock = self._reboot_lock or asyncio.Lock()
        await super().start()
        if self.spec.sleeping and not self._awake:
            # A sleeper is off the network between wakes; start() only reserves its port.
            await self.power_off()
        if self.spec.sleeping and self.wake_period and self._periodic_wake is None:
            self._periodic_wake = self.spawn(self._periodic_wakes())

    async def on_started(self) -> None:
        self._boot_wall = time.time()
        self._minute_ts = int(self._boot_wall // 60 * 60)
        self._shutdown_at = None
        self._restart_required = False
        self.guard.fw2 = self.fw2
        self.guard.forget_nonces()
        self._ws_active = dict(self.config["ws"])
        self._snapshot = self._notifiable(self.full_status())
        has_power = bool(self.switches or self.covers or self.spec.em)
        if self.drift_period and has_power:
            self._spawn_boot(self._drift_loop())
        if has_power and self.minute_period > 0:
            self._spawn_boot(self._minute_loop())
        self._spawn_boot(self._debug_chatter())
        self._spawn_boot(self._udp_loop())
        if not self.spec.sleeping and self._ws_active.get("enable") and self._ws_active.get("server"):
            self._spawn_boot(self._outbound_forever(self._ws_active["server"]))

    async def on_stopping(self) -> None:
        # base.stop() cancels every task of the device, the periodic wakes included.
        self._periodic_wake = None
        if self._sleep_now is not None:
            self._sleep_now.set()
        await self._end_boot()

    async def power_off(self) -> None:
        await self._end_boot()
        await super().power_off()

    async def _end_boot(self) -> None:
        current = asyncio.current_task()
        tasks = [t for t in self._boot_tasks if t is not current]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        for sw in self.switches:
            if sw.timer is not None:
                sw.timer.cancel()
                sw.timer = None
        for peer in [p for p in self._peers if p.outbound]:
            # Power loss: the TCP connection just dies, no close frame.
            self._peers.discard(peer)
            self._outbound.discard(peer)
            peer.close()
            response = getattr(peer.ws, "_response", None)
            if response is not None:
                response.close()

    async def reboot(self, downtime: float | None = None) -> None:
        """Restart: sockets drop, the device is unreachable for ``downtime`` (default
        ``reboot_time``) seconds, uptime starts from zero, RAM state (nonces, sessions) is gone."""
        self._reboot_lock = self._reboot_lock or asyncio.Lock()
        async with self._reboot_lock:
            if self._sleep_now is not None:
                self._sleep_now.set()
            await self.power_off()
            self._shutdown_at = None
            self._reset_reason = 3
            self.guard.forget_nonces()
            await asyncio.sleep(self.reboot_time if downtime is None else downtime)
            self.on_boot()
            if self.spec.sleeping:
                self.wake(cause="poweron")
            else:
                await self.power_on()

    async def _run_ota(self, target: str) -> None:
        try:
            self._emit_events([{"component": "sys", "event": "ota_begin", "msg": "in_progress"}])
            for percent in (4, 21, 47, 73, 96):
                await asyncio.sleep(self.ota_step)
                self._emit_events([{"component": "sys", "event": "ota_progress", "msg": "in_progress",
                                    "progress_percent": percent}])
            await asyncio.sleep(self.ota_step)
            if self.ota_will_fail:
                # The image did not verify: the device stays on its firmware and keeps running.
                self._emit_events([{"component": "sys", "event": "ota_error", "msg": "error"}])
                return
            self._emit_events([{"component": "sys", "event": "ota_success", "msg": "update applied"}])
            self.ver = target
            self.updates = {s: v for s, v in self.updates.items() if parse_version(v) > parse_version(target)}
            delay_ms = int(self.ota_step * 1000)
            self._emit_events([{"component": "sys", "event": "scheduled_restart", "time_ms": delay_ms}])
            await asyncio.sleep(self.ota_step)
        finally:
            self._ota_running = False
        await self.reboot()

    # ---------------------------------------------------------------- periodic physics
    async def _drift_loop(self) -> None:
        assert self.drift_period
        while True:
            await asyncio.sleep(self.drift_period * self.rng.uniform(0.85, 1.15))
            for sw in self.switches:
                sw.voltage = min(245.0, max(218.0, sw.voltage + self.rng.uniform(-0.8, 0.8)))
                if sw.output:
                    sw.apower = sw.load_w * (1 + self.rng.uniform(-0.04, 0.04))
                    sw.current = sw.apower / sw.voltage / max(sw.pf, 0.05)
                    sw.temp_c = min(75.0, sw.temp_c + self.rng.uniform(-0.2, 0.5))
                else:
                    sw.temp_c = max(30.0, sw.temp_c - self.rng.uniform(0.0, 0.4))
            for cv in self.covers:
                cv.voltage = min(245.0, max(218.0, cv.voltage + self.rng.uniform(-0.8, 0.8)))
            for ph in self._phases.values():
                if self.spec.em:
                    ph.load_w = max(0.0, ph.load_w * (1 + self.rng.uniform(-0.06, 0.06)))
                    ph.voltage = min(245.0, max(218.0, ph.voltage + self.rng.uniform(-0.6, 0.6)))
            self._commit()

    async def _minute_loop(self) -> None:
        while True:
            await asyncio.sleep(self.minute_period)
            self.energy_tick()

    def energy_tick(self) -> None:
        """Close one metering minute: by_minute (mWh, newest first), minute_ts, total (Wh).
        Real devices do this once a minute; tests call it or shorten ``minute_period``."""
        self._minute_ts += 60
        for item in [*self.switches, *self.covers]:
            milli = item.apower * 1000 / 60
            item.by_minute = [round(milli, 3), *item.by_minute[:2]]
            item.total_wh += item.apower / 60
        if self.spec.em:
            for ph in self._phases.values():
                ph.act_energy += ph.load_w / 60
        self._commit()

    # ================================================================ debug log
    def _debug_cfg(self) -> dict[str, Any]:
        return self.config["sys"]["debug"]

    def log(self, data: str, level: int = 2, fd: int = 1) -> None:
        """One firmware log line to every active debug sink (websocket listeners, UDP)."""
        debug = self._debug_cfg()
        if level > debug.get("level", 2):
            return
        to_ws = debug["websocket"]["enable"] and self._debug_peers
        to_udp = debug["udp"]["addr"] is not None
        if not (to_ws or to_udp):
            return
        now = time.time()
        if to_ws:
            text = json.dumps({"ts": round(now, 3), "level": level, "data": data, "fd": fd},
                              separators=JSON_COMPACT)
            for peer in list(self._debug_peers):
                peer.send(text)
        if to_udp:
            self._udp_seq += 1
            uptime = time.monotonic() - self.boot_time
            line = f"{self.device_id} {self._udp_seq} {uptime:.3f} {fd} {level}|{data}"
            self._udp_lines.append(line[:UDP_LINE_MAX])

    @property
    def debug_lines_dropped(self) -> int:
        return sum(p.dropped for p in self._debug_peers)

    def _debug_needs_auth(self) -> bool:
        return self.guard.enabled and not self.debug_log_open and not self._pre1

    async def _h_debug_log(self, request: web.Request) -> web.StreamResponse:
        if not self._debug_cfg()["websocket"]["enable"]:
            # Our choice: refuse while the stream is off, so a client must enable it first.
            return web.Response(status=404, text="debug websocket is disabled")
        if self._debug_needs_auth():
            verdict = self.guard.check_header("GET", request.raw_path, request.headers.get("Authorization"))
            if not verdict.ok:
                return self._http_auth_failure(verdict)
        if len(self._debug_peers) + self._debug_reserved >= DEBUG_CONNECTIONS:
            # Real devices allow 3 listeners; HTTP status for the 4th is our choice.
            return web.Response(status=503, text="too many debug log connections")
        ws = web.WebSocketResponse()
        if not ws.can_prepare(request).ok:
            return web.Response(status=400, text="websocket expected")
        self._debug_reserved += 1
        try:
            await ws.prepare(request)
        finally:
            self._debug_reserved -= 1
        self.track_websocket(ws)
        peer = _Peer(self, ws, limit=DEBUG_RING, faulty=False)
        self._debug_peers.add(peer)
        peer_addr = request.transport.get_extra_info("peername") if request.transport else None
        where = f"{peer_addr[0]}:{peer_addr[1]}" if peer_addr else "?"
        self.log(f"shelly_debug.cpp:236    Streaming logs to {where}")
        try:
            async for _ in ws:
                pass
        finally:
            self._debug_peers.discard(peer)
            self.untrack_websocket(ws)
            peer.close()
        return ws

    _CHATTER = (
        (2, "shelly_sys.cpp:318     heap {free} free, {min} min"),
        (2, "shos_wifi_sta.c:466    rssi {rssi} dBm, ch 6"),
        (2, "shelly_ws_srv.cpp:97   {peers} rpc ws client(s)"),
        (3, "mg_http_srv.c:771      idle conn {conn} closed"),
        (2, "shelly_cloud.cpp:212   cloud disabled, skipping"),
        (2, "shelly_sntp.cpp:88     time ok, drift {drift} ms"),
    )

    async def _debug_chatter(self) -> None:
        """Background firmware noise at ``debug_rate`` lines/s while anyone listens."""
        while True:
            rate = self.debug_rate
            await asyncio.sleep(1.0 / rate if rate > 0 else 1.0)
            debug = self._debug_cfg()
            if rate <= 0 or not ((debug["websocket"]["enable"] and self._debug_peers) or debug["udp"]["addr"]):
                continue
            level, template = self.rng.choice(self._CHATTER)
            self.log(template.format(free=self.spec.ram_size // 3 + self.rng.randint(0, 9999),
                                     min=self.spec.ram_size // 4, rssi=self._rssi,
                                     peers=sum(1 for p in self._peers if not p.outbound),
                                     conn=f"0x3ffc{self.rng.randint(0, 0xffff):04x}",
                                     drift=self.rng.randint(-40, 40)), level=level)

    def _parse_udp_target(self, addr: Any) -> tuple[str, int]:
        if not isinstance(addr, str) or ":" not in addr:
            raise ValueError(f"debug.udp.addr must be 'host:port', got {addr!r}")
        host, _, port_text = addr.rpartition(":")
        host = host.strip("[]")
        try:
            port = int(port_text)
        except ValueError as err:
            raise ValueError(f"bad port in {addr!r}") from err
        if not 0 < port < 65536:
            raise ValueError(f"bad port in {addr!r}")
        check_send_target(host)
        return host, port

    async def _udp_loop(self) -> None:
        """Ship buffered log lines: several per datagram, NUL-separated (shelly.md §5)."""
        sock: socket.socket | None = None
        try:
            while True:
                await asyncio.sleep(0.05)
                addr = self._debug_cfg()["udp"]["addr"]
                if addr is None or not self._udp_lines:
                    continue
                host, port = self._parse_udp_target(addr)   # refuses anything but loopback
                if sock is None:
                    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
                    sock.setblocking(False)
                chunk = b""
                while self._udp_lines:
                    line = self._udp_lines.popleft().encode("utf-8", "replace")
                    if chunk and len(chunk) + 1 + len(line) > UDP_DATAGRAM_MAX:
                        self._send_udp(sock, chunk, host, port)
                        chunk = b""
                    chunk = line if not chunk else chunk + b"\x00" + line
                if chunk:
                    self._send_udp(sock, chunk, host, port)
        finally:
            if sock is not None:
                sock.close()

    def _send_udp(self, sock: socket.socket, data: bytes, host: str, port: int) -> None:
        check_send_target(host)
        try:
            sock.sendto(data, (host, port))
            self.udp_datagrams_sent += 1
        except OSError:
            pass  # like the device: a full buffer or an unreachable port just loses lines

    # ================================================================ outbound websocket
    async def _outbound_forever(self, url: str) -> None:
        """Always-on devices keep their outbound websocket up, reconnecting with backoff."""
        delay = 1.0
        while True:
            try:
                await self._outbound_session(url, None)
                delay = 1.0
            except (OSError, aiohttp.ClientError, asyncio.TimeoutError, ValueError) as err:
                self.log(f"shelly_ws_client.cpp:140 connect to {url} failed: {err}", level=1)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _outbound_session(self, url: str, until: Callable[[], Awaitable[Any]] | None) -> None:
        """Connect to ``ws.server``, push NotifyFullStatus, answer RPC calls. With ``until``
        the device closes with "Bye" when it completes (a sleeper going back to sleep)."""
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"ws.server must be a ws:// URL, got {url!r}")
        check_send_target(parts.hostname)
        timeout = aiohttp.ClientTimeout(total=None, connect=5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            ws = await session.ws_connect(url, protocols=("json-rpc",), heartbeat=None)
            peer = _Peer(self, ws, outbound=True)
            self._outbound.add(peer)
            # The server hears NotifyFullStatus first; everyone else hears ws.connected.
            full = {"ts": round(time.time(), 2), **self.full_status()}
            peer.send(json.dumps({"src": self.device_id, "dst": "ws", "method": "NotifyFullStatus",
                                  "params": full}, separators=JSON_COMPACT))
            self._commit()
            self._peers.add(peer)
            reader = asyncio.create_task(self._read_outbound(peer))
            try:
                if until is None:
                    await reader
                else:
                    waiter = asyncio.ensure_future(until())
                    await asyncio.wait({reader, waiter}, return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    if not ws.closed:
                        await peer.drain()
                        await ws.close(code=aiohttp.WSCloseCode.OK, message=b"Bye")
            finally:
                reader.cancel()
                with contextlib.suppress(BaseException):
                    await reader
                self._peers.discard(peer)
                self._outbound.discard(peer)
                peer.close()
                if not ws.closed:
                    await ws.close()
                self._commit()

    async def _read_outbound(self, peer: _Peer) -> None:
        ctx = CallContext("ws_out", check_auth=False)  # outbound WS is not authenticated
        async for msg in peer.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            try:
                frame = json.loads(msg.data)
            except ValueError:
                continue
            with self.handling(f"WS_out {frame.get('method') if isinstance(frame, dict) else None}"):
                reply = await self._process_frame(frame, ctx)
            if reply is not None:
                peer.send(json.dumps(reply, separators=JSON_COMPACT))

    # ================================================================ sleeping devices
    def wake(self, seconds: float | None = None, cause: str = "button") -> asyncio.Task:
        """Wake a sleeper: it boots, is reachable, connects to ``ws.server`` (if set) with
        NotifyFullStatus, stays ``seconds`` (default ``awake_time``), says "Bye" and sleeps
        again. The returned task ends when the device is asleep again."""
        if not self.spec.sleeping:
            raise ValueError(f"{self.model} does not sleep")
        return self.spawn(self._wake_cycle(cause, seconds))

    def sleep(self) -> asyncio.Task:
        """End the current wake now (the same "Bye" and power-down as after awake_time)."""
        if self._sleep_now is not None:
            self._sleep_now.set()

        async def settle() -> None:
            assert self._wake_lock is not None
            async with self._wake_lock:
                pass

        return self.spawn(settle())

    async def _periodic_wakes(self) -> None:
        while True:
            await asyncio.sleep(self.wake_period or 7200)
            with contextlib.suppress(Exception):
                await self._wake_cycle("periodic")

    async def _wake_cycle(self, cause: str, seconds: float | None = None) -> None:
        assert self._wake_lock is not None
        if self._awake:
            return
        async with self._wake_lock:
            self._awake = True
            self._wake_cause = cause
            self._sleep_now = asyncio.Event()
            sleep_now = self._sleep_now
            try:
                s = self._sensor
                s.battery_pct = max(1, s.battery_pct - (1 if self.rng.random() < 0.05 else 0))
                s.battery_v = round(4.6 + s.battery_pct / 100 * 1.4, 2)
                await self.power_on()

                async def until() -> None:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(sleep_now.wait(), self.awake_time if seconds is None else seconds)

                ws_cfg = self.config["ws"]
                if ws_cfg.get("enable") and ws_cfg.get("server"):
                    try:
                        await self._outbound_session(ws_cfg["server"], until)
                    except (OSError, aiohttp.ClientError, asyncio.TimeoutError) as err:
                        self.log(f"shelly_ws_client.cpp:140 connect failed: {err}", level=1)
                        await until()
                else:
                    await until()
            finally:
                self._awake = False
                self._sleep_now = None
                await self.power_off()
