"""`age`: a maximum connection age, as gRPC's `max_connection_age` (gRFC A9), enforced by the
proxy: `age_ms` after it meets a connection (when it is accepted, or when the fault is added)
times a uniform draw in [1 - spread, 1 + spread], the connection is closed (FIN, both sides) as
soon as it has carried nothing for a moment, and at the latest `grace_ms` later. GOAWAY is not
visible to a TCP proxy, so "still busy" is "bytes passed within the last `QUIET_S`".

With `spread` 0 every connection opened together is closed together: the reconnect storm of
connections aged out at once; 0.1 is A9's +-10%, which gRPC core draws per connection itself
when the services are given `--max-connection-age`."""

from __future__ import annotations

import asyncio
import random
import time

from chaos.wire.connection import Connection
from chaos.wire.toxics.base import MAX_MS, Toxic, attribute

QUIET_S = 0.1


class Age(Toxic):
    kind = "age"
    summary = "Close connections at this age."
    option = "age_ms"
    holds = True
    age_ms: float = attribute(30_000.0, 0.0, MAX_MS, "Age at which a connection is closed, ms.")
    spread: float = attribute(0.1, 0.0, 1.0, "Age drawn uniformly within +- this share of it.")
    grace_ms: float = attribute(0.0, 0.0, MAX_MS, "Longest a busy connection is left, ms.")

    def age_s(self, rng: random.Random) -> float:
        return self.age_ms * rng.uniform(1 - self.spread, 1 + self.spread) / 1000

    def longest_hold_s(self) -> float:
        return (self.age_ms * (1 + self.spread) + self.grace_ms) / 1000

    async def hold(self, conn: Connection, rng: random.Random) -> None:
        await asyncio.sleep(self.age_s(rng))
        last = time.monotonic() + self.grace_ms / 1000
        # Polled: a connection's bytes are not worth an event each.
        while (now := time.monotonic()) < last and now - conn.active_at < QUIET_S:  # noqa: ASYNC110
            await asyncio.sleep(min(QUIET_S, last - now))
        conn.close()
