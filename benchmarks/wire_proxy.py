"""Section `wire_proxy`: the cache's hit path through the wire-fault proxy against a direct
connection to the same cache, side by side.

One lab stack is started with the proxy in front of the cache (`chaos up --proxy cache`), the
cache and the proxy both pinned to the server cores: on a two-core machine they share one, so
the proxy's cost shows as the cache's lost throughput, which is what a user of `--proxy` pays.
The same closed-loop load generator drives `Get` on a warm key at each concurrency, directly
then through the proxy (order reversed every round), with no fault in force. Figures are medians
over rounds; `ratio` = req/s through the proxy / req/s direct (1.0: free).

`render` writes the section's part of BENCHMARKS.md from its results (under its `TITLE`),
`summary_rows` its rows of the report's summary; `benchmarks.report` assembles them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import markdown as md
from benchmarks.servers import get, load
from benchmarks.stats import median, ratio
from benchmarks.system import CpuPlan, pin
from chaos.lab.backends.local import LocalStack

# The section's title in BENCHMARKS.md.
TITLE = "Wire-fault proxy overhead"

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


def render(w: dict[str, Any]) -> list[str]:
    rows = [
        [
            f"{row['concurrency']}",
            f"{row['direct_rps']:,.0f}",
            f"{row['proxied_rps']:,.0f}",
            f"**{row['ratio']}**",
            ", ".join(f"{x}" for x in row["paired_ratios"]),
            f"{row['direct_p50_ms']:.2f} / {row['proxied_p50_ms']:.2f}",
        ]
        for row in w["rows"]
    ]
    return [
        "`Get` on a warm key (TTL 1 h) of one cache, directly and through the wire-fault proxy "
        "in front of it (`chaos up --proxy cache`, no fault in force), by the same closed-loop "
        f"load generator, in {w['rounds']} round(s) of {w['duration_s']:g} s windows after "
        f"{w['warmup_s']:g} s of warm-up, the order reversed every round. The cache and the "
        "proxy share the server core, so the ratio (proxied / direct req/s, medians) is what "
        "a run behind the proxy loses on this machine: the proxy's CPU per request comes out "
        "of the cache's core.",
        "",
        *md.table(
            [
                "concurrency",
                "direct req/s",
                "proxied req/s",
                "ratio",
                "ratio per round",
                "p50 ms direct / proxied",
            ],
            rows,
        ),
        *_wire_noise(w),
    ]


def _wire_noise(w: dict[str, Any]) -> list[str]:
    """A reading of the per-round ratios: when they fall on both sides of 1.0 the run cannot
    tell the proxy's cost from the machine's noise, and says so."""
    mixed = [
        row
        for row in w["rows"]
        if any(x is not None and x < 1 for x in row["paired_ratios"])
        and any(x is not None and x > 1 for x in row["paired_ratios"])
    ]
    if not mixed:
        return []
    spans = "; ".join(
        f"c={row['concurrency']}: {min(x for x in row['paired_ratios'] if x is not None)}-"
        f"{max(x for x in row['paired_ratios'] if x is not None)}"
        for row in mixed
    )
    return [
        f"The rounds disagree ({spans}): in this run the machine's noise was larger than the "
        "proxy's cost, so the median ratio is not a measurement of it; re-run on a quiet "
        "machine (see the load average above).",
        "",
    ]


def summary_rows(w: dict[str, Any]) -> list[list[str]]:
    """The summary's rows for this section: figure, limit, distance."""
    return [
        [
            f"c={row['concurrency']}: {row['proxied_rps']:,.0f} req/s through the proxy",
            f"direct {row['direct_rps']:,.0f} req/s",
            f"ratio {row['ratio']}",
        ]
        for row in w["rows"]
    ]
