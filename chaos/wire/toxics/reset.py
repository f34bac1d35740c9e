"""`reset`: `after_ms` after it meets a connection (when the fault is added, or when a new
connection is accepted while it holds) the client's side is closed with a TCP RST (SO_LINGER 0):
the client reads ECONNRESET, as from a host that lost its state. Bytes pass until then."""

from __future__ import annotations

import asyncio
import random

from chaos.wire.connection import Connection
from chaos.wire.toxics.base import MAX_MS, Toxic, attribute


class Reset(Toxic):
    kind = "reset"
    summary = "Reset (TCP RST) the connections open now."
    momentary = True
    holds = True
    after_ms: float = attribute(0.0, 0.0, MAX_MS, "Delay before the RST, ms.")

    async def hold(self, conn: Connection, rng: random.Random) -> None:
        await asyncio.sleep(self.after_ms / 1000)
        conn.reset()
