"""Section `wire_proxy`: the cache's hit path through the wire-fault proxy against a direct
connection to the same cache, side by side.

One lab stack is started with the proxy in front of the cache (`chaos up --proxy cache`), the
cache and the proxy both pinned to the server cores: on a two-core machine they share one, so
the proxy's cost shows as the cache's lost throughput, which is what a user of `--proxy` pays.
The same closed-loop load generator drives `Get` on a warm key at each concurrency, directly
then through the proxy (order reversed every round), with no fault in force. Figures are medians
over rounds; `ratio` = req/s through the proxy / req/s direct (1.0: free).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.servers import get, load
from benchmarks.stats import median, ratio
from benchmarks.system import CpuPlan, pin
from chaos.lab.backends.local import LocalStack

KEY = "hot"
ORDER = ("direct", "proxied")


def run(
    plan: CpuPlan, concurrencies: Sequence[int], rounds: int, warmup_s: float, duration_s: float
) -> dict[str, Any]:
    stack = LocalStack(Path(tempfile.mkdtemp(prefix="herdlab-bench-wire-")))
    runs: dict[tuple[str, int], list[float]] = {}
    latency: dict[tuple[str, int], list[float]] = {}
    try:
        info = stack.up(["--latency", "5ms", "--spread", "0ms"], ["--ttl", "1h"], proxy=["cache"])
        for service in info.services.values():
            if service.pid is not None:
                pin(service.pid, plan.server)
        cache = info.services["cache"]
        assert cache.pid is not None
        targets = {"direct": cache.grpc, "proxied": info.proxy["cache"]}
        get(targets["proxied"], KEY, 10.0)  # warm (TTL 1 h), and the proxy passes a call
        for number in range(rounds):
            order = ORDER if number % 2 == 0 else ORDER[::-1]
            for concurrency in concurrencies:
                for name in order:
                    result = load(
                        plan,
                        [
                            "closed",
                            "--target",
                            targets[name],
                            "--concurrency",
                            str(concurrency),
                            "--key",
                            KEY,
                            "--warmup",
                            str(warmup_s),
                            "--duration",
                            str(duration_s),
                            "--server-pid",
                            str(cache.pid),
                        ],
                        timeout_s=warmup_s + duration_s + 60.0,
                    )
                    runs.setdefault((name, concurrency), []).append(result["rps"])
                    latency.setdefault((name, concurrency), []).append(result["latency_ms"]["p50"])
    finally:
        stack.down()
    rows = []
    for concurrency in concurrencies:
        direct, proxied = runs[("direct", concurrency)], runs[("proxied", concurrency)]
        rows.append(
            {
                "concurrency": concurrency,
                "direct_rps": round(median(direct), 1),
                "proxied_rps": round(median(proxied), 1),
                "ratio": ratio(median(proxied), median(direct)),
                "paired_ratios": [ratio(p, d) for p, d in zip(proxied, direct, strict=True)],
                "direct_p50_ms": round(median(latency[("direct", concurrency)]), 3),
                "proxied_p50_ms": round(median(latency[("proxied", concurrency)]), 3),
            }
        )
    return {
        "key": KEY,
        "rounds": rounds,
        "warmup_s": warmup_s,
        "duration_s": duration_s,
        "rows": rows,
    }
