"""Where actions, conditions, measures, observers and scenario kinds register themselves.

Each lives in one file that calls `register` at import; `load_all()` imports the packages that
hold them, so the registry is complete before an experiment is checked. A name registered twice is
a programming error and fails loudly.
"""

from __future__ import annotations

import importlib
from typing import Any

from herdlab.registry import Registry, load_package

ACTIONS: Registry[Any] = Registry("action")
CONDITIONS: Registry[Any] = Registry("condition")
MEASURES: Registry[Any] = Registry("measure")
OBSERVERS: Registry[Any] = Registry("observer")
KINDS: Registry[Any] = Registry("scenario kind")

_PACKAGES = (
    "chaos.engine.actions",
    "chaos.engine.measures",
    "chaos.engine.observers",
    "chaos.scenarios",
)
_MODULES = ("chaos.engine.conditions",)
_loaded = False


def load_all() -> None:
    """Imports every module of the packages that register things (once)."""
    global _loaded
    if _loaded:
        return
    for module in _MODULES:
        importlib.import_module(module)
    for package_name in _PACKAGES:
        load_package(package_name)
    _loaded = True
