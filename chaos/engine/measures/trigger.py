"""The trigger of a metastable failure: the experiment's timeline, from its first action to the
end of its last (the restore after an outage, the latency reset after a spike).

Read from what the trial recorded: each timeline action's start in the journal, and, for an
outage, the instant the restarted service accepted connections again (`Outage.up_ns`), which is
when a `kill`/`restore` pair or an `outage` step really ended.
"""

from __future__ import annotations

from chaos.engine.measures.base import measure
from chaos.engine.observations import Observations
from chaos.engine.timeline import seconds_since


def trigger_ns(obs: Observations) -> tuple[int, int] | None:
    """(start, end) of the timeline's actions in wall-clock ns; None if none ran."""
    starts = [e.t_ns for e in obs.journal if e.phase == "timeline"]
    if not starts:
        return None
    ups = [o.up_ns for o in obs.outages if o.up_ns is not None]
    return min(starts), max([*starts, *ups])


@measure("trigger_s")
def trigger_s(obs: Observations) -> list[float | None]:
    """[start, end] of the trigger in seconds since the herd's release ([] without one)."""
    window = trigger_ns(obs)
    if window is None:
        return []
    return [seconds_since(window[0], obs.t0_ns), seconds_since(window[1], obs.t0_ns)]
