"""Replicas and their leases: how many replicas, whether they shared a store, whether the lease
holder was killed, and how long after that the key was served again."""

from __future__ import annotations

from typing import Any

from chaos.engine.measures.base import measure, rounded
from chaos.engine.observations import Observations, Outage
from chaos.engine.timeline import BIN_S, bin_count, bins, seconds_since


def _replica_kill(obs: Observations) -> Outage | None:
    """The first kill of a cache replica in this trial (a stop drains: it is not one)."""
    return next(
        (o for o in obs.outages if o.service.startswith("cache") and o.kind == "kill"), None
    )


@measure("replicas")
def replicas(obs: Observations) -> int:
    """Cache replicas the herd was spread over (round_robin)."""
    return obs.stack.replicas


@measure("leases")
def leases(obs: Observations) -> bool:
    """Whether the replicas coalesced across each other with leases on a shared Redis."""
    return obs.stack.store == "redis"


@measure("holder_killed")
def holder_killed(obs: Observations) -> bool:
    """Whether a replica (the lease holder, in the replicas scenario) was SIGKILLed."""
    return _replica_kill(obs) is not None


@measure("served_after_s")
def served_after_s(obs: Observations) -> float | None:
    """From the replica's SIGKILL to the first value a user got after it; None without a kill
    (or when no value came after it)."""
    kill = _replica_kill(obs)
    if kill is None:
        return None
    after = [
        o.done_ns for o in obs.herd_result.outcomes if o.code is None and o.done_ns >= kill.down_ns
    ]
    return rounded((min(after) - kill.down_ns) / 1e9) if after else None


@measure("takeover_after_s")
def takeover_after_s(obs: Observations) -> float | None:
    """From the replica's SIGKILL to the next query reaching the DB: when another replica took
    the dead holder's lease over (its remaining time, at most the lease timeout). None without
    a kill or without such a query."""
    kill = _replica_kill(obs)
    after = [t for t in obs.db_arrivals if kill is not None and t >= kill.down_ns]
    return rounded((min(after) - kill.down_ns) / 1e9) if kill is not None and after else None


@measure("takeovers")
def takeovers(obs: Observations) -> int:
    """Leases taken after their holder's ran out unpublished, over the replicas still running."""
    return int(obs.lease_counters.get("takeovers", 0))


@measure("lease_waits")
def lease_waits(obs: Observations) -> int:
    """Waits on another replica's lease, over the replicas still running."""
    return int(obs.lease_counters.get("waits", 0))


@measure("redis_fallbacks")
def redis_fallbacks(obs: Observations) -> int:
    """Redis calls that failed or timed out and sent a replica down its local path."""
    return int(obs.lease_counters.get("fallbacks", 0))


@measure("replica_timeline")
def replica_timeline(obs: Observations) -> dict[str, Any]:
    """Per 100 ms from the release: values served, typed errors, queries reaching the DB, and
    the replica's kill (seconds after the release); the replicas plot draws it."""
    t0 = obs.t0_ns
    outcomes = obs.herd_result.outcomes
    end = max([t0, *obs.db_arrivals, *(o.done_ns for o in outcomes)])
    count = bin_count(t0, end)
    kill = _replica_kill(obs)
    return {
        "bin_s": BIN_S,
        "served": bins([o.done_ns for o in outcomes if o.code is None], t0, count),
        "errors": bins([o.done_ns for o in outcomes if o.code is not None], t0, count),
        "db_arrivals": bins(obs.db_arrivals, t0, count),
        "kill_s": seconds_since(kill.down_ns, t0) if kill else None,
    }
