"""Section `hit_path`: the cache's `Get` on a warm key against the bare server, side by side.

Four servers are up at once on the server cores: the cache, the cache with the recommended guards
on its calls to the DB (`--guard recommended`, its own DB), the bare server, and its twin (the same
bare server again: the twin's ratio to the bare one is the harness's noise floor). The same load
generator (closed loop, on the client cores) drives each in turn at each concurrency, in rounds
whose order reverses (cache, guarded cache, bare, twin; then the reverse), so drifting load on the
machine hits them alike on average. Figures are medians over rounds; `ratio` = cache req/s / bare
req/s (the bare server is the limit: 1.0) and `guarded_ratio` the same for the guarded cache;
`ratio_paired` is the median of the rounds' own ratios (each round's cache and bare runs are
adjacent in time) and `ratio_paired_interval` where that median lies with 95% confidence. A hit
never calls the DB, so the guards should cost nothing here:
`guarded_over_cache` (guarded / plain cache req/s) shows it. `cpu_ratio` = bare / cache server CPU
time per request: on a machine shared with other jobs a server may not get its whole core, and CPU
per request is what throughput would follow then.

Every server of the lab's default event loop is measured so; the same cache and bare server on
each other loop (`herdlab.loop`) are up too and take their turn in every round, so `by_loop`
compares the loops side by side: the cache's and the bare server's req/s on each, and the
ratio to bare on each (both servers always on the same loop; the load generator on the
default one throughout).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.servers import bare_server, get, lab_stack, load
from benchmarks.stats import median, median_interval, ratio
from benchmarks.system import CpuPlan
from herdlab import loop
from herdlab.guards import parse_guard_set

KEY = "hot"
# The ratio to bare the cache must reach at concurrency 64 and 512 (median of the rounds).
GOAL = 0.9
GOAL_CONCURRENCIES = (64, 512)
# The guarded cache's `--guard`: herdlab.guards.RECOMMENDED, by the name users give it.
GUARDS = "recommended"
# One round's order; odd rounds run it reversed. `bare_twin` is a second bare server, the same
# code as `bare`: its ratio to `bare` is the noise floor, what the harness reads between two
# identical servers.
ORDER = ("cache", "cache_guarded", "bare", "bare_twin")


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


def _paired_median(ratios: list[float | None]) -> float | None:
    """The median of the per-round ratios that exist (each round's two runs are adjacent in
    time, so a drift of the machine's load cancels within a pair); None when none does."""
    known = [x for x in ratios if x is not None]
    return round(median(known), 3) if known else None


def _paired_interval(ratios: list[float | None]) -> list[float] | None:
    """Where the median of the per-round ratios lies with 95% confidence (`median_interval`);
    None with fewer than 6 rounds."""
    return median_interval([x for x in ratios if x is not None])


def _per_round(runs: list[dict[str, Any]], bare_runs: list[dict[str, Any]]) -> list[float | None]:
    """Each round's req/s ratio of `runs` to the bare server's run of the same round."""
    return [ratio(r["rps"], b["rps"]) for r, b in zip(runs, bare_runs, strict=True)]


def _so_far(runs: dict[tuple[str, int], list[dict[str, Any]]], concurrencies: Sequence[int]) -> str:
    """The median of the rounds' ratios (cache / bare) so far at each concurrency."""
    return "ratio so far " + ", ".join(
        f"c={c} {_paired_median(_per_round(runs[('cache', c)], runs[('bare', c)]))}"
        for c in concurrencies
    )


def _row(
    concurrency: int, cache_runs: list[dict[str, Any]], bare_runs: list[dict[str, Any]]
) -> dict[str, Any]:
    cache_m, bare_m = _median_of(cache_runs), _median_of(bare_runs)
    paired = _per_round(cache_runs, bare_runs)
    return {
        "concurrency": concurrency,
        "cache": cache_m,
        "bare": bare_m,
        "ratio": ratio(cache_m["rps"], bare_m["rps"]),
        "ratio_paired": _paired_median(paired),
        "ratio_paired_interval": _paired_interval(paired),
        # What the ratio would be with a core to itself: bare CPU/request over cache's.
        "cpu_ratio": ratio(
            bare_m["server_cpu_us_per_request"], cache_m["server_cpu_us_per_request"]
        ),
        "paired_ratios": paired,
        "ratio_min_max": _min_max(paired),
    }


def _twin(twin_runs: list[dict[str, Any]], bare_runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The noise floor: the twin bare server over the bare server, read as the cache is."""
    paired = _per_round(twin_runs, bare_runs)
    return {
        "ratio": ratio(
            median([r["rps"] for r in twin_runs]), median([r["rps"] for r in bare_runs])
        ),
        "ratio_paired": _paired_median(paired),
        "ratio_paired_interval": _paired_interval(paired),
        "paired_ratios": paired,
        "ratio_min_max": _min_max(paired),
    }


def run(
    plan: CpuPlan,
    concurrencies: Sequence[int],
    rounds: int,
    warmup_s: float,
    duration_s: float,
    loops: Sequence[str] = loop.NAMES,
    emit: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Measures the servers in `rounds` interleaved rounds; `emit` gets a progress line after
    each round with the median of the rounds' ratios so far at every concurrency."""
    default = loop.chosen()
    others = [name for name in loops if name != default]
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    db_args = ["--latency", "5ms", "--spread", "0ms"]
    with contextlib.ExitStack() as up:
        _, _, cache = up.enter_context(lab_stack(plan, db_args, ["--ttl", "1h"]))
        _, _, guarded = up.enter_context(
            lab_stack(plan, db_args, ["--ttl", "1h", "--guard", GUARDS])
        )
        servers = {
            "cache": cache,
            "cache_guarded": guarded,
            "bare": up.enter_context(bare_server(plan)),
            "bare_twin": up.enter_context(bare_server(plan)),
        }
        for name in others:
            _, _, servers[f"cache@{name}"] = up.enter_context(
                lab_stack(plan, db_args, ["--ttl", "1h"], name)
            )
            servers[f"bare@{name}"] = up.enter_context(bare_server(plan, loop_name=name))
        order = [*ORDER, *(f"{kind}@{name}" for name in others for kind in ("cache", "bare"))]
        for name, server in servers.items():
            if name.startswith("cache"):
                get(server.target, KEY, 10.0)  # the key is warm from here on (TTL 1 h)
        for number in range(rounds):
            for concurrency in concurrencies:
                for name in order if number % 2 == 0 else order[::-1]:
                    server = servers[name]
                    result = _measure(
                        plan, server.target, server.pid, concurrency, warmup_s, duration_s
                    )
                    runs.setdefault((name, concurrency), []).append(result)
            emit(f"hit_path: round {number + 1}/{rounds}, {_so_far(runs, concurrencies)}")
    rows = []
    by_loop: dict[str, list[dict[str, Any]]] = {default: [], **{name: [] for name in others}}
    for concurrency in concurrencies:
        row = _row(concurrency, runs[("cache", concurrency)], runs[("bare", concurrency)])
        by_loop[default].append(row)
        for name in others:
            by_loop[name].append(
                _row(
                    concurrency,
                    runs[(f"cache@{name}", concurrency)],
                    runs[(f"bare@{name}", concurrency)],
                )
            )
        bare_runs, guarded_runs = runs[("bare", concurrency)], runs[("cache_guarded", concurrency)]
        guarded_m, bare_m = _median_of(guarded_runs), row["bare"]
        guarded_paired = _per_round(guarded_runs, bare_runs)
        rows.append(
            {
                **row,
                "cache_guarded": guarded_m,
                "guarded_ratio": ratio(guarded_m["rps"], bare_m["rps"]),
                "guarded_cpu_ratio": ratio(
                    bare_m["server_cpu_us_per_request"], guarded_m["server_cpu_us_per_request"]
                ),
                "guarded_paired_ratios": guarded_paired,
                "guarded_ratio_min_max": _min_max(guarded_paired),
                "guarded_over_cache": ratio(guarded_m["rps"], row["cache"]["rps"]),
                "twin": _twin(runs[("bare_twin", concurrency)], bare_runs),
            }
        )
    return {
        "key": KEY,
        "rounds": rounds,
        "warmup_s": warmup_s,
        "duration_s": duration_s,
        "loop": default,
        "goal_ratio": GOAL,
        "goal_ratio_at_64": GOAL,
        "goal_concurrencies": list(GOAL_CONCURRENCIES),
        "guards": GUARDS,
        "guards_spec": parse_guard_set(GUARDS).spec,
        "rows": rows,
        "ratios": {str(r["concurrency"]): r["ratio"] for r in rows},
        "guarded_ratios": {str(r["concurrency"]): r["guarded_ratio"] for r in rows},
        "by_loop": by_loop,
    }
