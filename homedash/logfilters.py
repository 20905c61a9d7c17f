"""Keeping the devices' secrets out of the log.

At HOMEDASH_LOG_LEVEL=DEBUG third-party libraries log what they send: the websocket client
logs every request header (the debug-log stream's `Authorization: Digest`), httpcore logs
response headers, and frames carry RPC `auth` objects. Settings keep those loggers at INFO;
this filter, on the console handler, is the second line: whatever reaches the log has
credential values replaced, so a log shared in a bug report gives nothing to crack offline.
"""

from __future__ import annotations

import logging
import re

HIDDEN = "[hidden]"

_RULES: list[tuple[re.Pattern[str], str]] = [
    # Header lines and header tuples: "Authorization: Digest ...", (b'Authorization', b'Basic ...'),
    # myStrom's "Token: ...", whatever the quoting.
    (re.compile(r"""(?i)\b((?:proxy-)?authorization|token|x-api-key|cookie|set-cookie)"""
                r"""(['"]\s*,\s*b?['"]|['"]?\s*[:=]\s*b?['"]?)[^'"\r\n]+"""), r"\1\2" + HIDDEN),
    # JSON (RPC frames, settings): the auth object and any password-like field.
    (re.compile(r"""(?i)("(?:auth|password|pass|old_pass|new_pass|ha1|response|cnonce|token|key)"\s*:\s*)"""
                r"""(\{[^{}]*\}?|"(?:[^"\\]|\\.)*"?)"""), r'\1"' + HIDDEN + '"'),
    # Digest parameters outside a header line.
    (re.compile(r"""(?i)\b(response|cnonce|password)=("?)[^",\s]+"""), r"\1=\2" + HIDDEN),
]


def redact(text: str) -> str:
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


class HideSecrets(logging.Filter):
    """Rewrites a record's message with credential values hidden (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is logging's problem to report, not ours
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True
