"""`bandwidth`: at most `rate_kbps` KiB per second in the direction; the pipe reads a tenth of a
second's worth at a time and waits the time that many bytes take at the rate."""

from __future__ import annotations

import asyncio
import random

from chaos.wire.connection import Connection
from chaos.wire.toxics.base import Toxic, attribute


class Bandwidth(Toxic):
    kind = "bandwidth"
    summary = "KiB/s at most."
    option = "rate_kbps"
    rate_kbps: float = attribute(1024.0, 0.001, 10_485_760.0, "KiB per second at most.")

    @property
    def bytes_per_s(self) -> float:
        return self.rate_kbps * 1024

    def read_size(self) -> int:
        return max(1, int(self.bytes_per_s / 10))

    async def pipe(self, chunk: bytes, conn: Connection, rng: random.Random) -> bytes | None:
        await asyncio.sleep(len(chunk) / self.bytes_per_s)
        return chunk
