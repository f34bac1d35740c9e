"""`attempts`: the work a run asked for at each hop. The herd's attempts towards the cache, the
cache's attempts towards the DB (including those that failed fast or were refused by its own
guards) and the queries that reached the DB (the DB's own record)."""

from __future__ import annotations

from chaos.engine.measures.base import measure
from chaos.engine.observations import Observations


@measure("attempts")
def attempts(obs: Observations) -> dict[str, int]:
    return {
        "herd": len(obs.herd_result.attempt_times_ns),
        "cache_to_db": len(obs.cache_attempts),
        "db_arrivals": len(obs.db_arrivals),
    }
