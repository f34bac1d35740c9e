"""How the herd's retries arrive: `retries` (attempts after a request's first) and
`retry_peak_over_mean`, the largest 100 ms bin of them over their mean per bin, from the first
retry to the last. Retries without jitter come in waves (every request that failed together
sleeps the same backoff, so a few bins hold them all: a high ratio); full jitter spreads them
(a ratio near 1). Read from the herd's own record, so it holds for any service the herd calls."""

from __future__ import annotations

from chaos.engine.measures.base import measure
from chaos.engine.observations import Observations
from chaos.engine.timeline import bin_count, bins


@measure("retries")
def retries(obs: Observations) -> int:
    return len(obs.herd_result.retry_times_ns)


@measure("retry_peak_over_mean")
def retry_peak_over_mean(obs: Observations) -> float:
    times = obs.herd_result.retry_times_ns
    if not times:
        return 0.0
    first = min(times)
    per_bin = bins(times, first, bin_count(first, max(times)))
    return round(max(per_bin) * len(per_bin) / len(times), 2)
