"""`reconnect_timeline`: herd attempts, values served and reconnect attempts per 100 ms from the
herd's release, with the cache's outage and the herd's return marked; the reconnect-storm plot
draws it. Every count has a bin: the timeline runs to the last event of any of them."""

from __future__ import annotations

from typing import Any

from chaos.engine.measures.base import measure
from chaos.engine.measures.cache_return import all_ready_ns, first_success_ns
from chaos.engine.measures.reconnects import NEEDS, attempts_since_kill
from chaos.engine.observations import Observations
from chaos.engine.timeline import BIN_S, bin_count, bins, seconds_since


@measure("reconnect_timeline", needs=NEEDS)
def reconnect_timeline(obs: Observations) -> dict[str, Any]:
    t0 = obs.t0_ns
    result = obs.herd_result
    reconnects = attempts_since_kill(obs)
    served = [o.done_ns for o in result.outcomes if o.code is None]
    end = max([t0, *(o.done_ns for o in result.outcomes), *result.attempt_times_ns, *reconnects])
    count = bin_count(t0, end)
    outage = obs.outage("cache")
    return {
        "bin_s": BIN_S,
        "t0_ns": t0,
        "outage": [seconds_since(outage.down_ns, t0), seconds_since(outage.up_ns, t0)]
        if outage
        else [None, None],
        "restore_started_s": seconds_since(outage.restart_ns, t0) if outage else None,
        "first_success_s": seconds_since(first_success_ns(obs), t0),
        "all_channels_ready_s": seconds_since(all_ready_ns(obs), t0),
        "reconnects": bins(reconnects, t0, count),
        "herd_attempts": bins(result.attempt_times_ns, t0, count),
        "served": bins(served, t0, count),
    }
