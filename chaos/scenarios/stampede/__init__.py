"""The workshop's scenario: N clients ask at once for one cold key (the shipped experiment
is the folder's `experiment.toml`; this module is its kind and the workshop's narration).

Scenario 1 (STAMPEDE) runs with coalescing off: every client that finds the key missing queries
the DB itself. Scenario 2 (SINGLE_FLIGHT) runs with coalescing on: the first client queries the
DB, the others wait for its answer. Each scenario runs on its own fresh local stack, so the key is
cold and the cache's peak memory belongs to that scenario alone.

`db_queries` is what the DB itself counted. The DB is given room for every client (concurrency
and queue sized to N) and a latency longer than the herd takes to arrive, so the count shows the
herd itself rather than rejections; the retry-storm scenario is where capacity bites. The cache
makes one attempt per miss (policy `none`), so one query is one client's miss.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chaos.engine.bounds import out_of_range
from chaos.engine.herd import HerdResult, Outcome
from chaos.engine.kinds import Column, Kind, Row
from chaos.engine.measures.base import measure
from chaos.engine.model import Experiment
from chaos.engine.observations import Observations
from chaos.engine.registry import KINDS
from herdlab.config import format_duration

SCENARIO = "stampede"
SHOWN_CLIENTS = 8
# One Python herd process on 2 cores gets ~10,000 requests through the cache to the DB in about
# 10 s (`chaos herd --users 10000` against `chaos up --no-coalescing` with a slow DB); twice
# that leaves room for a loaded machine.
ARRIVAL_S_PER_CLIENT = 0.002


def auto_db_latency(clients: int) -> float:
    """A DB latency that outlasts the herd's arrival, so the key is still cold for the last."""
    return max(2.0, clients * ARRIVAL_S_PER_CLIENT)


@dataclass(frozen=True)
class StampedeConfig:
    clients: int = 5
    db_latency_s: float = 2.0
    channels: int = 8
    deadline_s: float = 60.0

    def problems(self) -> list[str]:
        found = [
            *out_of_range("clients", self.clients, "1..100000"),
            *out_of_range("db latency", self.db_latency_s, "(0, 300s]"),
        ]
        if not self.deadline_s > self.db_latency_s:
            found.append("deadline must be longer than the db latency")
        return found

    def params(self) -> dict[str, Any]:
        """The shipped experiment's params for this configuration."""
        return {
            "clients": self.clients,
            "db_latency": format_duration(self.db_latency_s),
            "deadline": format_duration(self.deadline_s),
            "channels": self.channels,
        }

    def command(self) -> str:
        return (
            f"chaos scenario stampede --clients {self.clients} "
            f"--db-latency {format_duration(self.db_latency_s)}"
        )


def describe(outcome: Outcome) -> str:
    """The workshop's line for one client."""
    if outcome.code is not None:
        return f"Client {outcome.user} -> Error: {outcome.code}"
    return {
        "MISS": f"Client {outcome.user} -> Cache miss -> Querying DB...",
        "COALESCED": f"Client {outcome.user} -> Waiting for ongoing request...",
        "HIT": f"Client {outcome.user} -> Cache hit",
    }.get(outcome.source or "", f"Client {outcome.user} -> {outcome.source}")


def client_lines(result: HerdResult, shown: int = SHOWN_CLIENTS) -> list[str]:
    """One line per client, abbreviated past `shown` clients to a count of the rest by kind."""
    ordered = sorted(result.outcomes, key=lambda o: o.user)
    lines = [describe(o) for o in ordered[:shown]]
    rest = ordered[shown:]
    if rest:
        kinds = Counter(describe(o).split(" -> ", 1)[1] for o in rest)
        summary = ", ".join(f"{n:,} x {kind}" for kind, n in kinds.most_common())
        lines.append(f"... {len(rest):,} more clients: {summary}")
    if result.lost:
        lines.append(f"!!! {result.lost.total()} request(s) lost: {dict(result.lost)}")
    return lines


def _name(coalescing: bool) -> str:
    return "single_flight" if coalescing else "stampede"


def _announce(experiment: Experiment, variant: Mapping[str, Any]) -> str:
    db, cache, herd = experiment.settings_for(variant)
    number = 2 if cache.coalescing else 1
    return (
        f"Scenario {number}: {_name(cache.coalescing).upper()} ({herd.users:,} clients, one cold "
        f"key, coalescing {'on' if cache.coalescing else 'off'}, DB latency {db.latency_s:g}s)"
    )


def _describe(row: Row) -> list[str]:
    return [*row["client_lines"], f"Total DB Queries: {row['db_queries']:,}", ""]


@measure("client_lines")
def client_lines_measure(obs: Observations) -> list[str]:
    """The workshop's line per client, abbreviated past a few clients."""
    return client_lines(obs.herd_result)


COLUMNS = (
    Column("name", "scenario", "text"),
    Column("clients"),
    Column("db_queries"),
    Column("errors"),
    Column("lost"),
    Column("seconds"),
    Column("cache_peak_rss_bytes", "cache_peak_rss_mib", "mib0"),
)
READING = (
    "`db_queries` is what the DB itself counted: one per client without coalescing, "
    "one in all with it."
)


def configure(values: Mapping[str, Any]) -> StampedeConfig:
    """`chaos scenario stampede`'s options: the DB's latency, unless given, outlasts the herd."""
    given = values["db_latency"]
    latency = given if given is not None else auto_db_latency(values["clients"])
    return StampedeConfig(
        clients=values["clients"], db_latency_s=latency, deadline_s=max(60.0, latency * 4)
    )


KIND = KINDS.register(
    SCENARIO,
    Kind(
        SCENARIO,
        rows_key="scenarios",
        fields=(
            "coalescing",
            "clients",
            "db_queries",
            ("errors", "client_errors"),
            "seconds",
            "lost",
            "wrong_values",
            "sources",
            "latency_s",
            "release_spread_s",
            "db_arrival_spread_s",
            ("db_arrivals_per_s", "db_arrival_rate_per_s"),
            "cache_peak_rss_bytes",
            "db_latency_s",
            "client_lines",
        ),
        announce=_announce,
        describe=_describe,
        derive=lambda row: {"name": _name(bool(row["coalescing"]))},
        title="Stampede: N clients, one cold key, coalescing off then on",
        columns=COLUMNS,
        reading=READING,
        configure=configure,
    ),
)
