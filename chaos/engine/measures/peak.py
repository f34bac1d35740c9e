"""The largest 100 ms bin of DB arrivals after the DB came back, and that over capacity."""

from __future__ import annotations

from chaos.engine.measures.base import measure
from chaos.engine.observations import Observations
from chaos.engine.timeline import BIN_S, bin_count, bins


def _peak(obs: Observations) -> int:
    outage = obs.outage("db")
    if outage is None or outage.restart_ns is None:
        return 0
    after = [t for t in obs.db_arrivals if t >= outage.restart_ns]
    return max(bins(after, obs.t0_ns, bin_count(obs.t0_ns, obs.end_ns)), default=0)


@measure("post_restore_peak_per_100ms")
def post_restore_peak_per_100ms(obs: Observations) -> int:
    return _peak(obs)


@measure("post_restore_peak_over_capacity")
def post_restore_peak_over_capacity(obs: Observations) -> float | None:
    """1 means the restored DB met exactly what it can serve; above 1 it was overrun."""
    per_bin = obs.db_capacity_per_s * BIN_S
    return round(_peak(obs) / per_bin, 3) if per_bin else None
