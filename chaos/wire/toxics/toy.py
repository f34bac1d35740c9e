"""`toy`: every chunk after the first `skip` waits `wait_ms` (a toy to show a toxic is one file)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chaos.wire.toxics import register
from chaos.wire.toxics.base import MAX_MS, Toxic, attribute

if TYPE_CHECKING:
    from chaos.wire.connection import Connection


@register
@dataclass(frozen=True)
class Toy(Toxic):
    kind = "toy"
    summary = "Delay each chunk after the first few this long."
    option = "wait_ms"
    wait_ms: float = attribute(0.0, 0.0, MAX_MS, "Delay of each chunk, ms.")
    skip: float = attribute(0.0, 0.0, 1e6, "Chunks passed undelayed first.", whole=True)

    async def pipe(self, chunk: bytes, conn: Connection, rng: random.Random) -> bytes | None:
        seen = conn.counters.get(id(self), 0)
        conn.counters[id(self)] = seen + 1
        if seen >= self.skip:
            await asyncio.sleep(self.wait_ms / 1000)
        return chunk
