"""Assemble the runtime from settings: which services run in this process."""

from __future__ import annotations

from devices.runtime import Runtime


def build_runtime() -> Runtime:
    # Discovery and device sessions register their services here as they are built.
    return Runtime()
