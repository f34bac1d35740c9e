"""What the herd's users got from stale serving, from their own answers (each STALE answer
carries how long ago its value expired):

- `availability`: share of requests answered with a value, fresh or stale (requests that ended
  with an error, or were lost, count against it; arrivals an open loop never sent do not);
- `stale_served`: answers with an expired value;
- `max_stale_age_s`: the oldest of them, seconds past expiry (0 when none);
- `stale_age_within_bound`: every stale answer younger than the row's stale bound (the longer
  of its stale-while-revalidate and stale-if-error), as the cache promises;
- `answers`: fresh values, stale values and errors per 100 ms, for the plot.
"""

from __future__ import annotations

from typing import Any

from chaos.engine.measures.base import measure
from chaos.engine.observations import Observations
from chaos.engine.timeline import BIN_S, bin_count, bins, seconds_since


@measure("availability")
def availability(obs: Observations) -> float | None:
    summary = obs.herd_result.summary()
    sent = int(summary["sent"])
    return round(int(summary["ok"]) / sent, 5) if sent else None


def stale_ages(obs: Observations) -> list[float]:
    return [o.stale_age_s for o in obs.herd_result.outcomes if o.stale_age_s is not None]


@measure("stale_served")
def stale_served(obs: Observations) -> int:
    return len(stale_ages(obs))


@measure("max_stale_age_s")
def max_stale_age_s(obs: Observations) -> float:
    return round(max(stale_ages(obs), default=0.0), 3)


@measure("stale_age_within_bound")
def stale_age_within_bound(obs: Observations) -> bool:
    bound = obs.cache.freshness().stale_window_s
    return all(age < bound for age in stale_ages(obs))


@measure("answers")
def answers(obs: Observations) -> dict[str, Any]:
    """What users got per 100 ms from the release (by each answer's end): fresh values, stale
    values, errors; and the DB's outage, for the plot."""
    t0 = obs.t0_ns
    outcomes = obs.herd_result.outcomes
    count = bin_count(t0, max([obs.end_ns, *(o.done_ns for o in outcomes)]))
    outage = obs.outage("db")
    return {
        "bin_s": BIN_S,
        "outage": [seconds_since(outage.down_ns, t0), seconds_since(outage.up_ns, t0)]
        if outage
        else [],
        "fresh": bins(
            (o.done_ns for o in outcomes if o.code is None and o.source != "STALE"), t0, count
        ),
        "stale": bins((o.done_ns for o in outcomes if o.source == "STALE"), t0, count),
        "errors": bins((o.done_ns for o in outcomes if o.code is not None), t0, count),
    }
