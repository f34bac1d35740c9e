"""`drops_by_stage`: queries the DB dropped without an answer, by where it dropped them (`queue`
and `work`: the caller had gone; `deadline`: too little of the caller's deadline left when its
slot came; `codel`: shed by the queue discipline), summed over the DB's incarnations; with
`rejected`, the queries turned away because its queue was full."""

from __future__ import annotations

from chaos.engine.measures.base import measure
from chaos.engine.observations import Observations


@measure("drops_by_stage")
def drops_by_stage(obs: Observations) -> dict[str, int]:
    counters = obs.db_counters
    return {**dict(sorted(counters.dropped_by_stage.items())), "rejected": counters.rejected}
