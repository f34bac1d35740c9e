"""The wire faults, one file each, registered by kind in `TOXICS` (like toxiproxy's toxics).

Adding a fault is one file here with one subclass of `Toxic` (it registers itself); the proxy,
the admin plane and the CLI read the registry.
"""

from __future__ import annotations

from chaos.wire.toxics.base import TOXICS
from herdlab.registry import load_package

__all__ = ["TOXICS"]


load_package(__name__)
