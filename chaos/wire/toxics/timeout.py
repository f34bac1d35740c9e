"""`timeout`: the direction's bytes are dropped, and `timeout_ms` after it meets a connection
that connection is closed (FIN, both sides). With 0 it is never closed: a blackhole."""

from __future__ import annotations

import asyncio
import random

from chaos.wire.connection import Connection
from chaos.wire.toxics.base import MAX_MS, Toxic, attribute


class Timeout(Toxic):
    kind = "timeout"
    summary = "Drop bytes; close after this."
    option = "timeout_ms"
    holds = True
    timeout_ms: float = attribute(0.0, 0.0, MAX_MS, "Close the connection after this, ms.")

    async def pipe(self, chunk: bytes, conn: Connection, rng: random.Random) -> bytes | None:
        return None

    async def hold(self, conn: Connection, rng: random.Random) -> None:
        if self.timeout_ms > 0:
            await asyncio.sleep(self.timeout_ms / 1000)
            conn.close()
