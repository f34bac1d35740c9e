"""`db_dropped`: work the DB did whose caller had gone, summed over its incarnations."""

from __future__ import annotations

from chaos.engine.measures.base import measure
from chaos.engine.observations import Observations


@measure("db_dropped")
def db_dropped(obs: Observations) -> int:
    return obs.db_counters.dropped
