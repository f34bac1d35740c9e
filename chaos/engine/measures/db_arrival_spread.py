"""How sharp a herd is where it lands: the spread of the DB's arrivals and their rate.

The workshop's herd is many identical queries within a millisecond. What reaches the DB is
blunted by every hop in between (the herd's sends, the cache's handlers, its calls to the DB),
so the DB's own exact record is the measure: from its first arrival to its last.
"""

from __future__ import annotations

from chaos.engine.measures.base import measure
from chaos.engine.observations import Observations


def _spread_s(arrivals_ns: list[int]) -> float | None:
    if not arrivals_ns:
        return None
    return round((max(arrivals_ns) - min(arrivals_ns)) / 1e9, 6)


@measure("db_arrival_spread_s")
def db_arrival_spread_s(obs: Observations) -> float | None:
    """Seconds from the DB's first arrival to its last (0 for one arrival, None for none)."""
    return _spread_s(obs.db_arrivals)


@measure("db_arrival_rate_per_s")
def db_arrival_rate_per_s(obs: Observations) -> float | None:
    """Arrivals after the first per second of that spread (None with fewer than two, or all
    within one nanosecond). The stampede's document calls it `db_arrivals_per_s`; the measure
    of that name is the per-bin series of `goodput`."""
    spread = _spread_s(obs.db_arrivals)
    if not spread:
        return None
    return round((len(obs.db_arrivals) - 1) / spread, 1)
