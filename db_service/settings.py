"""The DB's settings: latency model, capacity, queue discipline, injected faults, data version,
record size.

Declared once (`herdlab.settings`): `db-service`'s flags and environment variables, the admin
plane's validation, the argv `chaos` starts it with and experiment files' `[stack.db]` all read
these declarations.
"""

from __future__ import annotations

from dataclasses import dataclass

from herdlab import queueing
from herdlab.config import format_duration
from herdlab.settings import ServerSettings, setting

# Latency and spread are bounded so that every sleep the DB draws is a finite number of seconds:
# an infinite spread would draw inf (or NaN, for inf * 0.0), and a NaN timer corrupts asyncio's
# timer heap. A day is far beyond any scenario (the tests' longest is the gate's hour).
MAX_LATENCY_S = 86_400.0
# CoDel's times: from well under RFC 8289's 5 ms target up to a minute, longer than any deadline
# the lab's callers set (past it, the limit never binds before the caller has gone).
MIN_CODEL_TARGET_S = 0.0001
MIN_CODEL_INTERVAL_S = 0.001
MAX_CODEL_S = 60.0


@dataclass(frozen=True)
class DbSettings(ServerSettings):
    latency_s: float = setting(
        0.05, "latency", "duration", "Base latency of one query.", lo=0.0, hi=MAX_LATENCY_S
    )
    spread_s: float = setting(
        0.02,
        "spread",
        "duration",
        "Extra latency, uniform in [0, spread].",
        lo=0.0,
        hi=MAX_LATENCY_S,
    )
    concurrency: int = setting(50, "concurrency", "int", "Queries served at once.", lo=1, hi=1e6)
    queue: int = setting(
        500, "queue", "int", "Queries that may wait for a slot; more are rejected.", lo=0, hi=1e6
    )
    queue_discipline: str = setting(
        "fifo",
        "queue_discipline",
        "choice",
        "Which waiter a freed slot goes to, and who is shed: fifo (oldest first), codel (shed "
        "waiters past their limit), lifo (newest first while the queue stands).",
        choices=queueing.NAMES,
    )
    codel_target_s: float = setting(
        queueing.DEFAULT_TARGET_S,
        "codel_target",
        "duration",
        "CoDel: how long a query that joins a standing queue may wait.",
        lo=MIN_CODEL_TARGET_S,
        hi=MAX_CODEL_S,
    )
    codel_interval_s: float = setting(
        queueing.DEFAULT_INTERVAL_S,
        "codel_interval",
        "duration",
        "How long the queue must stay non-empty to stand (codel: then a joining query may wait "
        "only the target, else this long; lifo: then newest first).",
        lo=MIN_CODEL_INTERVAL_S,
        hi=MAX_CODEL_S,
    )
    error_rate: float = setting(
        0.0, "error_rate", "probability", "Probability of an injected UNAVAILABLE.", lo=0, hi=1
    )
    seed: int | None = setting(None, "seed", "seed", "Seed for latency and error draws.")
    version: int = setting(
        1,
        "data_version",
        "int",
        "Version of the data served: every value is a function of (key, version).",
        lo=1,
        hi=2**31 - 1,
    )
    record_size: int = setting(
        1_000_000, "record_size", "int", "Arrivals kept in the exact record.", lo=1, hi=5e7
    )

    def problems(self) -> list[str]:
        found = super().problems()
        if not found and self.codel_target_s > self.codel_interval_s:
            found.append(
                f"codel target must not exceed codel interval, got target "
                f"{format_duration(self.codel_target_s)} > interval "
                f"{format_duration(self.codel_interval_s)}"
            )
        return found

    def discipline(self) -> queueing.Discipline:
        """The queue discipline these settings describe."""
        return queueing.discipline(
            self.queue_discipline, self.codel_target_s, self.codel_interval_s
        )

    @property
    def capacity_per_s(self) -> float:
        """Queries per second the DB can serve: concurrency / mean latency."""
        mean = self.latency_s + self.spread_s / 2.0
        return self.concurrency / mean if mean > 0 else float("inf")
