"""How the herd learnt of a fault on the cache and came back from it, whether the cache was
killed (connections reset at once), stopped (drained: GOAWAY, calls in flight finished) or
partitioned on the wire (connections left half-open):

- `fault`: which it was (`kill`, `stop` or `partition`), `keepalive`: whether the herd's
  channels ping;
- `noticed_s`: from the fault's start to the first error a client saw;
- `stayed_ready`: herd channels that never left READY while the fault held (READY on a dead
  connection: nothing told them);
- `all_ready_after_heal_s`: from the heal (the restarted cache listening, or the partition
  removed) to the moment every herd channel had been READY again on a connection made after the
  fault began; None if one never was.

None (or 0) when the trial had no fault on the cache.
"""

from __future__ import annotations

from chaos.engine.measures.base import measure
from chaos.engine.measures.cache_return import cache_outage_ns
from chaos.engine.observations import Observations
from chaos.engine.timeline import seconds_since


@measure("fault")
def fault(obs: Observations) -> str | None:
    outage = obs.outage("cache")
    return None if outage is None else outage.kind


@measure("keepalive")
def keepalive(obs: Observations) -> bool:
    return obs.herd.keepalive() is not None


@measure("noticed_s")
def noticed_s(obs: Observations) -> float | None:
    window = cache_outage_ns(obs)
    if window is None:
        return None
    errors = (o.done_ns for o in obs.herd_result.outcomes if o.code is not None)
    return seconds_since(min((t for t in errors if t >= window[0]), default=None), window[0])


def _left_ready(obs: Observations, start_ns: int, end_ns: int) -> set[int]:
    """Herd channels with a state change other than to READY in [start, end)."""
    return {
        channel
        for t, channel, state in obs.herd_result.channel_events
        if start_ns <= t < end_ns and state != "READY"
    }


@measure("stayed_ready")
def stayed_ready(obs: Observations) -> int:
    window = cache_outage_ns(obs)
    if window is None:
        return 0
    return obs.herd.channel_count - len(_left_ready(obs, *window))


@measure("all_ready_after_heal_s")
def all_ready_after_heal_s(obs: Observations) -> float | None:
    window = cache_outage_ns(obs)
    if window is None:
        return None
    down, healed = window
    ready: dict[int, int] = {}
    left: set[int] = set()
    for t, channel, state in sorted(obs.herd_result.channel_events):
        if t < down:
            continue
        if state != "READY":
            left.add(channel)
        elif channel in left and channel not in ready:
            ready[channel] = t
    if len(ready) != obs.herd.channel_count:
        return None
    return seconds_since(max(ready.values()), healed)
