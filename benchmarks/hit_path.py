"""Section `hit_path`: the cache's `Get` on a warm key against the bare server, side by side.

Three servers are up at once on the server cores: the cache, the cache with the recommended
guards on its calls to the DB (`--guard recommended`, its own DB), and the bare server. The same
load generator (closed loop, on the client cores) drives each in turn at each concurrency, in
rounds whose order reverses (cache, guarded cache, bare; then bare, guarded cache, cache), so
drifting load on the machine hits all three alike on average. Figures are medians over rounds;
`ratio` = cache req/s / bare req/s (the bare server is the limit: 1.0) and `guarded_ratio` the
same for the guarded cache. A hit never calls the DB, so the guards should cost nothing here:
`guarded_over_cache` (guarded / plain cache req/s) shows it. `cpu_ratio` = bare / cache server
CPU time per request: on a machine shared with other jobs a server may not get its whole core,
and CPU per request is what throughput would follow then.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from benchmarks.servers import bare_server, get, lab_stack, load
from benchmarks.stats import median, ratio
from benchmarks.system import CpuPlan
from herdlab.guards import parse_guard_set

KEY = "hot"
GOAL_AT_64 = 0.9
# The guarded cache's `--guard`: herdlab.guards.RECOMMENDED, by the name users give it.
GUARDS = "recommended"
# One round's order; odd rounds run it reversed.
ORDER = ("cache", "cache_guarded", "bare")


def _measure(
    plan: CpuPlan, target: str, pid: int, concurrency: int, warmup_s: float, duration_s: float
) -> dict[str, Any]:
    return load(
        plan,
        [
            "closed",
            "--target",
            target,
            "--concurrency",
            str(concurrency),
            "--key",
            KEY,
            "--warmup",
            str(warmup_s),
            "--duration",
            str(duration_s),
            "--server-pid",
            str(pid),
        ],
        timeout_s=warmup_s + duration_s + 60.0,
    )


def _cpu_us(run: dict[str, Any]) -> float:
    """Server CPU time per request answered, in microseconds."""
    return 1e6 * float(run.get("server_cpu", 0.0)) / run["rps"] if run["rps"] else 0.0


def _median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "server_cpu_us_per_request": round(median([_cpu_us(r) for r in runs]), 1),
        "rps": round(median([r["rps"] for r in runs]), 1),
        "p50_ms": round(median([r["latency_ms"]["p50"] for r in runs]), 3),
        "p99_ms": round(median([r["latency_ms"]["p99"] for r in runs]), 3),
        "server_cpu": round(median([r.get("server_cpu", 0.0) for r in runs]), 3),
        "client_cpu": round(median([r["client_cpu"] for r in runs]), 3),
        "errors": sum(sum(r["errors"].values()) for r in runs),
        "rounds": [r["rps"] for r in runs],
    }


def _min_max(ratios: list[float | None]) -> list[float] | None:
    """[lowest, highest] of the per-round ratios that exist; None when none does."""
    known = [x for x in ratios if x is not None]
    return [min(known), max(known)] if known else None


def run(
    plan: CpuPlan,
    concurrencies: Sequence[int],
    rounds: int,
    warmup_s: float,
    duration_s: float,
) -> dict[str, Any]:
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    db_args = ["--latency", "5ms", "--spread", "0ms"]
    with (
        lab_stack(plan, db_args, ["--ttl", "1h"]) as (_, _db, cache),
        lab_stack(plan, db_args, ["--ttl", "1h", "--guard", GUARDS]) as (_, _gdb, guarded),
        bare_server(plan) as bare,
    ):
        for warm in (cache, guarded):
            get(warm.target, KEY, 10.0)  # the key is warm from here on (TTL 1 h)
        servers = {"cache": cache, "cache_guarded": guarded, "bare": bare}
        for number in range(rounds):
            order = ORDER if number % 2 == 0 else ORDER[::-1]
            for concurrency in concurrencies:
                for name in order:
                    server = servers[name]
                    result = _measure(
                        plan, server.target, server.pid, concurrency, warmup_s, duration_s
                    )
                    runs.setdefault((name, concurrency), []).append(result)
    rows = []
    for concurrency in concurrencies:
        cache_runs, bare_runs = runs[("cache", concurrency)], runs[("bare", concurrency)]
        guarded_runs = runs[("cache_guarded", concurrency)]
        cache_m, bare_m = _median_of(cache_runs), _median_of(bare_runs)
        guarded_m = _median_of(guarded_runs)
        paired = [ratio(c["rps"], b["rps"]) for c, b in zip(cache_runs, bare_runs, strict=True)]
        guarded_paired = [
            ratio(g["rps"], b["rps"]) for g, b in zip(guarded_runs, bare_runs, strict=True)
        ]
        rows.append(
            {
                "concurrency": concurrency,
                "cache": cache_m,
                "bare": bare_m,
                "ratio": ratio(cache_m["rps"], bare_m["rps"]),
                # What the ratio would be with a core to itself: bare CPU/request over cache's.
                "cpu_ratio": ratio(
                    bare_m["server_cpu_us_per_request"], cache_m["server_cpu_us_per_request"]
                ),
                "paired_ratios": paired,
                "ratio_min_max": _min_max(paired),
                "cache_guarded": guarded_m,
                "guarded_ratio": ratio(guarded_m["rps"], bare_m["rps"]),
                "guarded_cpu_ratio": ratio(
                    bare_m["server_cpu_us_per_request"], guarded_m["server_cpu_us_per_request"]
                ),
                "guarded_paired_ratios": guarded_paired,
                "guarded_ratio_min_max": _min_max(guarded_paired),
                "guarded_over_cache": ratio(guarded_m["rps"], cache_m["rps"]),
            }
        )
    return {
        "key": KEY,
        "rounds": rounds,
        "warmup_s": warmup_s,
        "duration_s": duration_s,
        "goal_ratio_at_64": GOAL_AT_64,
        "guards": GUARDS,
        "guards_spec": parse_guard_set(GUARDS).spec,
        "rows": rows,
        "ratios": {str(r["concurrency"]): r["ratio"] for r in rows},
        "guarded_ratios": {str(r["concurrency"]): r["guarded_ratio"] for r in rows},
    }
