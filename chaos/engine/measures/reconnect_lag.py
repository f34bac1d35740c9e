"""`reconnect_lag_s`: from the DB's restore (the instant it was listening again) to the first
request it recorded after it, the silence the cache's channel backoff adds to an outage. None
when the DB was not killed (or stopped) or nothing reached the restored DB. Only the trial's
first DB kill or stop counts; a partition is not a restore."""

from __future__ import annotations

from chaos.engine.measures.base import measure
from chaos.engine.observations import Observations


@measure("reconnect_lag_s")
def reconnect_lag_s(obs: Observations) -> float | None:
    outage = next((o for o in obs.outages if o.service == "db" and o.restarted), None)
    if outage is None or outage.up_ns is None:
        return None
    # The restarted process's arrivals: every earlier one was recorded before the kill (or the
    # stop). One that beat the 5 ms listening probe counts as no lag.
    started = outage.restart_ns if outage.restart_ns is not None else outage.up_ns
    first = min((t for t in obs.db_arrivals if t >= started), default=None)
    return None if first is None else round(max(0, first - outage.up_ns) / 1e9, 3)
