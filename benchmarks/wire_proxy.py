"""Section `wire_proxy`: the cache's hit path through the wire-fault proxy against a direct
connection to the same cache, side by side.

One lab stack is started with the proxy in front of the cache (`chaos up --proxy cache`), the
cache and the proxy both pinned to the server cores: on a two-core machine they share one, so
the proxy's cost shows as the cache's lost throughput, which is what a user of `--proxy` pays.
The same closed-loop load generator drives `Get` on a warm key at each concurrency, directly
then through the proxy and two bare relays (order rotated every round), with no fault in force.
Figures are medians over rounds; `ratio` = req/s through the proxy / req/s direct (1.0: free),
and the median of the rounds' own ratios (each pairs two runs of one round) with its
distribution-free 95% interval. CPU per request (the cache's, directly and proxied, and the
proxy's, over the same window) gives `cpu_ratio`, the throughput ratio the two would show with a
saturated core to themselves: the reading that the machine's other jobs move least.

The floor beside it: two bare relays (`benchmarks.bare_relay`) in front of the same cache, on the
same core, in the same rounds: `copy` relays each chunk from the event loop's read callback (the
proxy's own path with no fault in force, without its records), `splice` has the kernel move the
bytes (`os.splice`). What a relay hop costs that no Python relay avoids is what they pay; the
proxy's distance from them is what its records and fault switch cost.

`render` writes the section's part of BENCHMARKS.md from its results (under its `TITLE`),
`summary_rows` its rows of the report's summary; `benchmarks.report` assembles them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from benchmarks import markdown as md
from benchmarks.servers import bare_relay, get, load
from benchmarks.stats import median, median_interval, ratio
from benchmarks.system import CpuPlan, pin
from chaos.lab.backends.local import LocalStack

# The section's title in BENCHMARKS.md.
TITLE = "Wire-fault proxy overhead"

KEY = "hot"
RELAYS = ("copy", "splice")  # the bare relay's modes, each an arm beside the proxy
ORDER = ("direct", "proxied", *(f"relay_{mode}" for mode in RELAYS))


def run(
    plan: CpuPlan, concurrencies: Sequence[int], rounds: int, warmup_s: float, duration_s: float
) -> dict[str, Any]:
    stack = LocalStack(Path(tempfile.mkdtemp(prefix="herdlab-bench-wire-")))
    runs: dict[tuple[str, int], list[float]] = {}
    latency: dict[tuple[str, int], list[float]] = {}
    cache_us: dict[tuple[str, int], list[float]] = {}
    proxy_us: dict[tuple[str, int], list[float]] = {}  # the proxy's or the relay's own CPU
    relays = ExitStack()
    try:
        info = stack.up(["--latency", "5ms", "--spread", "0ms"], ["--ttl", "1h"], proxy=["cache"])
        for service in info.services.values():
            if service.pid is not None:
                pin(service.pid, plan.server)
        cache, wire = info.services["cache"], info.services["wire"]
        assert cache.pid is not None and wire.pid is not None
        targets = {"direct": cache.grpc, "proxied": info.proxy["cache"]}
        pids = {"direct": wire.pid, "proxied": wire.pid}
        for mode in RELAYS:
            relay = relays.enter_context(bare_relay(plan, cache.grpc, mode))
            targets[f"relay_{mode}"], pids[f"relay_{mode}"] = relay.target, relay.pid
        get(targets["proxied"], KEY, 10.0)  # warm (TTL 1 h), and the proxy passes a call
        for number in range(rounds):
            # Each arm in every position in turn, so no arm always follows the same one.
            shift = number % len(ORDER)
            order = ORDER[shift:] + ORDER[:shift]
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
                            "--proxy-pid",
                            str(pids[name]),
                        ],
                        timeout_s=warmup_s + duration_s + 60.0,
                    )
                    runs.setdefault((name, concurrency), []).append(result["rps"])
                    latency.setdefault((name, concurrency), []).append(result["latency_ms"]["p50"])
                    rps = max(result["rps"], 1e-9)
                    cache_us.setdefault((name, concurrency), []).append(
                        result.get("server_cpu", 0.0) / rps * 1e6
                    )
                    if name != "direct":
                        proxy_us.setdefault((name, concurrency), []).append(
                            result.get("proxy_cpu", 0.0) / rps * 1e6
                        )
    finally:
        relays.close()
        stack.down()
    rows = []
    for concurrency in concurrencies:
        direct, proxied = runs[("direct", concurrency)], runs[("proxied", concurrency)]
        paired = [ratio(p, d) for p, d in zip(proxied, direct, strict=True)]
        known = [x for x in paired if x is not None]
        direct_us = median(cache_us[("direct", concurrency)])
        proxied_us = median(cache_us[("proxied", concurrency)])
        wire_us = median(proxy_us[("proxied", concurrency)])
        rows.append(
            {
                "concurrency": concurrency,
                "direct_rps": round(median(direct), 1),
                "proxied_rps": round(median(proxied), 1),
                "ratio": ratio(median(proxied), median(direct)),
                "paired_ratios": paired,
                "median_paired_ratio": round(median(known), 3),
                "paired_ratio_interval": median_interval(known),
                "direct_p50_ms": round(median(latency[("direct", concurrency)]), 3),
                "proxied_p50_ms": round(median(latency[("proxied", concurrency)]), 3),
                "added_p50_ms": round(
                    median(
                        [
                            p - d
                            for p, d in zip(
                                latency[("proxied", concurrency)],
                                latency[("direct", concurrency)],
                                strict=True,
                            )
                        ]
                    ),
                    3,
                ),
                "cache_us_per_request": [round(direct_us, 1), round(proxied_us, 1)],
                "proxy_us_per_request": round(wire_us, 1),
                "cpu_ratio": ratio(direct_us, proxied_us + wire_us),
                "relays": {
                    mode: _relay_row(
                        runs, latency, cache_us, proxy_us, f"relay_{mode}", concurrency
                    )
                    for mode in RELAYS
                },
            }
        )
    return {
        "key": KEY,
        "rounds": rounds,
        "warmup_s": warmup_s,
        "duration_s": duration_s,
        "rows": rows,
    }


def _relay_row(
    runs: dict[tuple[str, int], list[float]],
    latency: dict[tuple[str, int], list[float]],
    cache_us: dict[tuple[str, int], list[float]],
    relay_us: dict[tuple[str, int], list[float]],
    name: str,
    concurrency: int,
) -> dict[str, Any]:
    """One relay's figures at one concurrency, against the same rounds' direct runs."""
    direct, relayed = runs[("direct", concurrency)], runs[(name, concurrency)]
    paired = [x for p, d in zip(relayed, direct, strict=True) if (x := ratio(p, d)) is not None]
    added = [
        p - d
        for p, d in zip(latency[(name, concurrency)], latency[("direct", concurrency)], strict=True)
    ]
    own_us, served_us = median(relay_us[(name, concurrency)]), median(cache_us[(name, concurrency)])
    return {
        "rps": round(median(relayed), 1),
        "ratio": ratio(median(relayed), median(direct)),
        "median_paired_ratio": round(median(paired), 3),
        "paired_ratio_interval": median_interval(paired),
        "added_p50_ms": round(median(added), 3),
        "cache_us_per_request": round(served_us, 1),
        "relay_us_per_request": round(own_us, 1),
        "cpu_ratio": ratio(median(cache_us[("direct", concurrency)]), served_us + own_us),
    }


def render(w: dict[str, Any]) -> list[str]:
    rows = [
        [
            f"{row['concurrency']}",
            f"{row['direct_rps']:,.0f}",
            f"{row['proxied_rps']:,.0f}",
            f"**{row['ratio']}**",
            _paired(row),
            ", ".join(f"{x}" for x in row["paired_ratios"]),
            f"{row['direct_p50_ms']:.2f} / {row['proxied_p50_ms']:.2f}",
            f"{row['added_p50_ms']:+.3f}" if "added_p50_ms" in row else "-",
            _cpu(row),
            f"{row['cpu_ratio']}" if "cpu_ratio" in row else "-",
        ]
        for row in w["rows"]
    ]
    return [
        "`Get` on a warm key (TTL 1 h) of one cache, directly and through the wire-fault proxy "
        "in front of it (`chaos up --proxy cache`, no fault in force), by the same closed-loop "
        f"load generator, in {w['rounds']} round(s) of {w['duration_s']:g} s windows after "
        f"{w['warmup_s']:g} s of warm-up, the order "
        f"{'rotated' if _has_relays(w) else 'reversed'} every round. The cache and the "
        "proxy share the server core, so the ratio (proxied / direct req/s, medians) is what "
        "a run behind the proxy loses on this machine: the proxy's CPU per request comes out "
        "of the cache's core. The median of the rounds' own ratios (each pairing two runs "
        "close in time) comes with its distribution-free 95% interval; the added p50 is the "
        "median over rounds of proxied minus direct p50. CPU per request is the cache's "
        "(direct / proxied) and the proxy's over the same windows; `cpu ratio` = direct cache "
        "CPU per request / (proxied cache + proxy CPU per request), the throughput ratio the two "
        "would show with a saturated core to themselves (c=64; at c=1 latency bounds "
        "throughput), which the machine's other jobs move least.",
        "",
        *md.table(
            [
                "concurrency",
                "direct req/s",
                "proxied req/s",
                "ratio",
                "median of rounds' ratios (95% interval)",
                "ratio per round",
                "p50 ms direct / proxied",
                "added p50 ms",
                "CPU us per request: cache direct / proxied, proxy",
                "cpu ratio",
            ],
            rows,
        ),
        *_wire_noise(w),
        *_floor(w),
    ]


def _has_relays(w: dict[str, Any]) -> bool:
    return any("relays" in row for row in w["rows"])


def _floor(w: dict[str, Any]) -> list[str]:
    """The bare relays' table: what one relay hop costs on this core with no records at all."""
    rows = [
        [
            f"{row['concurrency']}",
            name,
            f"{fig['rps']:,.0f}",
            f"**{fig['ratio']}**",
            _paired(fig),
            f"{fig['added_p50_ms']:+.3f}",
            f"{fig['cache_us_per_request']:.0f}, {fig['relay_us_per_request']:.0f}",
            f"{fig['cpu_ratio']}",
        ]
        for row in w["rows"]
        if "relays" in row
        for name, fig in [
            ("wire-fault proxy", _proxy_figures(row)),
            *((f"bare relay, {mode}", f) for mode, f in row["relays"].items()),
        ]
    ]
    if not rows:
        return []
    return [
        "The floor, in the same rounds: bare relays (`benchmarks/bare_relay.py`) in front of "
        "the same cache on the same core, `copy` (each chunk written from the event loop's read "
        "callback, the proxy's path with no fault in force, without its records) and `splice` "
        "(the kernel moves the bytes between the sockets through a pipe). Ratios against the "
        "same rounds' direct runs; CPU per request is the cache's and the relay's own.",
        "",
        *md.table(
            [
                "concurrency",
                "in front of the cache",
                "req/s",
                "ratio",
                "median of rounds' ratios (95% interval)",
                "added p50 ms",
                "CPU us per request: cache, relay",
                "cpu ratio",
            ],
            rows,
        ),
    ]


def _proxy_figures(row: dict[str, Any]) -> dict[str, Any]:
    """The proxy's figures of `row` under the relays' names, for one table."""
    return {
        "rps": row["proxied_rps"],
        "ratio": row["ratio"],
        "median_paired_ratio": row["median_paired_ratio"],
        "paired_ratio_interval": row["paired_ratio_interval"],
        "added_p50_ms": row["added_p50_ms"],
        "cache_us_per_request": row["cache_us_per_request"][1],
        "relay_us_per_request": row["proxy_us_per_request"],
        "cpu_ratio": row["cpu_ratio"],
    }


def _paired(row: dict[str, Any]) -> str:
    if "median_paired_ratio" not in row:
        return "-"
    interval = row["paired_ratio_interval"]
    span = f" ({interval[0]}-{interval[1]})" if interval else " (too few rounds)"
    return f"{row['median_paired_ratio']}{span}"


def _cpu(row: dict[str, Any]) -> str:
    if "cache_us_per_request" not in row:
        return "-"
    direct, proxied = row["cache_us_per_request"]
    return f"{direct:.0f} / {proxied:.0f}, {row['proxy_us_per_request']:.0f}"


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
            f"ratio {row['ratio']}; rounds' median {_paired(row)}; cpu ratio "
            f"{row.get('cpu_ratio', '-')}; p50 {row.get('added_p50_ms', 0):+.3f} ms",
        ]
        for row in w["rows"]
    ]
