"""`latency`: every chunk waits `latency_ms` plus a uniform draw in [-jitter_ms, +jitter_ms]
(never below zero) before it is passed on; order is kept, so a busy connection is also slower."""

from __future__ import annotations

import asyncio
import random

from chaos.wire.connection import Connection
from chaos.wire.toxics.base import MAX_MS, Toxic, attribute


class Latency(Toxic):
    kind = "latency"
    summary = "Delay each chunk this long."
    option = "latency_ms"
    latency_ms: float = attribute(0.0, 0.0, MAX_MS, "Delay added to each chunk, ms.")
    jitter_ms: float = attribute(0.0, 0.0, MAX_MS, "Uniform +- spread around the delay, ms.")

    def delay_s(self, rng: random.Random) -> float:
        return max(0.0, self.latency_ms + rng.uniform(-self.jitter_ms, self.jitter_ms)) / 1000

    async def pipe(self, chunk: bytes, conn: Connection, rng: random.Random) -> bytes | None:
        await asyncio.sleep(self.delay_s(rng))
        return chunk
