"""`goodput_per_s`: answers that reached a caller still waiting, per 100 ms bin, as a rate.

A herd outcome with a value is an answer its caller was still waiting for (a request that
outlived its deadline ends with DEADLINE_EXCEEDED instead), so goodput counts outcomes with a
value by the bin of their end (`chaos.engine.timeline`), times 10 to read per second. Beside it,
`db_arrivals_per_s` is what reached the DB in the same bins: work offered, not work that helped
anyone. Both run from the herd's release to the trial's end.
"""

from __future__ import annotations

from collections.abc import Iterable

from chaos.engine.measures.base import measure
from chaos.engine.observations import Observations
from chaos.engine.timeline import BIN_S, bin_count, bins


def per_second(times_ns: Iterable[int], obs: Observations) -> list[float]:
    """Counts of `times_ns` per 100 ms bin from the release to the trial's end, per second."""
    counts = bins(times_ns, obs.t0_ns, bin_count(obs.t0_ns, obs.end_ns))
    return [round(c / BIN_S, 3) for c in counts]


def served_ns(obs: Observations) -> list[int]:
    """When each answer with a value reached its caller."""
    return [o.done_ns for o in obs.herd_result.outcomes if o.code is None]


@measure("goodput_per_s")
def goodput_per_s(obs: Observations) -> list[float]:
    return per_second(served_ns(obs), obs)


@measure("db_arrivals_per_s")
def db_arrivals_per_s(obs: Observations) -> list[float]:
    return per_second(obs.db_arrivals, obs)
