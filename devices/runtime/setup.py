"""Assemble the runtime from settings: which services run in this process."""

from __future__ import annotations

from devices.runtime import Runtime


def build_runtime(*, manager_options: dict | None = None, coiot_host: str = "0.0.0.0",
                  coiot_port: int | None = None) -> Runtime:
    """`coiot_port=None` leaves the CoIoT listener out (tests that do not need it)."""
    from devices.runtime.manager import DeviceManager

    runtime = Runtime()
    manager = DeviceManager(**(manager_options or {}))
    runtime.manager = manager  # type: ignore[attr-defined]
    runtime.add_service("devices", manager.run)
    if coiot_port is not None:
        from devices.runtime.coiot import run_coiot

        runtime.add_service("coiot", lambda rt: run_coiot(manager, rt, coiot_host, coiot_port))
    return runtime


def build_runtime_from_settings() -> Runtime:
    """What `serve` runs: the device manager, the CoIoT listener (unless disabled) and
    discovery (unless disabled)."""
    from django.conf import settings

    from devices import discovery

    runtime = build_runtime(coiot_host=settings.DISCOVERY_BIND,
                            coiot_port=settings.COIOT_PORT if settings.COIOT_PORT else None)
    # Discovery writes what it finds to the database; adopted devices that move are saved
    # through post_save, which is how the device manager hears about them.
    for name, service in discovery.services(settings, mdns=settings.MDNS):
        runtime.add_service(name, service)
    # Shelly debug logs: started and stopped by users, one upstream per device.
    from devices.debuglogs import install_from_settings

    install_from_settings(runtime)
    return runtime
