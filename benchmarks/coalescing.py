"""Section `coalescing`: one cold key, N concurrent requests, through the real cache service.

1. The bare server's fan-out limit: it holds N calls for one key until all N are pending (and 1 s
   more, so it is idle as the cache is when its DB answers), then answers them at once. From its
   gate opening to the last client answered is the time one grpc.aio process needs to send N
   replies (`bare_fanout_ms`); its RSS growth over N is the cost of a pending call
   (`bare_rss_per_pending_bytes`). How long N calls took to arrive sizes step 2.
2. The cache (coalescing on, policy `none`) in front of a DB whose latency outlasts the arrival of
   all N calls (three times what step 1 measured, at least 2 s), so every caller but the first
   waits on the one fetch. `db_queries` is the DB's own count (the limit is 1); `fanout_ms` runs
   from the DB's answer (its recorded arrival + its latency, spread 0) to the last client
   answered; `rss_per_waiter_bytes` is the cache's peak RSS growth over the callers that waited.
3. Peers in-process (`benchmarks.peers`), each in a fresh interpreter on the client cores: once
   for latency, once under tracemalloc for peak memory.

`render` writes the section's part of BENCHMARKS.md from its results (under its `TITLE`),
`summary_rows` its rows of the report's summary; `benchmarks.report` assembles them.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import markdown as md
from benchmarks.peers import PEERS
from benchmarks.servers import bare_server, get, lab_stack, load, read_json_file
from benchmarks.stats import ratio
from benchmarks.system import CpuPlan, peak_rss_bytes, rss_bytes, run_json
from chaos.lab.admin import Admin
from herdlab.config import format_duration

# The section's title in BENCHMARKS.md.
TITLE = "Coalescing"

KEY = "burst"
MIN_DB_LATENCY_S = 2.0
MAX_DB_LATENCY_S = 60.0
ARRIVAL_FACTOR = 3.0
CALL_TIMEOUT_MARGIN_S = 60.0


def _burst(plan: CpuPlan, target: str, calls: int, timeout_s: float) -> dict[str, Any]:
    return load(
        plan,
        [
            "burst",
            "--target",
            target,
            "--calls",
            str(calls),
            "--key",
            KEY,
            "--timeout",
            str(timeout_s),
        ],
        timeout_s=timeout_s + 60.0,
    )


def _bare(plan: CpuPlan, calls: int) -> dict[str, Any]:
    events = Path(tempfile.mkdtemp(prefix="herdlab-bench-gate-")) / "gate.json"
    extra = ["--hold", str(calls), "--hold-key", KEY, "--events", str(events)]
    with bare_server(plan, extra) as bare:
        before = rss_bytes(bare.pid)
        burst = _burst(plan, bare.target, calls, CALL_TIMEOUT_MARGIN_S)
        gate = read_json_file(events, 10.0)
        peak = peak_rss_bytes(bare.pid)
    opened = int(gate["gate_open_ns"])
    return {
        "calls": calls,
        "held": gate["held"],
        "arrival_s": round((int(gate["all_pending_ns"]) - burst["start_ns"]) / 1e9, 3),
        "fanout_ms": round((burst["last_done_ns"] - opened) / 1e6, 1),
        "rss_before_bytes": before,
        "rss_peak_bytes": peak,
        "rss_per_pending_bytes": round((peak - before) / max(1, int(gate["held"]))),
        "latency_ms": burst["latency_ms"],
        "errors": burst["errors"],
    }


async def _db_record(db: str, cache: str, after_seq: int) -> tuple[int, list[int]]:
    async with Admin(db, cache) as admin:
        arrivals = (await admin.db_state()).arrivals
        return arrivals, await admin.db_arrivals(after_seq=after_seq)


async def _db_arrivals(db: str, cache: str) -> int:
    async with Admin(db, cache) as admin:
        return int((await admin.db_state()).arrivals)


def _cache(plan: CpuPlan, calls: int, db_latency_s: float) -> dict[str, Any]:
    timeout_s = db_latency_s + CALL_TIMEOUT_MARGIN_S
    db_args = ["--latency", format_duration(db_latency_s), "--spread", "0ms"]
    cache_args = [
        "--policy",
        "none",
        "--attempt-timeout",
        format_duration(round(timeout_s)),
        "--retry-total",
        format_duration(round(timeout_s)),
        "--ttl",
        "1h",
        "--coalescing",
    ]
    with lab_stack(plan, db_args, cache_args) as (_, db, cache):
        get(cache.target, "warm", timeout_s)  # the whole path, DB channel included, is warm
        before_rss = rss_bytes(cache.pid)
        before_db = asyncio.run(_db_arrivals(db.target, cache.target))
        burst = _burst(plan, cache.target, calls, timeout_s)
        peak = peak_rss_bytes(cache.pid)
        after_db, arrivals = asyncio.run(_db_record(db.target, cache.target, before_db))
    waiters = int(burst["sources"].get("COALESCED", 0))
    answered_ns = min(arrivals) + round(db_latency_s * 1e9) if arrivals else None
    return {
        "db_queries": after_db - before_db,
        "db_latency_s": db_latency_s,
        "waiters": waiters,
        "sources": burst["sources"],
        "errors": burst["errors"],
        "fanout_ms": round((burst["last_done_ns"] - answered_ns) / 1e6, 1) if answered_ns else None,
        "first_answer_after_db_ms": (
            round((burst["first_done_ns"] - answered_ns) / 1e6, 1) if answered_ns else None
        ),
        "rss_before_bytes": before_rss,
        "rss_peak_bytes": peak,
        "rss_per_waiter_bytes": round((peak - before_rss) / waiters) if waiters else None,
        "latency_ms": burst["latency_ms"],
    }


def _peer(plan: CpuPlan, peer: str, callers: int, latency_s: float) -> dict[str, Any]:
    argv = [
        sys.executable,
        "-m",
        "benchmarks.peers",
        "--peer",
        peer,
        "--callers",
        str(callers),
        "--latency",
        str(latency_s),
    ]
    timed, _ = run_json(argv, plan.client, timeout_s=300.0)
    traced, _ = run_json([*argv, "--tracemalloc"], plan.client, timeout_s=600.0)
    row: dict[str, Any] = json.loads(timed)
    memory = json.loads(traced)
    row["peak_memory_bytes"] = memory["peak_memory_bytes"]
    row["db_queries_traced_run"] = memory["db_queries"]
    return row


def run(plan: CpuPlan, calls: int, peer_callers: int, peer_latency_s: float) -> dict[str, Any]:
    bare = _bare(plan, calls)
    db_latency_s = round(
        min(MAX_DB_LATENCY_S, max(MIN_DB_LATENCY_S, ARRIVAL_FACTOR * bare["arrival_s"])), 3
    )
    cache = _cache(plan, calls, db_latency_s)
    peers = [_peer(plan, peer, peer_callers, peer_latency_s) for peer in PEERS]
    return {
        "clients": calls,
        "db_queries": cache["db_queries"],
        "db_latency_s": db_latency_s,
        "waiters": cache["waiters"],
        "fanout_ms": cache["fanout_ms"],
        "bare_fanout_ms": bare["fanout_ms"],
        "fanout_over_bare": ratio(cache["fanout_ms"] or 0.0, bare["fanout_ms"]),
        "rss_per_waiter_bytes": cache["rss_per_waiter_bytes"],
        "bare_rss_per_pending_bytes": bare["rss_per_pending_bytes"],
        "rss_over_bare": ratio(
            float(cache["rss_per_waiter_bytes"] or 0), float(bare["rss_per_pending_bytes"])
        ),
        "latency_ms": cache["latency_ms"],
        "cache": cache,
        "bare": bare,
        "peer_callers": peer_callers,
        "peer_db_latency_s": peer_latency_s,
        "peers": peers,
    }


def render(c: dict[str, Any]) -> list[str]:
    cache, bare = c["cache"], c["bare"]
    lat = c["latency_ms"]
    lines = [
        f"{c['clients']:,} concurrent `Get`s on one cold key, from the load generator (one "
        "process, 8 channels) through the real cache service (coalescing on, retry policy "
        f"`none`) to the DB. The DB's latency ({c['db_latency_s']:g} s) is three times what "
        f"the bare server measured for all {c['clients']:,} calls to arrive "
        f"({bare['arrival_s']:g} s, at least 2 s), so every caller but the first finds the "
        "fetch in flight.",
        "",
        *md.table(
            ["measure", "cache", "limit", "distance"],
            [
                [
                    "DB queries (DB's own count)",
                    f"{c['db_queries']:,}",
                    "1",
                    md.times(c["db_queries"], 0),
                ],
                [
                    "callers that waited on the fetch",
                    f"{c['waiters']:,}",
                    f"{c['clients'] - 1:,}",
                    f"{c['clients'] - 1 - c['waiters']:,} short",
                ],
                [
                    "fan-out: DB answer -> last client answered",
                    md.ms(c["fanout_ms"]),
                    f"{md.ms(c['bare_fanout_ms'])} "
                    f"(bare server sends {c['clients']:,} held replies)",
                    md.times(c["fanout_over_bare"]),
                ],
                [
                    "RSS growth per waiter",
                    md.kib(c["rss_per_waiter_bytes"]),
                    f"{md.kib(c['bare_rss_per_pending_bytes'])} per pending call (bare server)",
                    md.times(c["rss_over_bare"]),
                ],
                [
                    "client latency p50 / p99 / max",
                    f"{lat['p50']:,.0f} / {lat['p99']:,.0f} / {lat['max']:,.0f} ms",
                    f"DB latency {c['db_latency_s'] * 1000:,.0f} ms + fan-out",
                    f"max - DB latency = {lat['max'] - c['db_latency_s'] * 1000:,.0f} ms",
                ],
            ],
        ),
        f"Sources seen by clients: {cache['sources']}; errors: {cache['errors'] or 'none'}. "
        f"Cache RSS {md.mib(cache['rss_before_bytes'])} before the burst, "
        f"{md.mib(cache['rss_peak_bytes'])} at its peak; bare server "
        f"{md.mib(bare['rss_before_bytes'])} -> {md.mib(bare['rss_peak_bytes'])}. The first "
        f"client was answered {md.ms(cache['first_answer_after_db_ms'])} after the DB's answer.",
        "",
        "The limits: one query is the least a miss can cost; a grpc.aio process that holds "
        f"{c['clients']:,} calls and answers them at once (the bare server, given 1 s to settle "
        "after the last call arrives, as the cache is idle when its DB answers) is the fastest "
        "fan-out and the smallest cost per pending call this stack allows. Client latency is "
        "set by the DB's latency, which the benchmark chooses; what the cache adds is the "
        "fan-out.",
        "",
    ]
    lines += _coalescing_gaps(c)
    lines += _peers(c)
    return lines


def _coalescing_gaps(c: dict[str, Any]) -> list[str]:
    notes = []
    if c["db_queries"] != 1:
        notes.append(
            f"- **db_queries is {c['db_queries']}, not 1.** Callers arrived after the fetch "
            "ended (sources above show HITs or extra MISSes): the arrival took longer than the "
            "DB latency chosen from the bare run. A longer DB latency closes it."
        )
    if c["fanout_over_bare"] is not None and c["fanout_over_bare"] > 1.1:
        notes.append(
            f"- **Fan-out is {md.times(c['fanout_over_bare'])} the bare server's.** Each waiter "
            "resumes from `asyncio.shield` on the fetch's task and then runs the cache's own "
            "code (a Prometheus counter with labels and a histogram observation, ~4 us by the "
            "field notes, and a new response message) before grpc sends the reply. Sharing "
            "one response object and counting coalesced answers in bulk would close most of it."
        )
    if c["rss_over_bare"] is not None and c["rss_over_bare"] > 1.1:
        notes.append(
            f"- **RSS per waiter is {md.times(c['rss_over_bare'])} the bare server's per pending "
            "call.** A waiter holds, beyond grpc's call state, a shield future and the "
            "handler's coroutine frame (tracemalloc peaks of the in-process run below show the "
            "same order). Waiting on the task itself (no shield) for callers that cannot be "
            "cancelled would trim it."
        )
    if not notes:
        notes.append(
            "Every coalescing figure is within 10% of its limit or better; no gap to close."
        )
    return [*notes, ""]


def _peers(c: dict[str, Any]) -> list[str]:
    peers = c["peers"]
    ours = next(p for p in peers if p["peer"] == "herdlab")
    rows = []
    for p in peers:
        lat = p["latency_ms"]
        rows.append(
            [
                p["peer"],
                f"{p['db_queries']:,}",
                f"{lat['p50']:,.0f} / {lat['p99']:,.0f} / {lat['max']:,.0f}",
                md.times(lat["p99"] / ours["latency_ms"]["p99"]),
                md.mib(p["peak_memory_bytes"]),
                md.times(p["peak_memory_bytes"] / ours["peak_memory_bytes"]),
                f"{p['errors']}",
            ]
        )
    db_ms = c["peer_db_latency_s"] * 1000
    return [
        "### Peers, in-process",
        "",
        f"{c['peer_callers']:,} concurrent callers on one cold key in one asyncio process, "
        f"a simulated DB of {db_ms:g} ms (`asyncio.sleep`, queries counted), each peer in a "
        "fresh interpreter on the client core, same run. Latency from a run without "
        "tracemalloc; peak memory from a second run under tracemalloc.",
        "",
        *md.table(
            [
                "peer",
                "DB queries",
                "latency p50 / p99 / max (ms)",
                "p99 vs herdlab",
                "peak memory (tracemalloc)",
                "memory vs herdlab",
                "errors",
            ],
            rows,
        ),
        f"The limits: 1 DB query, and a latency of {db_ms:g} ms (the DB's) plus the time one "
        f"event loop needs to start {c['peer_callers']:,} callers and resume them; `none` "
        "shows that floor with no protection at all (and pays for it in DB queries). "
        "`herdlab` is the project's `TtlStore` + `SingleFlight`; `aiocache` is `cached_stampede` "
        "(lock with a lease; waiters are released by an event and re-read the cache); "
        "`cashews_lock` is `@cache(lock=True, protected=False)` (waiters poll the lock on "
        "every loop iteration until the first caller releases it).",
        "",
    ]


def summary_rows(c: dict[str, Any]) -> list[list[str]]:
    """The summary's rows for this section: figure, limit, distance."""
    return [
        [
            f"{c['db_queries']:,} DB quer{'y' if c['db_queries'] == 1 else 'ies'} for "
            f"{c['clients']:,} clients",
            "1 query",
            "at the limit" if c["db_queries"] == 1 else f"{c['db_queries']}x the limit",
        ],
        [
            f"fan-out {md.ms(c['fanout_ms'])}",
            f"bare server {md.ms(c['bare_fanout_ms'])}",
            md.times(c["fanout_over_bare"]),
        ],
        [
            f"{md.kib(c['rss_per_waiter_bytes'])} RSS per waiter",
            f"bare {md.kib(c['bare_rss_per_pending_bytes'])} per pending call",
            md.times(c["rss_over_bare"]),
        ],
    ]
