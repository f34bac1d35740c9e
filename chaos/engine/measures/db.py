"""What reached the DB and what the cache sent it: queries, attempts, amplification, capacity."""

from __future__ import annotations

from chaos.engine.measures.base import measure
from chaos.engine.measures.herd import keys_asked
from chaos.engine.observations import Observations


@measure("db_queries")
def db_queries(obs: Observations) -> int:
    """Requests that reached the DB after the herd's release, by the DB's own record."""
    return len(obs.db_arrivals)


@measure("db_attempts")
def db_attempts(obs: Observations) -> int:
    """Attempts the cache made towards the DB, including those that failed fast while it was
    down (they never reached it)."""
    return len(obs.cache_attempts)


@measure("amplification")
def amplification(obs: Observations) -> float | None:
    """DB attempts made by the cache divided by the distinct keys needed."""
    keys = keys_asked(obs)
    return round(len(obs.cache_attempts) / keys, 3) if keys else None


@measure("db_capacity_per_s")
def db_capacity_per_s(obs: Observations) -> float:
    """Queries per second the DB can serve (concurrency / mean latency)."""
    return round(obs.db_capacity_per_s, 3)
