"""Whether goodput came back once the trigger was gone: `collapsed_s` and `back_to_90pct_s`.

Both read goodput (`goodput.py`: answers with a value, per 100 ms bin from the herd's release) in
1 s windows that slide in 100 ms steps. Window k covers the ten bins from bin b0 + k, where b0 is
the first bin that starts at or after the trigger's end (`trigger.py`), and counts only if it
ends by the run's end: the open loop's last scheduled arrival (a burst: the trial's end), since
after it goodput falls for want of arrivals, not of capacity.

- `collapsed_s`: how long, after the trigger's end and up to the run's end, goodput stayed
  below half of the DB's capacity per second: 100 ms for every window below it (the bins after
  the last whole window take that window's verdict). A burst of answers right after the trigger
  does not end a collapse that resumes: every window counts. 0: never below half.
- `back_to_90pct_s`: k x 100 ms for the first window whose goodput is at least 90% of what the
  system was asked for, the open loop's rate capped at the DB's capacity (an open loop below
  capacity cannot be answered faster than it asks); None if no window reaches it.

Both are None when the timeline ran no action (no trigger to recover from).
"""

from __future__ import annotations

from dataclasses import dataclass

from chaos.engine.measures.base import measure, rounded
from chaos.engine.measures.goodput import served_ns
from chaos.engine.measures.trigger import trigger_ns
from chaos.engine.observations import Observations
from chaos.engine.timeline import BIN_NS, BIN_S, bin_count, bin_index, bins

WINDOW_BINS = round(1.0 / BIN_S)
COLLAPSE_SHARE = 0.5
RECOVERY_SHARE = 0.9


def run_end_ns(obs: Observations) -> int:
    """The open loop's last scheduled arrival, or the trial's end for a burst."""
    if obs.herd.rate_per_s is None:
        return obs.end_ns
    return min(obs.end_ns, obs.t0_ns + round(obs.herd.duration_s * 1e9))


def asked_per_s(obs: Observations) -> float:
    """What the herd asked for per second, at most what the DB can serve."""
    rate = obs.herd.rate_per_s
    return obs.db_capacity_per_s if rate is None else min(rate, obs.db_capacity_per_s)


@dataclass(frozen=True)
class AfterTrigger:
    windows: list[float]  # goodput per second of window k = 0, 1, ...
    span_bins: int  # bins from b0 to the run's end


def after_trigger(obs: Observations) -> AfterTrigger | None:
    """The windows after the trigger (see the module); None: no trigger."""
    window = trigger_ns(obs)
    if window is None:
        return None
    t0 = obs.t0_ns
    first = max(0, bin_index(window[1] - 1, t0) + 1)
    full = max(0, (run_end_ns(obs) - t0) // BIN_NS)
    counts = bins(served_ns(obs), t0, bin_count(t0, obs.end_ns))
    windows = [
        sum(counts[start : start + WINDOW_BINS]) / (WINDOW_BINS * BIN_S)
        for start in range(first, full - WINDOW_BINS + 1)
    ]
    return AfterTrigger(windows, max(0, full - first))


def _first_at_least(windows: list[float], threshold: float) -> int | None:
    return next((k for k, goodput in enumerate(windows) if goodput >= threshold), None)


@measure("collapsed_s")
def collapsed_s(obs: Observations) -> float | None:
    after = after_trigger(obs)
    if after is None:
        return None
    half = COLLAPSE_SHARE * obs.db_capacity_per_s
    below = [goodput < half for goodput in after.windows]
    tail = after.span_bins - len(below)
    return rounded((sum(below) + (tail if below and below[-1] else 0)) * BIN_S)


@measure("back_to_90pct_s")
def back_to_90pct_s(obs: Observations) -> float | None:
    after = after_trigger(obs)
    if after is None:
        return None
    k = _first_at_least(after.windows, RECOVERY_SHARE * asked_per_s(obs))
    return None if k is None else rounded(k * BIN_S)
