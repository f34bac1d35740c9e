"""How the herd's retries arrive: `retries` (attempts after a request's first) and
`retry_peak_over_mean`, the busiest 100 ms of them (a window starting at any retry, so a wave
that a bin's edge splits is still one wave) over their mean per 100 ms bin while the first 99% of
them came (from the first retry to the 99th percentile's: one user's retries trailing long after
the rest do not dilute the mean). Retries without jitter come in waves (every request that
failed together sleeps the same backoff, so a few bins hold them all: a high ratio); full jitter
spreads them (a ratio near 1). Read from the herd's own record, so it holds for any service the
herd calls."""

from __future__ import annotations

from chaos.engine.measures.base import measure
from chaos.engine.observations import Observations
from chaos.engine.timeline import bin_count, busiest_window


@measure("retries")
def retries(obs: Observations) -> int:
    return len(obs.herd_result.retry_times_ns)


@measure("retry_peak_over_mean")
def retry_peak_over_mean(obs: Observations) -> float:
    times = sorted(obs.herd_result.retry_times_ns)
    if not times:
        return 0.0
    body = times[: len(times) - len(times) // 100]
    return round(busiest_window(times) * bin_count(body[0], body[-1]) / len(body), 2)
