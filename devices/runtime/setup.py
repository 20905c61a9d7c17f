"""Assemble the runtime from settings: which services run in this process."""

from __future__ import annotations

from devices.runtime import Runtime


def build_runtime(*, manager_options: dict | None = None) -> Runtime:
    from devices.runtime.manager import DeviceManager

    runtime = Runtime()
    manager = DeviceManager(**(manager_options or {}))
    runtime.manager = manager  # type: ignore[attr-defined]
    runtime.add_service("devices", manager.run)
    return runtime
