"""`inflight_after`: the cache's coalescer entries once the herd has ended and the cache's fetch
budget has had time to run out (the `inflight` observer). 0: nothing leaks in flight."""

from __future__ import annotations

from chaos.engine.measures.base import measure
from chaos.engine.observations import Observations


@measure("inflight_after", needs=("inflight",))
def inflight_after(obs: Observations) -> int:
    return int(obs.series["inflight"])
