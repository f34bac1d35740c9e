"""The herd of warm keys at their expiry, as the DB saw it:

- `expiry_peak_per_100ms`: the largest 100 ms bin of DB arrivals from the herd's release to the
  trial's end (`chaos.engine.timeline`'s bins). With warm keys every query the DB gets is a refresh,
  so the peak is the moment keys written together expire together, or do not;
- `max_concurrent_db_queries_per_key`: the most queries for one key that the DB held at once
  (from arrival to answer), from the DB's exact per-key count since the release: 1 means no key
  was ever asked twice at the same time.
"""

from __future__ import annotations

from chaos.engine.measures.base import measure
from chaos.engine.observations import Observations
from chaos.engine.timeline import bin_count, bins


@measure("expiry_peak_per_100ms")
def expiry_peak_per_100ms(obs: Observations) -> int:
    return max(bins(obs.db_arrivals, obs.t0_ns, bin_count(obs.t0_ns, obs.end_ns)), default=0)


@measure("max_concurrent_db_queries_per_key")
def max_concurrent_db_queries_per_key(obs: Observations) -> int:
    return obs.db_counters.max_in_flight_per_key
