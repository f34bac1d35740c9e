"""`limit`: a connection is closed (FIN, both sides) once `max_bytes` bytes have passed in the
direction(s) it applies to since the fault met it; the chunk that crosses the limit is cut at it."""

from __future__ import annotations

import random

from chaos.wire.connection import Connection
from chaos.wire.toxics.base import Toxic, attribute


class Limit(Toxic):
    kind = "limit"
    summary = "Close after N bytes."
    option = "max_bytes"
    max_bytes: float = attribute(
        0.0, 0.0, 1e12, "Bytes passed before the connection is closed.", whole=True
    )

    async def pipe(self, chunk: bytes, conn: Connection, rng: random.Random) -> bytes | None:
        passed = conn.counters.get(id(self), 0)
        allowed = max(0, int(self.max_bytes) - passed)
        if len(chunk) >= allowed:
            conn.close_after_write()
            chunk = chunk[:allowed]
        conn.counters[id(self)] = passed + len(chunk)
        return chunk or None
