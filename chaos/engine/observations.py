"""What one trial saw: the facts measures are computed from, typed, all on the wall clock (ns).

A trial fills one `Observations`; measures only read it. Records of a service that was killed
are read just before the kill (a SIGKILLed process answers nothing), so `db_arrivals` and
`cache_attempts` span every incarnation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cache_service.settings import CacheSettings
from chaos.engine.herd import HerdResult
from chaos.engine.herd_settings import HerdSettings
from chaos.engine.stack_settings import StackSettings
from db_service.settings import DbSettings
from protos import admin_pb2

# Outage kinds in which the process was gone and was started again.
RESTARTED = ("kill", "stop")


@dataclass
class Outage:
    """A service killed and brought back: just before the SIGKILL, just before the restart, the
    first TCP connect that succeeded again (a probe polled every 5 ms) and health SERVING. One
    stopped gracefully (`kind` "stop") is timed alike, `down_ns` just before the SIGTERM (its
    drain is inside the outage). A partition (`kind` "partition") is an outage too: from the
    instant the proxy dropped its bytes (`down_ns`) to the instant it passed them again (`up_ns`,
    the heal)."""

    service: str
    down_ns: int
    restart_ns: int | None = None
    up_ns: int | None = None
    serving_ns: int | None = None
    kind: str = "kill"

    @property
    def restarted(self) -> bool:
        """Whether the process was gone (killed or stopped) and is restarted to end it."""
        return self.kind in RESTARTED


@dataclass
class JournalEntry:
    """One action the trial took: when (ns), what (`do` as written), and what it reported."""

    t_ns: int
    do: str
    phase: str  # "setup" or "timeline"
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class DbCounters:
    """The DB's own counters from the herd's release on, summed over its incarnations (each
    read before it was killed)."""

    completed: int = 0
    rejected: int = 0
    dropped: int = 0
    failed: int = 0
    slot_seconds: float = 0.0
    dropped_by_stage: dict[str, int] = field(default_factory=dict)
    # The most queries for one key in the DB at once, over every incarnation since the release.
    max_in_flight_per_key: int = 0

    def add(self, state: admin_pb2.DbState, since: admin_pb2.DbState | None = None) -> None:
        """Adds one incarnation's counters, less what they were at `since` (the release)."""
        base = since or admin_pb2.DbState()
        self.completed += state.completed - base.completed
        self.rejected += state.rejected - base.rejected
        self.dropped += state.dropped - base.dropped
        self.failed += state.failed - base.failed
        self.slot_seconds += state.slot_seconds - base.slot_seconds
        self.max_in_flight_per_key = max(self.max_in_flight_per_key, state.max_in_flight_per_key)
        for stage, count in state.dropped_by_stage.items():
            before = base.dropped_by_stage.get(stage, 0)
            self.dropped_by_stage[stage] = self.dropped_by_stage.get(stage, 0) + count - before


@dataclass
class Observations:
    variant: dict[str, Any]
    db: DbSettings
    cache: CacheSettings
    herd: HerdSettings
    herd_result: HerdResult
    t0_ns: int  # the herd's release
    end_ns: int
    db_arrivals: list[int]
    cache_attempts: list[int]
    db_counters: DbCounters
    db_capacity_per_s: float  # the DB's, or a `[target]`'s declared `capacity` (0: none given)
    outages: list[Outage]
    journal: list[JournalEntry]
    setup: dict[str, dict[str, Any]]  # what each setup action reported, by action name
    cache_peak_rss_bytes: int
    series: dict[str, Any] = field(default_factory=dict)  # what observers collected, by name
    stack: StackSettings = field(default_factory=StackSettings)
    # The replicas' lease figures at the end (leases, takeovers, waits, fallbacks), summed
    # over the replicas still running; empty without a shared store.
    lease_counters: dict[str, float] = field(default_factory=dict)
    # A run against the user's service: each `[[measure]]` PromQL measure's value, by name.
    queried: dict[str, Any] = field(default_factory=dict)

    def outage(self, service: str) -> Outage | None:
        """The first outage of `service`, if it had one."""
        return next((o for o in self.outages if o.service == service), None)
