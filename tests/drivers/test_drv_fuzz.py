"""Hypothesis: no reply, however malformed, makes a parser raise anything but a DeviceError.

Two kinds of input: arbitrary JSON-like values (with keys the parsers look for, so the
interesting branches are reached) and real captures with random parts replaced, deleted
or retyped. Every value that comes back is checked for sanity too (no NaN/inf floats,
percentages within 0..100).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import math
from typing import Any

from tests.payloads import payload_files
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.drivers import (
    ChannelState,
    DeviceError,
    DeviceInfo,
    Event,
    LogLine,
    MyStromEnergy,
    PhaseReading,
    SystemState,
    gen1_events,
    merge_status,
    parse_actions,
    parse_button_device,
    parse_debug_log_message,
    parse_gen1_status,
    parse_gen1_system,
    parse_light_device,
    parse_mystrom_info,
    parse_rpc_events,
    parse_rpc_status,
    parse_rpc_system,
    parse_sensors,
    parse_shelly_info,
    parse_switch_report,
    parse_temperature,
    parse_udp_log_datagram,
)
from devices.drivers.http import parse_json
from devices.drivers.mystrom import parse_colour
from devices.drivers.shelly_rpc import (
    ShellyRpcSession,
    decode_frame,
    parse_www_authenticate,
    parse_ws_challenge,
    rpc_error_from,
)

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Keys the parsers look up, so generated dicts hit real branches.
KEYS = [
    # myStrom
    "type", "mac", "version", "name", "relay", "power", "Ws", "temperature", "boot_id",
    "energy_since_boot", "on", "color", "mode", "ramp", "voltage", "charge", "single", "double",
    "motion", "light", "humidity", "battery", "charger", "measured", "compensated", "url", "pir",
    "6001942C4FDD",
    # Shelly Gen1
    "gen", "fw", "auth", "relays", "rollers", "lights", "meters", "emeters", "inputs", "tmp", "hum",
    "bat", "ison", "total", "is_valid", "tC", "value", "event", "event_cnt", "input", "state",
    "current_pos", "positioning", "red", "green", "blue", "white", "gain", "brightness",
    "total_power", "ext_temperature", "gas_sensor", "alarm_state", "flood", "update", "wifi_sta",
    # Shelly RPC
    "id", "model", "app", "auth_en", "auth_domain", "profile", "switch:0", "cover:0", "light:0",
    "rgb:0", "rgbw:0", "cct:0", "input:0", "em:0", "emdata:0", "em1:0", "em1data:0", "pm1:0",
    "temperature:0", "humidity:0", "devicepower:0", "illuminance:0", "smoke:0", "flood:0", "sys",
    "wifi", "output", "apower", "aenergy", "ret_aenergy", "rgb", "ct", "a_act_power",
    "total_act_power", "total_act", "act_power", "rh", "percent", "V", "external", "lux", "alarm",
    "uptime", "wakeup_period", "available_updates", "stable", "events", "component", "params",
    "method", "result", "error", "code", "message", "realm", "nonce", "nc", "stale", "ts", "data",
    "level", "fd", "errors",
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(["", "true", "1", "hsv", "mono", "rgb", "color", "white", "120;100;50",
                       "FFFF0000", "S", "SS", "L", "open", "closing", "stop", "WS2", "BM1", "107",
                       "NotifyStatus", "NotifyEvent", "NotifyFullStatus", "single_push", "ota_progress"])
)
keys = st.sampled_from(KEYS) | st.text(max_size=8)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5),
    max_leaves=12,
)
json_dicts = st.dictionaries(keys, json_values, max_size=5)


def check_value(value: Any) -> None:
    """What a parser returns must be sane, not merely "not an exception"."""
    if isinstance(value, (list, tuple)):
        for item in value:
            check_value(item)
        return
    if isinstance(value, dict):
        for item in value.values():
            check_value(item)
        return
    if isinstance(value, (ChannelState, DeviceInfo, SystemState, PhaseReading, Event, LogLine)):
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if f.name == "raw":
                continue
            if isinstance(item, float):
                assert math.isfinite(item), f"{type(value).__name__}.{f.name} = {item}"
                if f.name.endswith("_pct"):
                    assert 0.0 <= item <= 100.0, f"{f.name} = {item}"
            elif isinstance(item, str):
                assert len(item) <= 4096
            else:
                check_value(item)
        if isinstance(value, DeviceInfo) and value.mac is not None:
            assert len(value.mac) == 12 and value.mac == value.mac.upper()


def survives(fn, *args, **kw) -> Any:
    try:
        result = fn(*args, **kw)
    except DeviceError:
        return None
    check_value(result)
    return result


MYSTROM_PARSERS = [
    parse_mystrom_info,
    lambda d: parse_switch_report(d, MyStromEnergy()),
    parse_switch_report,
    parse_light_device,
    parse_button_device,
    parse_actions,
    parse_sensors,
    parse_temperature,
]
SHELLY_PARSERS = [
    parse_shelly_info,
    parse_gen1_status,
    parse_gen1_system,
    parse_rpc_status,
    lambda d: parse_rpc_status(d, list(d)[:3] if isinstance(d, dict) else d),
    parse_rpc_system,
    parse_rpc_events,
    parse_ws_challenge,
    rpc_error_from,
]


@FUZZ
@given(json_values)
def test_mystrom_parsers_arbitrary(value):
    for parser in MYSTROM_PARSERS:
        survives(parser, value)


@FUZZ
@given(json_values)
def test_shelly_parsers_arbitrary(value):
    for parser in SHELLY_PARSERS:
        survives(parser, value)


@FUZZ
@given(json_values, json_values)
def test_gen1_events_and_energy_arbitrary(before, after):
    survives(gen1_events, before, after, device="d")
    energy = MyStromEnergy()
    for v in (before, after):
        b = v.get("boot_id") if isinstance(v, dict) else v
        e = v.get("energy_since_boot") if isinstance(v, dict) else v
        total = survives(energy.update, b, e)
        assert total is None or (math.isfinite(total) and total >= 0)


@FUZZ
@given(json_values, json_values)
def test_colour_arbitrary(color, mode):
    colour, colour_mode, brightness = parse_colour(color, mode)
    assert brightness is None or 0 <= brightness <= 100
    assert colour is None or all(math.isfinite(c) for c in colour)


@FUZZ
@given(json_dicts, json_dicts)
def test_merge_status_arbitrary(cache, patch):
    merge_status(cache, patch)
    survives(parse_rpc_status, cache, list(patch))


@FUZZ
@given(st.binary(max_size=600) | st.text(max_size=300).map(str.encode))
def test_bytes_parsers_arbitrary(data):
    survives(parse_json, data)
    survives(decode_frame, data)
    survives(decode_frame, data.decode("utf-8", "replace"))
    lines = parse_udp_log_datagram(data)
    check_value(lines)
    check_value(parse_debug_log_message(data))
    check_value(parse_debug_log_message(data.decode("latin-1")))
    survives(parse_www_authenticate, "Digest " + data.decode("latin-1"))


@FUZZ
@given(json_values)
def test_debug_log_message_arbitrary(value):
    check_value(parse_debug_log_message(json.dumps(value)))
    check_value(parse_debug_log_message(value))


def test_pathological_json():
    for body in (b"[" * 100_000, b'{"a":' * 50_000, b"1" * 5000, b"NaN", b"\xef\xbb\xbf{}", b'{"a": Infinity}'):
        try:
            value = parse_json(body)
        except DeviceError:
            continue
        check_value(value)
        survives(parse_gen1_status, value)


class _FakeSocket:
    """Stands in for the websocket when frames are fed straight to the dispatcher."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, text: str) -> None:
        self.sent.append(text)


def _dispatch_all(frames: list[Any]) -> ShellyRpcSession:
    async def run() -> ShellyRpcSession:
        session = ShellyRpcSession("127.0.0.1", 9)
        seen: list[Any] = []
        session.subscribe(seen.append)
        ws = _FakeSocket()
        for frame in frames:
            try:
                decoded = decode_frame(json.dumps(frame))
            except DeviceError:
                continue
            session._dispatch(ws, decoded)  # noqa: SLF001 - the unit under test
        await asyncio.sleep(0)
        for update in seen:
            check_value(list(update.channels))
            check_value(list(update.events))
        for text in ws.sent:
            assert "error" in json.loads(text)
        return session

    return asyncio.run(run())


notify_frames = st.fixed_dictionaries(
    {"method": st.sampled_from(["NotifyStatus", "NotifyFullStatus", "NotifyEvent", "Other"]), "params": json_values},
    optional={"id": json_values, "src": json_values, "result": json_values},
)


@FUZZ
@given(st.lists(notify_frames | json_values, max_size=6))
def test_session_dispatch_arbitrary(frames):
    session = _dispatch_all(frames)
    check_value(parse_rpc_status(session.status))


# ----------------------------------------------------------------------------- mutations

def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            found += _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += _paths(v, prefix + (i,))
    return found


@st.composite
def mutated(draw, files):
    path = draw(st.sampled_from(files))
    doc = copy.deepcopy(json.loads(path.read_text()))
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        paths = _paths(doc)
        target = draw(st.sampled_from(paths))
        if not target:
            doc = draw(json_values) if draw(st.booleans()) and draw(st.booleans()) else doc
            continue
        parent = doc
        for step in target[:-1]:
            parent = parent[step]
        last = target[-1]
        action = draw(st.sampled_from(["replace", "delete", "stringify", "nullify", "wrap"]))
        if action == "replace":
            parent[last] = draw(json_values)
        elif action == "delete":
            del parent[last]
        elif action == "stringify":
            parent[last] = json.dumps(parent[last])
        elif action == "nullify":
            parent[last] = None
        else:
            parent[last] = [parent[last]]
    return doc


MYSTROM_FILES = payload_files("mystrom")
SHELLY_FILES = payload_files("shelly")


if MYSTROM_FILES:

    @FUZZ
    @given(mutated(MYSTROM_FILES))
    def test_mystrom_parsers_mutated_captures(doc):
        for parser in MYSTROM_PARSERS:
            survives(parser, doc)

else:  # pragma: no cover - only without ../shared

    def test_mystrom_parsers_mutated_captures():
        import pytest

        pytest.skip("../shared/payloads/mystrom is absent")


if SHELLY_FILES:

    @FUZZ
    @given(mutated(SHELLY_FILES))
    def test_shelly_parsers_mutated_captures(doc):
        for parser in SHELLY_PARSERS:
            survives(parser, doc)
        if isinstance(doc, dict):
            survives(gen1_events, doc, doc)
            frame = {"method": "NotifyStatus", "params": doc}
            _dispatch_all([frame, {"method": "NotifyEvent", "params": doc}, {"method": "NotifyFullStatus", "params": doc}])

    @FUZZ
    @given(mutated([p for p in SHELLY_FILES if "debuglog" in p.name] or SHELLY_FILES))
    def test_debuglog_mutated_capture(doc):
        for item in doc if isinstance(doc, list) else [doc]:
            check_value(parse_debug_log_message(json.dumps(item)))

else:  # pragma: no cover - only without ../shared

    def test_shelly_parsers_mutated_captures():
        import pytest

        pytest.skip("../shared/payloads/shelly is absent")
