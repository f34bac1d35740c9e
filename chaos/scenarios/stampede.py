"""The workshop's scenario: N clients ask at once for one cold key.

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

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chaos.admin import Admin
from chaos.herd import (
    HerdConfig,
    HerdHooks,
    HerdResult,
    Outcome,
    ProgressFactory,
    ProgressFn,
    run_herd,
)
from chaos.procstats import peak_rss_bytes
from chaos.scenarios.common import in_thread, scenario_stack
from herdlab.retry import RetryPolicy

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
        found = []
        if not 1 <= self.clients <= 100_000:
            found.append(f"clients must be in 1..100000, got {self.clients}")
        if not 0 < self.db_latency_s <= 300:
            found.append(f"db latency must be in (0, 300s], got {self.db_latency_s:g}s")
        if not self.deadline_s > self.db_latency_s:
            found.append("deadline must be longer than the db latency")
        return found


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


async def _phase(
    config: StampedeConfig,
    coalescing: bool,
    on_progress: ProgressFn | None,
) -> tuple[dict[str, Any], HerdResult]:
    n = config.clients
    deadline = f"{config.deadline_s}s"
    async with scenario_stack("stampede") as stack:
        info = await in_thread(
            stack.up,
            db_args=[
                "--latency",
                f"{config.db_latency_s}s",
                "--spread",
                "0ms",
                "--concurrency",
                str(n),
                "--queue",
                str(n),
            ],
            cache_args=[
                "--policy",
                "none",
                "--attempt-timeout",
                deadline,
                "--retry-total",
                deadline,
                "--coalescing" if coalescing else "--no-coalescing",
            ],
        )
        db, cache = info.services["db"], info.services["cache"]
        async with Admin(db.grpc, cache.grpc) as admin:
            before = (await admin.db_state()).arrivals
            herd = HerdConfig(
                target=cache.grpc,
                users=n,
                keys=1,
                key_prefix="product-42:" + ("single-flight" if coalescing else "stampede") + ":",
                channels=min(config.channels, n),
                policy=RetryPolicy(
                    name="none", max_total_s=config.deadline_s, attempt_timeout_s=config.deadline_s
                ),
            )
            started = time.monotonic()
            result = await run_herd(herd, HerdHooks(on_progress))
            seconds = time.monotonic() - started
            db_queries = (await admin.db_state()).arrivals - before
        summary = result.summary()
        row = {
            "name": "single_flight" if coalescing else "stampede",
            "coalescing": coalescing,
            "clients": n,
            "db_queries": db_queries,
            "errors": sum(summary["errors"].values()),
            "seconds": round(seconds, 3),
            "lost": summary["lost"],
            "wrong_values": summary["wrong_values"],
            "sources": summary["sources"],
            "latency_s": summary["latency_s"],
            "release_spread_s": round(result.release_spread_s, 3),
            "cache_peak_rss_bytes": peak_rss_bytes(cache.pid or 0),
            "db_latency_s": config.db_latency_s,
        }
        return row, result


async def run_stampede(
    config: StampedeConfig,
    emit: Callable[[str], None],
    progress: ProgressFactory | None = None,
) -> dict[str, Any]:
    """Runs both scenarios, printing the workshop's lines through `emit`; returns the JSON doc."""
    rows = []
    for number, coalescing in ((1, False), (2, True)):
        title = "SINGLE_FLIGHT" if coalescing else "STAMPEDE"
        emit(
            f"Scenario {number}: {title} ({config.clients:,} clients, one cold key, "
            f"coalescing {'on' if coalescing else 'off'}, DB latency {config.db_latency_s:g}s)"
        )
        on_progress = progress(title) if progress else None
        row, result = await _phase(config, coalescing, on_progress)
        for line in client_lines(result):
            emit(line)
        emit(f"Total DB Queries: {row['db_queries']:,}")
        emit("")
        rows.append(row)
    return {"scenarios": rows}
