"""The experiment's own settings, echoed in each row so a row says what it measured."""

from __future__ import annotations

from typing import Any

from chaos.engine.measures.base import measure
from chaos.engine.observations import Observations
from herdlab.guards import parse_guard_set


@measure("policy")
def policy(obs: Observations) -> str:
    """The cache's retry policy towards the DB."""
    return obs.cache.policy


@measure("guards")
def guards(obs: Observations) -> str:
    """The cache's guard set towards the DB, as written (`none`: no guard)."""
    return obs.cache.guards


@measure("guards_spec")
def guards_spec(obs: Observations) -> str:
    """What the cache's guard set ran as: `recommended` expanded, parameters canonical."""
    return parse_guard_set(obs.cache.guards).spec


@measure("queue")
def queue(obs: Observations) -> str:
    """The DB's queue discipline: fifo, codel or lifo."""
    return obs.db.queue_discipline


@measure("keys")
def keys(obs: Observations) -> int:
    return obs.herd.keys


@measure("clients")
def clients(obs: Observations) -> int:
    """The herd's users."""
    return obs.herd.users


@measure("coalescing")
def coalescing(obs: Observations) -> bool:
    return obs.cache.coalescing


@measure("db_latency_s")
def db_latency_s(obs: Observations) -> float:
    return obs.db.latency_s


@measure("warm")
def warm(obs: Observations) -> dict[str, Any]:
    """What the `warm` and `expire` setup actions reported."""
    found = dict(obs.setup.get("warm", {}))
    if "expire" in obs.setup:
        found["expired"] = obs.setup["expire"]["expired"]
    return found


@measure("cache_peak_rss_bytes")
def cache_peak_rss_bytes(obs: Observations) -> int:
    """The cache process's peak resident memory (its last incarnation)."""
    return obs.cache_peak_rss_bytes
