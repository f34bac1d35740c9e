"""Section `hit_path`: the cache's `Get` on a warm key against the bare server, side by side.

Both servers are up at once on the server cores; the same load generator (closed loop, on the
client cores) drives one, then the other, at each concurrency, in rounds whose order alternates
(cache first, then bare first), so drifting load on the machine hits both alike. Figures are
medians over rounds; `ratio` = cache req/s / bare req/s (the bare server is the limit: 1.0).
`cpu_ratio` = bare / cache server CPU time per request: on a machine shared with other jobs a
server may not get its whole core, and CPU per request is what throughput would follow then.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from benchmarks.servers import bare_server, get, lab_stack, load
from benchmarks.stats import median, ratio
from benchmarks.system import CpuPlan

KEY = "hot"
GOAL_AT_64 = 0.9


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


def run(
    plan: CpuPlan,
    concurrencies: Sequence[int],
    rounds: int,
    warmup_s: float,
    duration_s: float,
) -> dict[str, Any]:
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    with (
        lab_stack(plan, ["--latency", "5ms", "--spread", "0ms"], ["--ttl", "1h"]) as (
            _,
            _db,
            cache,
        ),
        bare_server(plan) as bare,
    ):
        get(cache.target, KEY, 10.0)  # the key is warm from here on (TTL 1 h)
        servers = {"cache": cache, "bare": bare}
        for number in range(rounds):
            order = ("cache", "bare") if number % 2 == 0 else ("bare", "cache")
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
        cache_m, bare_m = _median_of(cache_runs), _median_of(bare_runs)
        paired = [ratio(c["rps"], b["rps"]) for c, b in zip(cache_runs, bare_runs, strict=True)]
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
            }
        )
    return {
        "key": KEY,
        "rounds": rounds,
        "warmup_s": warmup_s,
        "duration_s": duration_s,
        "goal_ratio_at_64": GOAL_AT_64,
        "rows": rows,
        "ratios": {str(r["concurrency"]): r["ratio"] for r in rows},
    }
