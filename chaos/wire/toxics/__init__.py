"""The wire faults, one file each, registered by kind in `TOXICS` (like toxiproxy's toxics).

Adding a fault is one file here with one subclass of `Toxic` (it registers itself); the proxy,
the admin plane and the CLI read the registry.
"""

from __future__ import annotations

import importlib
import pkgutil

from chaos.wire.toxics.base import TOXICS

__all__ = ["TOXICS"]


def _load() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")


_load()
