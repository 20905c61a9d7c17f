"""Finding the household's devices: myStrom UDP announcements (``mystrom_udp``), Shelly
mDNS (``mdns``), subnet scan and manual add (``scan``), all ending in the inbox
(``inbox``). ``service.Discovery`` ties them together for the runtime.

For the runtime::

    from devices import discovery
    for name, fn in discovery.services(settings, subscribers=[on_device]):
        runtime.add_service(name, fn)

``on_device(outcome)`` (sync or async) receives an ``inbox.Outcome`` for every device
recorded: ``outcome.kind`` is "created", "moved" (``old_host``/``old_port`` say from
where), "pending" (a device with credentials claimed elsewhere: ``pending_host``/
``pending_port``; it did not move, staff decide in the inbox) or "unchanged".

The names below are imported lazily: the pure parsers must stay importable without Django
being set up.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "Discovery": "service",
    "add_device": "service",
    "current": "service",
    "scan_and_record": "service",
    "services": "service",
    "Outcome": "inbox",
    "Candidate": "identify",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'devices.discovery' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{module}"), name)


__all__ = sorted(_LAZY)
