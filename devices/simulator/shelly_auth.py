"""Digest authentication as Shelly Gen2+ firmware does it (shelly.md §4.2).

One :class:`DigestGuard` per simulated device protects HTTP (``Authorization: Digest``
header, RFC 7616 with SHA-256 and standard HA2 = sha256("METHOD:uri")) and websocket frames
(the JSON ``auth`` object, HA2 = sha256("dummy_method:dummy_uri")). Both share one nonce table,
as on the device, so a client that opens fresh challenges on HTTP and websocket at once
competes for the same 32 slots.

Two firmware behaviours are modelled because homedash has to survive both:

* before 2.0.0: numeric nonces (unix-time-like), no expiry, ``nc`` not tracked, no throttling;
* 2.0.0 and later: opaque base64 nonces that expire (``stale=true``), ``nc`` must start at 1
  per nonce and strictly increase, 32 nonce slots with a short throttle when they run out
  (429 "Too many requests"), and failed attempts counted in a sliding window, after which every
  request is answered 429 "Too many failed authentication attempts" for a while. Failures
  during the lock-out (a client replaying a dead nonce) extend it — the field bug in
  home-assistant/core#177257.

The device never stores the password, only HA1 (that is what ``Shelly.SetAuth`` transmits).
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import re
import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

USERNAME = "admin"
ALGORITHM = "SHA-256"
# The websocket/JSON flavour hashes a fixed pseudo request instead of METHOD:uri.
JSON_HA2_INPUT = "dummy_method:dummy_uri"

TOO_MANY_FAILURES = "Too many failed authentication attempts"
TOO_MANY_REQUESTS = "Too many requests"


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def make_ha1(realm: str, password: str) -> str:
    return sha256_hex(f"{USERNAME}:{realm}:{password}")


def digest_response(ha1: str, nonce: str, nc: str, cnonce: str, ha2: str) -> str:
    return sha256_hex(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")


_HEADER_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,]*)\s*(?:,|$)')


def parse_digest_header(value: str) -> dict[str, str] | None:
    """Parse ``Authorization: Digest k=v, k="v"``. Values keep everything after the first
    '=' so base64 padding survives (the ioBroker bug in shelly.md pitfall 4)."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        return None
    params: dict[str, str] = {}
    for match in _HEADER_PARAM.finditer(rest):
        key, raw = match.group(1).lower(), match.group(2).strip()
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            raw = raw[1:-1].replace('\\"', '"')
        params[key] = raw
    return params


@dataclass
class Challenge:
    """What the device answers with a 401: enough for the HTTP header and the WS frame."""

    realm: str
    nonce: str | int
    stale: bool = False

    def www_authenticate(self) -> str:
        text = (f'Digest qop="auth", realm="{self.realm}", nonce="{self.nonce}", '
                f"algorithm={ALGORITHM}")
        if self.stale:
            text += ", stale=true"
        return text

    def ws_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"auth_type": "digest", "nonce": self.nonce, "nc": 1,
                                   "realm": self.realm, "algorithm": ALGORITHM}
        if self.stale:
            message["stale"] = True
        return message


@dataclass
class Verdict:
    """Outcome of one authentication check."""

    ok: bool
    challenge: Challenge | None = None   # answer 401 with this challenge
    throttled: str | None = None         # answer 429 with this message

    @property
    def status(self) -> int:
        return 200 if self.ok else (429 if self.throttled else 401)


@dataclass
class _Slot:
    issued: float
    last_used: float
    last_nc: int = 0


@dataclass
class AuthStats:
    """Counters tests and the fleet table read."""

    challenges: int = 0
    successes: int = 0
    failures: int = 0
    stale: int = 0
    throttled: int = 0
    lockouts: int = 0
    nc_rejected: int = 0
    recent: collections.deque = field(default_factory=lambda: collections.deque(maxlen=50))


class DigestGuard:
    """Nonce table, replay protection and throttling of one device."""

    def __init__(
        self,
        realm: str,
        *,
        fw2: bool,
        nonce_lifetime: float = 3600.0,
        nonce_slots: int = 32,
        slot_throttle: float = 2.0,
        max_nc: int = 30000,
        fail_limit: int = 5,
        fail_window: float = 600.0,
        lockout_steps: tuple[float, ...] = (10.0, 30.0, 60.0, 300.0),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.realm = realm
        self.fw2 = fw2
        self.nonce_lifetime = nonce_lifetime
        self.nonce_slots = nonce_slots
        self.slot_throttle = slot_throttle
        self.max_nc = max_nc
        self.fail_limit = fail_limit
        self.fail_window = fail_window
        self.lockout_steps = lockout_steps or (10.0,)
        self.clock = clock
        self.ha1: str | None = None
        self.stats = AuthStats()
        self._slots: collections.OrderedDict[str, _Slot] = collections.OrderedDict()
        self._failures: collections.deque[float] = collections.deque(maxlen=max(1, fail_limit) * 4)
        self._lockout_until = 0.0
        self._lockout_level = 0
        self._slot_throttle_until: float | None = None
        self._numeric_next = int(time.time())
        self._key = secrets.token_bytes(16)

    # ------------------------------------------------------------ configuration
    @property
    def enabled(self) -> bool:
        return self.ha1 is not None

    def set_password(self, password: str | None) -> None:
        self.set_ha1(make_ha1(self.realm, password) if password else None)

    def set_ha1(self, ha1: str | None) -> None:
        """New credentials: every nonce handed out so far is forgotten, so every client
        session has to go through a fresh challenge."""
        self.ha1 = ha1.lower() if ha1 else None
        self.forget_nonces()

    def forget_nonces(self) -> None:
        """Reboot / new secret: nonce table and the nonce-signing key live in RAM."""
        self._slots.clear()
        self._key = secrets.token_bytes(16)
        self._slot_throttle_until = None

    def reset_throttling(self) -> None:
        self._failures.clear()
        self._lockout_until = 0.0
        self._lockout_level = 0

    @property
    def locked_out(self) -> bool:
        return self.fw2 and self.clock() < self._lockout_until

    @property
    def nonces_in_use(self) -> int:
        return len(self._slots)

    # ------------------------------------------------------------ nonces
    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:10]

    def _new_nonce(self) -> str | int:
        if not self.fw2:
            # Pre-2.0 firmware hands out the current time as a decimal number; keep them
            # distinct so the bounded table can tell them apart.
            self._numeric_next = max(self._numeric_next + 1, int(time.time()))
            return self._numeric_next
        # 2.x nonces are opaque base64 — ours carry their own issue time and a MAC so an
        # expired one is recognised as stale even after its slot was recycled.
        payload = struct.pack(">dI", self.clock(), secrets.randbits(32))
        return base64.b64encode(payload + self._sign(payload)).decode("ascii")

    def _nonce_issued_at(self, nonce: str) -> float | None:
        """Issue time of a nonce this device signed since its last reboot, else None."""
        try:
            raw = base64.b64decode(nonce.encode("ascii"), validate=True)
        except (ValueError, UnicodeEncodeError):
            return None
        if len(raw) != 22 or not hmac.compare_digest(raw[12:], self._sign(raw[:12])):
            return None
        return struct.unpack(">dI", raw[:12])[0]

    def challenge(self, *, stale: bool = False) -> Verdict:
        """Hand out a fresh nonce (a 401), or 429 while the device refuses to."""
        now = self.clock()
        if self.locked_out:
            self.stats.throttled += 1
            return Verdict(False, throttled=TOO_MANY_FAILURES)
        if self.fw2:
            for key in [k for k, s in self._slots.items() if now - s.issued > self.nonce_lifetime]:
                del self._slots[key]
        if len(self._slots) >= self.nonce_slots:
            if not self.fw2:
                self._slots.popitem(last=False)
            else:
                # All slots taken: fw 2.x refuses new nonces for a short throttle window,
                # then recycles the least recently used slot (openhab-addons#21179).
                if self._slot_throttle_until is None:
                    self._slot_throttle_until = now + self.slot_throttle
                if now < self._slot_throttle_until:
                    self.stats.throttled += 1
                    return Verdict(False, throttled=TOO_MANY_REQUESTS)
                self._slot_throttle_until = None
                lru = min(self._slots, key=lambda k: self._slots[k].last_used)
                del self._slots[lru]
        nonce = self._new_nonce()
        self._slots[str(nonce)] = _Slot(issued=now, last_used=now)
        self.stats.challenges += 1
        if stale:
            self.stats.stale += 1
        return Verdict(False, challenge=Challenge(self.realm, nonce, stale=stale))

    # ------------------------------------------------------------ checks
    def check_header(self, method: str, uri: str, header: str | None) -> Verdict:
        """HTTP request: ``Authorization: Digest ...`` with RFC HA2."""
        if not self.enabled:
            return Verdict(True)
        if not header:
            return self._no_credentials()
        params = parse_digest_header(header)
        if params is None:
            return self._no_credentials()
        if params.get("uri") not in (None, uri):
            return self._failed("uri mismatch")
        nc_text = params.get("nc", "")
        try:
            nc_value = int(nc_text, 16)
        except ValueError:
            return self._failed("bad nc")
        ha2 = sha256_hex(f"{method.upper()}:{params.get('uri', uri)}")
        return self._verify(params.get("username"), params.get("realm"), params.get("nonce", ""),
                            nc_text, nc_value, params.get("cnonce", ""),
                            params.get("response", ""), params.get("qop", "auth"),
                            params.get("algorithm", ALGORITHM), ha2)

    def check_json(self, auth: Any) -> Verdict:
        """Websocket / POST /rpc frame: the JSON ``auth`` object with the dummy HA2."""
        if not self.enabled:
            return Verdict(True)
        if auth is None:
            return self._no_credentials()
        if not isinstance(auth, dict):
            return self._failed("auth is not an object")
        nc_raw = auth.get("nc", 1)
        # The device hashes nc exactly as it was sent (aioshelly: int -> "1", matterbridge:
        # "00000001"), and counts it as a number.
        if isinstance(nc_raw, bool) or not isinstance(nc_raw, (int, str)):
            return self._failed("bad nc")
        nc_text = str(nc_raw)
        try:
            nc_value = int(nc_raw) if isinstance(nc_raw, int) else int(nc_raw, 16 if len(nc_raw) == 8 else 10)
        except ValueError:
            return self._failed("bad nc")
        nonce = auth.get("nonce")
        return self._verify(auth.get("username"), auth.get("realm"),
                            "" if nonce is None else str(nonce), nc_text, nc_value,
                            str(auth.get("cnonce", "")), str(auth.get("response", "")), "auth",
                            str(auth.get("algorithm", ALGORITHM)), sha256_hex(JSON_HA2_INPUT))

    def _verify(self, username: Any, realm: Any, nonce: str, nc_text: str, nc_value: int,
                cnonce: str, response: str, qop: str, algorithm: str, ha2: str) -> Verdict:
        assert self.ha1 is not None
        now = self.clock()
        if username != USERNAME or realm != self.realm:
            return self._failed("wrong user or realm")
        if algorithm.upper() != ALGORITHM or qop != "auth":
            return self._failed("unsupported algorithm/qop")
        expected = digest_response(self.ha1, nonce, nc_text, cnonce, ha2)
        if not hmac.compare_digest(expected, response.lower()):
            return self._failed("wrong response")
        if self.locked_out:
            # The lock-out dropped every nonce, so whatever nonce this is, it is dead: the
            # client did not back off and re-challenge. That counts as another failure and
            # keeps the device locked (home-assistant/core#177257).
            return self._failed("nonce presented during lock-out")
        slot = self._slots.get(nonce)
        if not self.fw2:
            if slot is None:
                # Forgotten nonce (reboot, table full): old firmware simply challenges again.
                return self.challenge()
            slot.last_used = now
            return self._success()
        issued = slot.issued if slot is not None else self._nonce_issued_at(nonce)
        if issued is None:
            # Not a nonce of this boot of this device: a replay of a dead nonce.
            return self._failed("unknown nonce")
        if now - issued > self.nonce_lifetime or slot is None or nc_value > self.max_nc:
            # Correct digest on an expired / recycled / exhausted nonce: re-challenge with
            # stale=true, which a good client must not report as a wrong password.
            self._slots.pop(nonce, None)
            return self.challenge(stale=True)
        if nc_value <= slot.last_nc or (slot.last_nc == 0 and nc_value != 1):
            self.stats.nc_rejected += 1
            return self._failed(f"nc {nc_value} after {slot.last_nc}")
        slot.last_nc = nc_value
        slot.last_used = now
        self._slots.move_to_end(nonce)
        return self._success()

    def _success(self) -> Verdict:
        self.stats.successes += 1
        self._lockout_level = 0
        return Verdict(True)

    def _no_credentials(self) -> Verdict:
        # Asking for a challenge is not a failed attempt.
        return self.challenge()

    def _failed(self, why: str) -> Verdict:
        now = self.clock()
        self.stats.failures += 1
        self.stats.recent.append((now, why))
        if not self.fw2:
            return self.challenge()
        while self._failures and now - self._failures[0] > self.fail_window:
            self._failures.popleft()
        self._failures.append(now)
        last = len(self.lockout_steps) - 1
        if self.locked_out:
            # Still failing while locked out (typically a dead nonce being replayed):
            # the lock-out starts over at the current step.
            self._lockout_until = now + self.lockout_steps[min(self._lockout_level - 1, last)]
            self.stats.throttled += 1
            return Verdict(False, throttled=TOO_MANY_FAILURES)
        if len(self._failures) >= self.fail_limit:
            # Each lock-out in a row lasts longer (10 s, 30 s, 60 s, 5 min by default).
            self._lockout_until = now + self.lockout_steps[min(self._lockout_level, last)]
            self._lockout_level += 1
            self.stats.lockouts += 1
            self._failures.clear()
            # Every nonce dies with the lock-out; clients must come back for a new one.
            self._slots.clear()
            self.stats.throttled += 1
            return Verdict(False, throttled=TOO_MANY_FAILURES)
        return self.challenge()
