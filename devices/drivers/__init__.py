"""Device drivers: pure protocol code (no Django) for myStrom and Shelly devices.

Everything talks through an ``httpx.AsyncClient`` the caller owns (build it with
``make_client()``) or, for push channels, a ``websockets`` connection the driver owns.
Results are the typed values of ``types``; failures are the ``DeviceError`` family of
``errors``. ``probe()`` tells what is at an address.
"""

from __future__ import annotations

import httpx

from . import http
from .debuglog import DebugLogStream, parse_debug_log_message, parse_udp_log_datagram, parse_udp_log_line
from .errors import (
    AuthRequired,
    BadToken,
    CorsRefused,
    DeviceError,
    DeviceTimeout,
    ProtocolError,
    RpcError,
    Throttled,
    Unreachable,
    Unsupported,
    WrongCredentials,
)
from .gate import DeviceGate, gate_for
from .http import make_client
from .mystrom import (
    MyStrom,
    MyStromEnergy,
    MyStromTemperature,
    parse_actions,
    parse_button_device,
    parse_light_device,
    parse_mystrom_info,
    parse_sensors,
    parse_switch_report,
    parse_temperature,
)
from .shelly_gen1 import Gen1Poll, ShellyGen1, gen1_events, parse_gen1_status, parse_gen1_system, parse_shelly_info
from .shelly_rpc import (
    RpcAuth,
    SessionUpdate,
    ShellyRpcHttp,
    ShellyRpcSession,
    merge_status,
    parse_rpc_component,
    parse_rpc_events,
    parse_rpc_status,
    parse_rpc_system,
)
from .types import ChannelState, DeviceInfo, Event, LogLine, PhaseReading, SystemState


def _looks_like_shelly(data: object) -> bool:
    return isinstance(data, dict) and ("gen" in data or ("type" in data and "fw" in data))


async def probe(client: httpx.AsyncClient, host: str, port: int = 80, *, gate: DeviceGate | None = None) -> DeviceInfo:
    """Identify whatever answers at ``host:port``: ``/shelly`` first (every Shelly
    generation answers it without auth), then the myStrom info endpoints. Each request
    takes ``gate`` (default: the turn of that address, see gate.py).

    Raises the usual typed errors; a myStrom device with a token answers AuthRequired.
    """
    gate = gate if gate is not None else gate_for(host=host, port=port)
    async with gate:
        reply = await http.request(client, "GET", http.base_url(host, port) + "/shelly", host=host)
    if reply.status == 200:
        try:
            data = reply.json()
        except ProtocolError:
            data = None
        if _looks_like_shelly(data):
            try:
                return parse_shelly_info(data)
            except ProtocolError as exc:
                raise ProtocolError(exc.message, host=host) from exc
    return await MyStrom(client, host, port, gate=gate).info()


__all__ = [
    "AuthRequired",
    "BadToken",
    "ChannelState",
    "CorsRefused",
    "DebugLogStream",
    "DeviceError",
    "DeviceGate",
    "DeviceInfo",
    "DeviceTimeout",
    "Event",
    "Gen1Poll",
    "LogLine",
    "MyStrom",
    "MyStromEnergy",
    "MyStromTemperature",
    "PhaseReading",
    "ProtocolError",
    "RpcAuth",
    "RpcError",
    "SessionUpdate",
    "ShellyGen1",
    "ShellyRpcHttp",
    "ShellyRpcSession",
    "SystemState",
    "Throttled",
    "Unreachable",
    "Unsupported",
    "WrongCredentials",
    "gate_for",
    "gen1_events",
    "make_client",
    "merge_status",
    "parse_actions",
    "parse_button_device",
    "parse_debug_log_message",
    "parse_gen1_status",
    "parse_gen1_system",
    "parse_light_device",
    "parse_mystrom_info",
    "parse_rpc_component",
    "parse_rpc_events",
    "parse_rpc_status",
    "parse_rpc_system",
    "parse_sensors",
    "parse_shelly_info",
    "parse_switch_report",
    "parse_temperature",
    "parse_udp_log_datagram",
    "parse_udp_log_line",
    "probe",
]
