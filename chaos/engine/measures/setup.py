"""The experiment's own settings, echoed in each row so a row says what it measured."""

from __future__ import annotations

from typing import Any

from chaos.engine.measures.base import echo, measure
from chaos.engine.observations import Observations
from herdlab.guards import parse_guard_set

echo("policy", "cache.policy")  # the cache's retry policy towards the DB
echo("guards", "cache.guards")  # its guard set towards the DB, as written (`none`: no guard)
echo("queue", "db.queue_discipline")  # the DB's queue discipline: fifo, codel or lifo
echo("keys", "herd.keys")
echo("clients", "herd.users")
echo("coalescing", "cache.coalescing")
echo("db_latency_s", "db.latency_s")
echo("cache_peak_rss_bytes", "cache_peak_rss_bytes")  # of the cache's last incarnation


@measure("guards_spec")
def guards_spec(obs: Observations) -> str:
    """What the cache's guard set ran as: `recommended` expanded, parameters canonical."""
    return parse_guard_set(obs.cache.guards).spec


@measure("warm")
def warm(obs: Observations) -> dict[str, Any]:
    """What the `warm` and `expire` setup actions reported."""
    found = dict(obs.setup.get("warm", {}))
    if "expire" in obs.setup:
        found["expired"] = obs.setup["expire"]["expired"]
    return found
