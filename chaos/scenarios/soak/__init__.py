"""Soak: a herd keeps running while every part of the lab is faulted in turn, cycle after cycle,
on a fresh local stack (the shipped experiment's: two cache replicas sharing a redis-server, the
wire proxy in front of the DB): the DB, a replica and redis killed and paused, the DB's link
partitioned and reset. Nothing may be lost, nothing wrong or stale served, nothing left in flight,
and no lab process may leak memory or file descriptors (each back within 10% after every cycle).

The folder's `experiment.toml` says what runs; this module is its kind and
the typed configuration `chaos soak` and the tests build it from.

**How it runs through the engine.** A soak is one trial of the engine's one run loop (stack,
herd, timeline, observers, measures, hypothesis, journal, provenance), with no soak-specific
branch in it. It needed three generic things, each of use beyond the soak:

- a herd in rounds (`[herd] rounds = true`, `herd_rounds.py`): steady traffic that runs until
  the timeline has run, which can be held between two rounds for a quiescent reading;
- observers: `probe` (a checked client reading the herd's keys throughout, with the freshness
  oracle) and `inflight` (the cache's in-flight fetches once the herd has ended);
- a restore that adds flags for one start (the DB's next `--data-version`).

The cycles themselves are one timeline action, `soak-cycles` (`chaos/engine/actions/
soak_cycles.py`): the number of cycles is a parameter and a timeline is a fixed list of steps, so
a cycle cannot be written out as steps; and recovery waits and the long-lived cache's readings
depend on what happened so far. The alternative, a kind that replaces the trial's herd with a
body of its own, would have put a second run loop behind a seam in `Trial`.

The document keeps the fields `chaos soak --json` always wrote, at its top level (one trial, so
its one row is the document), plus the engine's hypothesis, journal and provenance.

**Client-visible correctness.** Every restored DB serves a new data version (values are a pure
function of key and version), so a value older than the TTL is observable: the probe counts
`stale_values`, values whose version is older than the newest DB's although the request was sent
more than a TTL after that DB came up (or, for a key never read before, after it came up at all).
`wrong_values` counts values that are not their key's value at their version, from the herd and
from the probe. `lost` is every request that ended with neither a value nor a typed error (always
0); `inflight_after` the cache's coalescer entries once the herd has stopped and the cache's own
fetch budget has had time to run out; `db_dropped` the DB's count of work whose caller had gone,
summed over its incarnations (each read just before it was killed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

from chaos.engine import spec
from chaos.engine.actions.soak_cycles import STEPS, Cycles, SoakCycles
from chaos.engine.bounds import out_of_range
from chaos.engine.kinds import Column, Kind, Row, from_options
from chaos.engine.model import Experiment
from chaos.engine.registry import KINDS
from herdlab.config import format_duration

SCENARIO = "soak"
# A generous bound on one cycle (a typical one takes a few seconds; a fault not recovered from
# within a minute fails the soak on its own).
CYCLE_BOUND_S = 60.0
START_BOUND_S = 300.0


@dataclass(frozen=True)
class SoakConfig:
    """The soak's settings. The defaults keep the herd modest (30 users, each a request about
    every 60 ms, over 64 keys), so 50 cycles take about seven minutes on two shared cores, and
    the cache's TTL short (1 s), so values expire, and are fetched at a new version after a DB
    restore, many times in every cycle."""

    cycles: int = 10
    users: int = 30
    requests_per_user: int = 20
    think_s: float = 0.05
    keys: int = 64
    channels: int = 4
    deadline_s: float = 3.0  # each herd request's budget, retries included
    outage_s: float = 0.5  # how long each kill or pause lasts before the restore or resume
    ttl_s: float = 1.0  # the cache's TTL
    cache_kill_cycles: int | None = None  # cycles that also kill the cache [default: cycles // 2]
    warmup_cycles: int | None = None  # of the long-lived cache [default: min(5, half its cycles)]
    seed: int = 1

    @property
    def cache_kills(self) -> int:
        return self.cycles // 2 if self.cache_kill_cycles is None else self.cache_kill_cycles

    @property
    def warmup(self) -> int:
        if self.warmup_cycles is not None:
            return self.warmup_cycles
        return max(1, min(5, (self.cycles - self.cache_kills) // 2))

    @property
    def fetch_budget_s(self) -> float:
        """The cache's time budget for one fetch: a fetch outlives its callers by at most this."""
        return min(2.0, self.deadline_s)

    def plan(self) -> Cycles:
        return Cycles(self.cycles, self.outage_s, self.cache_kills, self.warmup)

    def problems(self) -> list[str]:
        found = self.plan().problems()
        found += out_of_range("users", self.users, "1..10000")
        found += out_of_range("requests per user", self.requests_per_user, "1..10000")
        found += out_of_range("think time", self.think_s, "[0, 10s]")
        found += out_of_range("keys", self.keys, "1..100000")
        if not 1 <= self.channels <= min(self.users, 1024):
            found.append(f"channels must be in 1..min(users, 1024), got {self.channels}")
        found += out_of_range("deadline", self.deadline_s, "[0.1s, 60s]")
        found += out_of_range("ttl", self.ttl_s, "[0.1s, 1h]")
        return found

    def params(self) -> dict[str, Any]:
        """The shipped experiment's params for this configuration."""
        limit = min(spec.MAX_LIMIT_S, START_BOUND_S + CYCLE_BOUND_S * self.cycles)
        return {
            "cycles": self.cycles,
            "cache_kills": self.cache_kills,
            "warmup": self.warmup,
            "outage": format_duration(self.outage_s),
            "users": self.users,
            "requests": self.requests_per_user,
            "think": format_duration(self.think_s),
            "keys": self.keys,
            "channels": self.channels,
            "deadline": format_duration(self.deadline_s),
            "ttl": format_duration(self.ttl_s),
            "fetch_budget": format_duration(self.fetch_budget_s),
            "seed": self.seed,
            "limit": f"{round(limit)}s",  # whole seconds: no exponent for long runs
        }

    def command(self) -> str:
        return f"chaos soak --cycles {self.cycles} --seed {self.seed}"


def config_of(experiment: Experiment) -> SoakConfig:
    """The soak's parameters as an experiment states them (for the document's `config`)."""
    action = next((s.action for s in experiment.timeline if isinstance(s.action, SoakCycles)), None)
    plan = action.plan if action is not None else Cycles(0, 0.0, 0, 0)
    herd = experiment.herd
    return SoakConfig(
        cycles=plan.cycles,
        users=herd.users,
        requests_per_user=herd.requests,
        think_s=herd.think_s,
        keys=herd.keys,
        channels=herd.channels,
        deadline_s=herd.deadline_s,
        outage_s=plan.outage_s,
        ttl_s=experiment.cache.ttl_s,
        cache_kill_cycles=plan.cache_kills,
        warmup_cycles=plan.warmup,
        seed=herd.seed or 0,
    )


def _config(experiment: Experiment) -> dict[str, Any]:
    return asdict(config_of(experiment))


def _announce(experiment: Experiment, variant: Mapping[str, Any]) -> str:
    config = config_of(experiment)
    return (
        f"Soak: {config.cycles} cycles of {', '.join(STEPS)} (the cache killed in the first "
        f"{config.cache_kills}, when the stack has them), each {config.outage_s:g}s; herd of "
        f"{config.users} users x "
        f"{config.requests_per_user} requests in rounds; cache TTL {config.ttl_s:g}s"
    )


def _describe(row: Row) -> list[str]:
    return [
        f"Soak done: {row['cycles']} cycles in {row['seconds']:.1f}s; {row['sent']:,} sent, "
        f"{row['ok']:,} ok, {row['lost']} lost, {row['wrong_values']} wrong, "
        f"{row['stale_values']} stale; in flight after: {row['inflight_after']}; cache fds "
        f"{row['fds_before']} -> {row['fds_after']}, RSS {row['rss_before'] / 2**20:.1f} -> "
        f"{row['rss_after'] / 2**20:.1f} MiB; every process back within "
        f"{row['resource_drift']:.1%} of its first reading at rest"
    ]


COLUMNS = (
    *(Column(field) for field in ("cycles", "sent", "ok")),
    Column("errors", format="counts"),
    *(Column(field) for field in ("lost", "wrong_values", "stale_values", "inflight_after")),
    Column("fds_before"),
    Column("fds_after"),
    Column("rss_before", "rss_before_mib", "mib1"),
    Column("rss_after", "rss_after_mib", "mib1"),
    Column("db_dropped"),
    Column("resource_drift"),
)
READING = (
    "Nothing may be lost, wrong or stale; nothing left in flight; the long-lived "
    "cache's file descriptors and memory are read at the same quiet point before and after."
)


KIND = KINDS.register(
    SCENARIO,
    Kind(
        SCENARIO,
        fields=(
            "cycles",
            "seconds",
            ("sent", "requests"),
            "ok",
            "errors",
            "lost",
            "lost_by_cause",
            ("wrong_values", "wrong_values_all"),
            "stale_values",
            "inflight_after",
            "rss_before",
            "rss_after",
            "rss_growth",
            "fds_before",
            "fds_after",
            "cache_measured",
            "db_dropped",
            "db_restarts",
            "db_version_last",
            "cache_restarts",
            "redis_restarts",
            "resource_drift",
            "process_resources",
            "herd_rounds",
            "probe",
            ("recovery_s", "fault_recovery_s"),
            "reconnect_lag_s",
        ),
        config=_config,
        announce=_announce,
        describe=_describe,
        flat=True,
        title="Soak: every part of the lab killed, paused, cut and restored, cycle after cycle",
        columns=COLUMNS,
        reading=READING,
        configure=partial(from_options, SoakConfig),
    ),
)
