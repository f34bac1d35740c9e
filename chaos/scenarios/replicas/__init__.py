"""Replicas: one cold key, R cache replicas, local single-flight only against leases on Redis
(the folder's `experiment.toml`; this module is its kind and its typed configuration).

10,000 users ask at once for one cold key, spread over R = 4 replicas by the herd's
client-side round_robin; the DB takes 20 s per query, longer than the herd takes to arrive
and than the controller (whose event loop also runs the herd) takes to see the holder's query
and kill it.
Three rows, each on a fresh stack:

- `leases = false`: each replica coalesces its own callers only (a store per replica): the DB
  sees one query per replica that got a user, up to R (Facebook's memcache paper: a cold key
  costs up to R queries with only in-process single-flight);
- `leases = true`: the replicas share a redis-server; the first to take the key's lease
  fetches, the others wait for its publication: the DB sees one query;
- `holder_killed = true`: as above, and the lease holder's replica is SIGKILLed once its query
  reached the DB. Its users get UNAVAILABLE (errors by code, none lost); the other replicas'
  waiters find the lease run out (it is renewed only by a live holder), one of them takes it
  over and fetches (`takeover_after_s` after the kill, at most the lease timeout): the key is
  served again `served_after_s` after the kill, at most the lease timeout plus one DB query.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from chaos.engine.bounds import out_of_range
from chaos.engine.kinds import Column, Kind, Plot, Row, from_options
from chaos.engine.model import Experiment
from chaos.engine.registry import KINDS
from chaos.lab.backends.local import MAX_REPLICAS
from chaos.scenarios.replicas.plot import plot_replicas
from herdlab.config import format_duration

SCENARIO = "replicas"


@dataclass(frozen=True)
class ReplicasConfig:
    replicas: int = 4
    users: int = 10_000
    db_latency_s: float = 20.0
    lease_timeout_s: float = 3.0

    def problems(self) -> list[str]:
        return [
            *out_of_range("replicas", self.replicas, f"2..{MAX_REPLICAS}"),
            *out_of_range("users", self.users, "1..100000"),
            *out_of_range("db latency", self.db_latency_s, "[100ms, 60s]"),
            *out_of_range("lease timeout", self.lease_timeout_s, "[100ms, 60s]"),
        ]

    def params(self) -> dict[str, Any]:
        return {
            "replicas": self.replicas,
            "users": self.users,
            "db_latency": format_duration(self.db_latency_s),
            "lease_timeout": format_duration(self.lease_timeout_s),
            "served_within": round(self.lease_timeout_s + self.db_latency_s + 5, 3),
            "takeover_within": round(self.lease_timeout_s + 2, 3),
        }

    def command(self) -> str:
        return (
            f"chaos scenario replicas --replicas {self.replicas} --users {self.users} "
            f"--db-latency {format_duration(self.db_latency_s)} "
            f"--lease-timeout {format_duration(self.lease_timeout_s)}"
        )


def _config(experiment: Experiment) -> dict[str, Any]:
    db, cache, herd = experiment.db, experiment.cache, experiment.herd
    return {
        "replicas": experiment.stack.replicas,
        "users": herd.users,
        "db_latency_s": db.latency_s,
        "lease_timeout_s": cache.lease_timeout_s,
        "redis_timeout_s": cache.redis_timeout_s,
    }


def _row_name(row: Mapping[str, Any]) -> str:
    if not row["leases"]:
        return "local single-flight"
    return "leases, holder killed" if row["holder_killed"] else "leases"


def _announce(experiment: Experiment, variant: Mapping[str, Any]) -> str:
    shape = experiment.stack_for(variant)
    db, _, herd = experiment.settings_for(variant)
    what = "leases on Redis" if shape.store == "redis" else "local single-flight only"
    killed = ", lease holder SIGKILLed mid-fetch" if shape.kill_holder else ""
    return (
        f"Replicas: {shape.replicas} replicas, {herd.users:,} users on one cold key, {what}"
        f"{killed} (DB latency {db.latency_s:g}s)"
    )


def _describe(row: Row) -> list[str]:
    served = row["served_after_s"]
    after = f", served again {served:g} s after the kill" if served is not None else ""
    took = row["takeover_after_s"]
    after += f" (lease taken over after {took:g} s)" if took is not None else ""
    return [
        f"  {row['name']}: DB queries {row['db_queries']:,}, client errors "
        f"{row['client_errors']:,} {row['errors']}, lost {row['lost']}, takeovers "
        f"{row['takeovers']}{after}"
    ]


# The fields the table shows (after the row's name), first in each row.
SHOWN = (
    "replicas",
    "leases",
    "db_queries",
    "holder_killed",
    "served_after_s",
    "takeover_after_s",
    "client_errors",
    "lost",
    "takeovers",
    "lease_waits",
)
COLUMNS = (Column("name", "row", "cell"), *(Column(field, format="cell") for field in SHOWN))
READING = (
    "Each row is one stack of R replicas under one herd on one cold key. `db_queries` "
    "is what the DB counted: with only local single-flight each replica that got a user "
    "fetched (up to R); with leases the replica that took the key's lease fetched and the "
    "others waited for its publication (1). With the holder SIGKILLed once its query "
    "reached the DB, its users got UNAVAILABLE, the lease ran out (only a live holder renews "
    "it), another replica took it over (`takeovers`) and fetched: `served_after_s` is from "
    "the kill to the next value served, the lease's remaining time plus one DB query."
)


KIND = KINDS.register(
    SCENARIO,
    Kind(
        SCENARIO,
        fields=(
            *SHOWN,
            "errors",
            "redis_fallbacks",
            "wrong_values",
            "sources",
            "latency_s",
            "seconds",
            "replica_timeline",
        ),
        config=_config,
        announce=_announce,
        describe=_describe,
        derive=lambda row: {"name": _row_name(row)},
        title="Replicas: one cold key over R replicas, local single-flight against leases",
        columns=COLUMNS,
        plots=(Plot(plot_replicas, "Values, errors and DB queries per row"),),
        reading=READING,
        configure=partial(from_options, ReplicasConfig),
    ),
)
