"""`blackhole`: connections are accepted and kept, and the direction's bytes are dropped. Both
directions blackholed is a partition as a client sees one: no reset, no FIN, a connection that
looks open and carries nothing (half-open), noticed only by a keepalive or a deadline."""

from __future__ import annotations

import random

from chaos.wire.connection import Connection
from chaos.wire.toxics.base import Toxic


class Blackhole(Toxic):
    kind = "blackhole"
    summary = "Drop the bytes, keep the connections."

    async def pipe(self, chunk: bytes, conn: Connection, rng: random.Random) -> bytes | None:
        return None
