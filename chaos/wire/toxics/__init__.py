"""The wire faults, one file each, registered by kind in `TOXICS` (like toxiproxy's toxics).

Adding a fault is one file here with one `@register` class; the proxy, the admin plane and the
CLI read the registry.
"""

from __future__ import annotations

from chaos.wire.toxics.base import Toxic
from herdlab.registry import Registry, load_package

TOXICS: Registry[type[Toxic]] = Registry("wire fault kind")


def register(cls: type[Toxic]) -> type[Toxic]:
    return TOXICS.register(cls.kind, cls)


load_package(__name__)
