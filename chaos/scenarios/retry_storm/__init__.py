"""The retry storm: a herd's fetches are in flight when the DB dies; how do the retries come back?

For each retry policy, on a fresh local stack:

1. warm: a round-robin herd of K users fills the cache with K keys (the DB's concurrency is
   raised for this step only, so warming is quick), then every key is expired at once;
2. a round-robin herd of K users asks for the K keys: K cache misses, K fetches to the DB,
   each under the cache's retry policy (coalescing is on, but each key has one user);
3. once the DB has seen every key's first attempt, so that the fetches are in flight and fail
   together, the DB is SIGKILLed (at the latest `KILL_WITHIN` of an attempt's deadline after the
   release, before any queued attempt times out); `outage_s` later it is started again on the
   same address;
4. the herd runs until every request has a value or a typed error (bounded by its deadline).

The DB is deliberately small (`db_concurrency / db_latency_s` queries per second, far below K
per 100 ms) and each attempt has a short deadline, so a synchronised wave cannot be absorbed: the
attempts that wait past their deadline fail together and retry together again. That is the
sustaining effect of a metastable failure, and what jitter breaks up.

Timelines are 100 ms bins from the herd's release (`t0_ns`):

- `db_arrivals`: from the DB's exact record. The killed DB's record is read just before the
  SIGKILL (a SIGKILLed process answers nothing), so arrivals in the few milliseconds between that
  read and the kill are missing; nothing is due to retry then, so they are at most late first
  attempts. The restored DB's record covers everything after the restore.
- `cache_attempts`: from the cache's record of every attempt towards the DB, including the ones
  that failed fast while the DB was down (they never reached it).
- `served`: herd requests answered with a value.

`outage` is [SIGKILL, the restarted DB accepts TCP connections again] (a connect probe polled
every 5 ms: the health check `restore` waits for sees the DB up to ~1 s late); the DB cannot
record an arrival inside it. `recovery_s` runs from the end of the outage to the last key served;
`ideal_recovery_s` is keys / capacity per second. `post_restore_peak_per_100ms` is the largest
bin of the restored DB's arrivals.

The cache reconnects to the DB with a short gRPC connection backoff (`reconnect_*`), so gRPC's
default 1 s..120 s backoff does not hide the retry policy being measured. The herd's users make a
single attempt each with a deadline longer than the cache's whole retry budget: the cache's
policy is the only one retrying.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from chaos.engine.bounds import out_of_range
from chaos.engine.kinds import Column, Kind, Plot, Row
from chaos.engine.model import Experiment
from chaos.engine.registry import KINDS
from chaos.scenarios.retry_storm.plot import plot_retry_storm
from herdlab.config import format_duration
from herdlab.guards import parse_guard_set, parse_guard_sets
from herdlab.queueing import NAMES as DISCIPLINES
from herdlab.retry import POLICY_NAMES, parse_policy_names

SCENARIO = "retry-storm"
# The herd's deadline exceeds the cache's retry budget by this much, so users see the cache's
# typed error rather than their own deadline.
HERD_MARGIN_S = 10.0
# The DB is killed once it has seen every key's first attempt, or at the latest this fraction of
# an attempt's deadline after the herd's release (the herd takes ~1 s to get 1,000 fetches to the
# DB; more on a busy machine).
KILL_WITHIN = 0.8


@dataclass(frozen=True)
class RetryStormConfig:
    """The scenario's knobs, each bounded (`problems()`).

    The defaults make the storm plain on a 2-core machine:
    - 1,000 keys against a DB of 20 per 100 ms: a synchronised wave of ~800 retries is many
      times its capacity;
    - a 6 s cap: full jitter spreads the same fetches over ~3 s on average (~270/s, near the DB's
      200/s; with a 4 s cap full stayed at 2.3-2.9x capacity, too close to half of exponential's
      figure on a busy machine);
    - a 2 s attempt deadline: longer than the herd takes to reach the DB (the fetches fail
      together at the kill, not one by one on their deadlines), short enough that the part of a
      wave the DB cannot serve in time fails together and comes back together;
    - 40 attempts within at least 60 s (`retry_total_s`, by default the outage plus twice the
      ideal recovery: 110 s at 10,000 keys): no fetch gives up while the outage and its
      recovery last;
    - the cache's DB channel reconnects within 50..500 ms;
    - guard sets (`herdlab.guards`) and DB queue disciplines to sweep beside the policies.
    """

    policies: tuple[str, ...] = ("exponential", "full")
    keys: int = 1000
    outage_s: float = 10.0
    seed: int | None = 42
    # The DB: 20 slots x 100 ms = 200 queries/s, 20 per 100 ms (1,000 keys need 5 s at best).
    db_latency_s: float = 0.1
    db_concurrency: int = 20
    # The cache's policy towards the DB: retries at base * 2^n up to the cap (exponential) or
    # uniformly below that (full jitter); enough attempts and time to outlive the outage.
    retry_base_s: float = 0.1
    retry_cap_s: float = 6.0
    retry_attempts: int = 40
    retry_total_s: float | None = None
    attempt_timeout_s: float = 2.0
    reconnect_initial_s: float = 0.05
    reconnect_max_s: float = 0.5
    channels: int = 8
    guards: tuple[str, ...] = ("none",)
    queues: tuple[str, ...] = ("fifo",)

    @property
    def db_capacity_per_s(self) -> float:
        return self.db_concurrency / self.db_latency_s

    @property
    def retry_budget_s(self) -> float:
        """The cache's time budget for one fetch: `retry_total_s`, or at least 60 s and enough
        for the outage plus twice the ideal recovery."""
        if self.retry_total_s is not None:
            return self.retry_total_s
        return max(60.0, self.outage_s + 2 * self.keys / self.db_capacity_per_s)

    @property
    def herd_deadline_s(self) -> float:
        return self.retry_budget_s + HERD_MARGIN_S

    def problems(self) -> list[str]:
        found = []
        unknown = [p for p in self.policies if p not in POLICY_NAMES]
        if not self.policies:
            found.append("name at least one retry policy")
        if unknown:
            found.append(
                f"unknown retry policy {', '.join(unknown)}; choose from {', '.join(POLICY_NAMES)}"
            )
        if len(set(self.policies)) != len(self.policies):
            found.append("each policy may be named once")
        found += out_of_range("keys", self.keys, "1..100000")
        found += out_of_range("outage", self.outage_s, "(0, 10m]")
        found += out_of_range("db latency", self.db_latency_s, "[1ms, 10s]")
        found += out_of_range("db concurrency", self.db_concurrency, "1..10000")
        if not 0 < self.retry_base_s <= self.retry_cap_s <= 600:
            found.append("need 0 < retry base <= retry cap <= 10m")
        found += out_of_range("retry attempts", self.retry_attempts, "1..100")
        if not self.outage_s < self.retry_budget_s <= 3000:
            found.append(
                f"the retry budget ({self.retry_budget_s:g}s) must outlast the outage "
                f"({self.outage_s:g}s) and be at most 50m"
            )
        if not 0 < self.attempt_timeout_s <= self.retry_budget_s:
            found.append("need 0 < attempt timeout <= retry budget")
        if not 0 < self.reconnect_initial_s <= self.reconnect_max_s <= 120:
            found.append("need 0 < reconnect initial <= reconnect max <= 120s")
        found += out_of_range("channels", self.channels, "1..1024")
        if not self.guards or len(set(self.guards)) != len(self.guards):
            found.append("name each guard set once, at least one (none: no guard)")
        for guards in self.guards:
            try:
                parse_guard_set(guards)
            except ValueError as exc:
                found.append(str(exc))
        unknown_queues = [q for q in self.queues if q not in DISCIPLINES]
        if not self.queues or unknown_queues or len(set(self.queues)) != len(self.queues):
            found.append(
                f"queue disciplines must be named once each from {', '.join(DISCIPLINES)}, "
                f"got {', '.join(self.queues) or 'none'}"
            )
        return found

    def command(self) -> str:
        """The `chaos` command line that runs this scenario (as far as the CLI exposes it)."""
        parts = [
            "chaos scenario retry-storm",
            f"--policies {','.join(self.policies)}",
            f"--keys {self.keys}",
            f"--outage {self.outage_s:g}s",
        ]
        if self.seed is not None:
            parts.append(f"--seed {self.seed}")
        if self.guards != ("none",):
            parts.append(f"--guards {','.join(self.guards)}")
        if self.queues != ("fifo",):
            parts.append(f"--queue {','.join(self.queues)}")
        return " ".join(parts)

    def params(self) -> dict[str, Any]:
        """The shipped experiment's params for this configuration."""
        return {
            "policies": list(self.policies),
            "keys": self.keys,
            "outage": format_duration(self.outage_s),
            "seed": self.seed if self.seed is not None else 0,
            "db_latency": format_duration(self.db_latency_s),
            "db_concurrency": self.db_concurrency,
            "retry_base": format_duration(self.retry_base_s),
            "retry_cap": format_duration(self.retry_cap_s),
            "retry_attempts": self.retry_attempts,
            "retry_total": format_duration(self.retry_budget_s),
            "attempt_timeout": format_duration(self.attempt_timeout_s),
            "reconnect_initial": format_duration(self.reconnect_initial_s),
            "reconnect_max": format_duration(self.reconnect_max_s),
            "channels": min(self.channels, self.keys),
            "herd_deadline": format_duration(self.herd_deadline_s),
            "kill_within": format_duration(KILL_WITHIN * self.attempt_timeout_s),
            "guards": list(self.guards),
            "queues": list(self.queues),
        }


def config_of(experiment: Experiment) -> RetryStormConfig:
    """The retry storm's parameters as an experiment states them (for the document's `config`)."""
    swept = dict(experiment.variants)
    policies = swept.get("cache.policy", (experiment.cache.policy,))
    outage = next(
        (s.action.seconds for s in experiment.timeline if s.do.startswith("outage")), None
    )
    if outage is None:
        outage = next((s.after_s for s in experiment.timeline if s.do == "restore db"), 0.0)
    db, cache, herd = experiment.db, experiment.cache, experiment.herd
    return RetryStormConfig(
        policies=tuple(str(p) for p in policies),
        keys=herd.keys,
        outage_s=outage or 0.0,
        seed=herd.seed,
        db_latency_s=db.latency_s,
        db_concurrency=db.concurrency,
        retry_base_s=cache.retry_base_s,
        retry_cap_s=cache.retry_cap_s,
        retry_attempts=cache.retry_attempts,
        retry_total_s=cache.retry_total_s,
        attempt_timeout_s=cache.attempt_timeout_s,
        reconnect_initial_s=cache.db_reconnect_initial_s,
        reconnect_max_s=cache.db_reconnect_max_s,
        channels=herd.channels,
        guards=tuple(str(g) for g in swept.get("cache.guards", (cache.guards,))),
        queues=tuple(str(q) for q in swept.get("db.queue_discipline", (db.queue_discipline,))),
    )


def _config(experiment: Experiment) -> dict[str, Any]:
    config = config_of(experiment)
    return {
        **asdict(config),
        "policies": list(config.policies),
        "guards": list(config.guards),
        "queues": list(config.queues),
        "retry_total_s": config.retry_budget_s,
    }


def _announce(experiment: Experiment, variant: Mapping[str, Any]) -> str:
    db, herd = experiment.settings_for(variant)[0], experiment.herd
    outage = config_of(experiment).outage_s
    label = ", ".join(str(v) for v in variant.values())
    return (
        f"Retry storm: {label} ({herd.keys:,} keys, DB {db.capacity_per_s:g}/s, outage {outage:g}s)"
    )


def _describe(row: Row) -> list[str]:
    recovery = row["recovery_s"]
    return [
        f"  {row['policy']}: peak after restore {row['post_restore_peak_per_100ms']:,}/100ms "
        f"= {row['post_restore_peak_over_capacity']:g}x capacity, "
        f"amplification {row['amplification']:g}, recovery "
        + (f"{recovery:g}s" if recovery is not None else "incomplete")
        + f" (ideal {row['ideal_recovery_s']:g}s), errors {row['client_errors']}, "
        f"lost {row['lost']}"
    ]


COLUMNS = (
    Column("policy", format="text"),
    Column("guards", format="text", default="none"),
    Column("queue", format="text", default="fifo"),
    Column("keys"),
    Column("db_capacity_per_s", format="num0"),
    Column("db_attempts"),
    Column("amplification"),
    Column("post_restore_peak_per_100ms"),
    Column("post_restore_peak_over_capacity"),
    Column("recovery_s"),
    Column("ideal_recovery_s"),
    Column("reconnect_lag_s"),
    Column("slot_time_amplification"),
    Column("client_errors"),
    Column("lost"),
)
READING = (
    "Each row is one policy on its own fresh stack, 100 ms per bar. The shaded band is "
    "the outage (SIGKILL until the DB listens again); the dashed line is what the DB can "
    "serve in 100 ms; the thin line is every attempt the cache made, including those that "
    "failed fast while the DB was down. Without jitter the fetches that failed together at "
    "the kill retry together at every backoff instant (base, 2 x base, 4 x base ... up to "
    "the cap): the DB meets them as a spike far above capacity, the attempts that wait past "
    "their deadline fail together and come back together once more. With full jitter the "
    "same fetches arrive spread out, near capacity, and recovery comes close to the ideal."
)


def configure(values: Mapping[str, Any]) -> RetryStormConfig:
    """`chaos scenario retry-storm`'s options."""
    return RetryStormConfig(
        policies=tuple(parse_policy_names(values["policies"])),
        keys=values["keys"],
        outage_s=values["outage"],
        seed=values["seed"],
        guards=tuple(parse_guard_sets(values["guards"])),
        queues=tuple(q.strip() for q in values["queues"].split(",") if q.strip()),
    )


KIND = KINDS.register(
    SCENARIO,
    Kind(
        SCENARIO,
        rows_key="policies",
        fields=(
            "policy",
            "guards",
            "guards_spec",
            "queue",
            "keys",
            "db_capacity_per_s",
            "db_attempts",
            "amplification",
            "post_restore_peak_per_100ms",
            "post_restore_peak_over_capacity",
            "recovery_s",
            "ideal_recovery_s",
            "recovery_over_ideal",
            "reconnect_lag_s",
            "client_errors",
            "lost",
            "keys_served",
            "keys_pending_at_restore",
            "db_queries",
            "errors",
            "wrong_values",
            "latency_s",
            "release_spread_s",
            "slot_time_amplification",
            "warm",
            "timeline",
            "guard_timeline",
        ),
        config=_config,
        announce=_announce,
        describe=_describe,
        title="Retry storm: the DB dies under a herd's fetches and comes back",
        columns=COLUMNS,
        plots=(Plot(plot_retry_storm, "DB arrivals and cache attempts per 100 ms"),),
        reading=READING,
        configure=configure,
    ),
)
