"""Shelly Gen1 CoIoT (CoAP over UDP 5683): just enough to know *that* a device changed.

Gen1 devices send a status message (non-standard CoAP code 30) to their CoIoT peer on
every change and every `update_period`. homedash treats it as a push notification: a new
status serial (option 3420) from a known device wakes that device's session, which reads
`/status` at once. The sensor-id tables of `cit/d` stay out of the data path, so `/status`
remains the one parser of Gen1 state.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

CODE_STATUS = 30
OPTION_DEVICE_ID = 3332   # "SHSW-1#34945472A643#2": model, MAC (or short id), CoIoT version
OPTION_VALIDITY = 3412
OPTION_SERIAL = 3420
MAX_MESSAGE = 4096        # a status of the largest Gen1 device is well under 1.5 KiB


@dataclass(frozen=True, slots=True)
class CoiotMessage:
    code: int
    model: str | None
    device: str | None      # MAC or short id as the device puts it in option 3332
    serial: int | None
    payload: Any = None     # parsed JSON, or None


def _extended(nibble: int, rest: bytes, at: int) -> tuple[int, int] | None:
    if nibble < 13:
        return nibble, at
    if nibble == 13:
        return (rest[at] + 13, at + 1) if at < len(rest) else None
    if nibble == 14:
        return (struct.unpack_from("!H", rest, at)[0] + 269, at + 2) if at + 2 <= len(rest) else None
    return None  # 15 is reserved (payload marker handled by the caller)


def parse_coiot(data: bytes) -> CoiotMessage | None:
    """Decode one datagram; None for anything that is not a well-formed CoAP message."""
    if not isinstance(data, (bytes, bytearray)) or not 4 <= len(data) <= MAX_MESSAGE:
        return None
    if data[0] >> 6 != 1:  # CoAP version 1
        return None
    token_length, code = data[0] & 0x0F, data[1]
    if token_length > 8 or len(data) < 4 + token_length:
        return None
    rest = bytes(data[4 + token_length:])
    at, number = 0, 0
    options: dict[int, bytes] = {}
    while at < len(rest) and rest[at] != 0xFF:
        head = rest[at]
        at += 1
        delta = _extended(head >> 4, rest, at)
        if delta is None:
            return None
        number += delta[0]
        length = _extended(head & 0x0F, rest, delta[1])
        if length is None:
            return None
        size, at = length
        if at + size > len(rest):
            return None
        options.setdefault(number, rest[at:at + size])
        at += size
    payload = None
    if at < len(rest) and rest[at] == 0xFF:
        try:
            payload = json.loads(rest[at + 1:].decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            payload = None
    model = device = None
    ident = options.get(OPTION_DEVICE_ID)
    if ident:
        parts = ident.decode("utf-8", "replace").split("#")
        model = parts[0][:32] or None
        device = parts[1][:32].upper() if len(parts) > 1 and parts[1] else None
    serial = None
    raw_serial = options.get(OPTION_SERIAL)
    if raw_serial is not None and len(raw_serial) <= 4:
        serial = int.from_bytes(raw_serial, "big")
    return CoiotMessage(code=code, model=model, device=device, serial=serial, payload=payload)


def belongs_to(message: CoiotMessage, mac: str) -> bool:
    """Option 3332 carries the full MAC or, on some firmware, only its last 6 digits."""
    if not message.device or not mac:
        return False
    return mac.upper() == message.device or mac.upper().endswith(message.device[-6:])
