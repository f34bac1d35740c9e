"""`slot_time_amplification`: DB slot-seconds spent / (keys x service time).

1 is the least work the keys could cost: each key the users asked for served once, holding a
slot for the DB's mean service time (its latency plus half its spread, as the experiment set
them: a `set db.latency` mid-run is not followed). Above 1, slots were held for queries that did
not need to be served: a key served twice, or work for a caller that had already given up (the
DB stops such work when it learns the caller has gone, so what shows here is the part it could
not avoid).
"""

from __future__ import annotations

from chaos.engine.measures.base import measure
from chaos.engine.measures.herd import keys_asked
from chaos.engine.observations import Observations


@measure("slot_time_amplification")
def slot_time_amplification(obs: Observations) -> float | None:
    service_s = obs.db.latency_s + obs.db.spread_s / 2.0
    needed = keys_asked(obs) * service_s
    return round(obs.db_counters.slot_seconds / needed, 3) if needed > 0 else None
