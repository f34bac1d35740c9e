"""`timeline`: what reached the DB, what the cache sent it and what users got, per 100 ms from
the herd's release, with the DB's outage marked; the retry-storm plot draws it."""

from __future__ import annotations

from typing import Any

from chaos.engine.measures.base import measure
from chaos.engine.observations import Observations
from chaos.engine.timeline import BIN_S, bin_count, bins, seconds_since


@measure("timeline")
def timeline(obs: Observations) -> dict[str, Any]:
    t0 = obs.t0_ns
    outcomes = obs.herd_result.outcomes
    served = [o.done_ns for o in outcomes if o.code is None]
    end = max([obs.t0_ns, *obs.db_arrivals, *obs.cache_attempts, *(o.done_ns for o in outcomes)])
    outage = obs.outage("db")
    up_ns = outage.up_ns if outage is not None else None
    after = [t for t in obs.db_arrivals if outage and outage.restart_ns and t >= outage.restart_ns]
    count = bin_count(t0, max(end, outage.serving_ns or end) if outage else end)
    return {
        "bin_s": BIN_S,
        "t0_ns": t0,
        "outage": [seconds_since(outage.down_ns, t0), seconds_since(up_ns, t0)] if outage else [],
        "restart_s": seconds_since(outage.restart_ns, t0) if outage else None,
        "serving_s": seconds_since(outage.serving_ns, t0) if outage else None,
        "first_arrival_after_restore_s": seconds_since(min(after), t0) if after else None,
        "db_capacity_per_bin": round(obs.db_capacity_per_s * BIN_S, 3),
        "db_arrivals": bins(obs.db_arrivals, t0, count),
        "cache_attempts": bins(obs.cache_attempts, t0, count),
        "served": bins(served, t0, count),
    }
