"""Attempts the herd's users made towards the cache: all, and the largest 100 ms bin of them from
the cache's SIGKILL on (the retry wave the kill set off)."""

from __future__ import annotations

from chaos.engine.measures.base import measure
from chaos.engine.measures.cache_return import cache_outage_ns
from chaos.engine.observations import Observations
from chaos.engine.timeline import bin_count, bin_index, bins


@measure("herd_attempts")
def herd_attempts(obs: Observations) -> int:
    return len(obs.herd_result.attempt_times_ns)


@measure("herd_attempts_peak_per_100ms")
def herd_attempts_peak_per_100ms(obs: Observations) -> int:
    times = obs.herd_result.attempt_times_ns
    outage = cache_outage_ns(obs)
    if outage is None or not times:
        return 0
    per_bin = bins(times, obs.t0_ns, bin_count(obs.t0_ns, max(times)))
    return max(per_bin[max(0, bin_index(outage[0], obs.t0_ns)) :], default=0)
