"""Section `herd_scale`: the largest herd this machine releases within one second of its barrier.

The herd (`benchmarks.herd_probe`, which runs `chaos.engine.herd.run_herd` like `chaos herd`) runs
in its own process on the client cores against the cache on the server cores, all users on one warm
key. N doubles from `start` until the release spread passes the limit (or N reaches `max_users`),
then a bounded bisection narrows the boundary. The spread of one herd varies by up to 2x from run
to run on a loaded machine, so each N is run `repeats` times and judged by its median. Each run
also gives the herd process's RSS per user: its peak RSS growth over N.

The same run then puts one process beside the herd on 2 and 4 Locust workers (`chaos herd
--workers W`, the probe's `--workers`): a ladder of sizes, each size run by one process, then 2
workers, then 4, one run each, so that the load of this shared machine falls on all of them alike;
an engine leaves the ladder after its first size over the limit. Here every engine gets every core
(a core per worker is the point of workers), the cache still pinned to its own. Each herd reports
its herd processes' CPU seconds from the release to the last answer: over the users, the CPU time
per released user. From the largest burst one process releases within the limit (the search
above), the section states on paper how many workers a 1,000,000-user burst needs.

`render` writes the section's part of BENCHMARKS.md from its results (under its `TITLE`),
`summary_rows` its rows of the report's summary; `benchmarks.report` assembles them.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable
from typing import Any

from benchmarks import markdown as md
from benchmarks.servers import get, lab_stack
from benchmarks.stats import median
from benchmarks.system import CpuPlan, run_json

# The section's title in BENCHMARKS.md.
TITLE = "Scale of the herd"

LIMIT_S = 1.0
MILLION = 1_000_000
KEY_PREFIX = "hot"
KEY = f"{KEY_PREFIX}0"  # the herd's only key: prefix + index 0


def _probe(
    plan: CpuPlan, target: str, users: int, workers: int = 0, every_core: bool = False
) -> dict[str, Any]:
    argv = [sys.executable, "-m", "benchmarks.herd_probe", "--target", target]
    argv += ["--users", str(users), "--key", KEY_PREFIX]
    if workers:
        argv += ["--workers", str(workers)]
    cpus = plan.client | plan.server if every_core else plan.client
    line, _ = run_json(argv, cpus, timeout_s=300.0)
    result: dict[str, Any] = json.loads(line)
    return result


def _size_row(users: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    row = {
        "users": users,
        "release_spread_s": round(median([float(r["release_spread_s"]) for r in runs]), 4),
        "spreads_s": [r["release_spread_s"] for r in runs],
        "rss_per_user_bytes": round(median([r["rss_per_user_bytes"] for r in runs])),
        "herd_seconds": round(median([r["seconds"] for r in runs]), 3),
        "errors": sum(sum(r["errors"].values()) for r in runs),
        "lost": sum(r["lost"] for r in runs),
        "cpu_per_user_us": round(median([r["cpu_s"] / users * 1e6 for r in runs]), 1),
        "load_1m": round(os.getloadavg()[0], 2),
    }
    if "unreported" in runs[0]:
        row["unreported"] = sum(r["unreported"] for r in runs)
        row["worker_spreads_s"] = [r["worker_spreads_s"] for r in runs]
    return row


def _search(
    within: Callable[[int], bool], start: int, max_users: int, bisect_steps: int
) -> tuple[int, int]:
    """Doubles from `start` (the last step capped at `max_users`) until `within` fails, then
    bisects; returns (largest within, first over; 0 for none)."""
    good, bad = 0, 0
    users = start
    while True:
        if not within(users):
            bad = users
            break
        good = users
        if users >= max_users:
            break
        users = min(users * 2, max_users)
    if good and bad:
        for _ in range(bisect_steps):
            middle = (good + bad) // 2
            if middle in (good, bad):
                break
            if within(middle):
                good = middle
            else:
                bad = middle
    return good, bad


def _largest(sizes: list[dict[str, Any]]) -> dict[str, Any] | None:
    return max(
        (p for p in sizes if p["release_spread_s"] <= LIMIT_S),
        key=lambda p: p["users"],
        default=None,
    )


def _million(one: dict[str, Any] | None) -> dict[str, Any] | None:
    """On paper: workers, each on a core of its own releasing what one process released within
    the limit here, for a 1,000,000-user burst; and the CPU the whole burst takes."""
    if one is None:
        return None
    return {
        "users": MILLION,
        "per_process_within_limit": one["users"],
        "us_per_user": round(one["release_spread_s"] / one["users"] * 1e6, 1),
        "cpu_per_user_us": one["cpu_per_user_us"],
        "workers_needed": math.ceil(MILLION / one["users"]),
        "cpu_seconds_of_the_burst": round(MILLION * one["cpu_per_user_us"] / 1e6, 1),
        "rss_bytes_of_the_burst": MILLION * one["rss_per_user_bytes"],
    }


def run(
    plan: CpuPlan,
    start: int,
    max_users: int,
    bisect_steps: int,
    repeats: int,
    workers: tuple[int, ...] = (),
    ladder: tuple[int, ...] = (),
) -> dict[str, Any]:
    if start < 1 or repeats < 1 or not all(0 < users <= 100_000 for users in ladder):
        raise ValueError("start and repeats must be >= 1, the ladder's sizes in 1..100000")
    sizes: list[dict[str, Any]] = []
    side_by_side: list[dict[str, Any]] = []
    load_before = round(os.getloadavg()[0], 2)
    with lab_stack(plan, ["--latency", "5ms", "--spread", "0ms"], ["--ttl", "1h"]) as (
        _,
        _db,
        cache,
    ):
        get(cache.target, KEY, 10.0)

        def within(users: int) -> bool:
            row = _size_row(users, [_probe(plan, cache.target, users) for _ in range(repeats)])
            sizes.append(row)
            return bool(row["release_spread_s"] <= LIMIT_S)

        _, bad = _search(within, start, max_users, bisect_steps)
        # Side by side: each size run by one process and by each worker count in turn, so the
        # machine's load falls on all alike; an engine stops after its first size over the limit.
        engines = [0, *workers] if workers else []
        ladders: dict[int, list[dict[str, Any]]] = {count: [] for count in engines}
        over: dict[int, int] = {}
        for users in ladder:
            for count in engines:
                if count in over:
                    continue
                runs = [_probe(plan, cache.target, users, count, every_core=True)]
                row = _size_row(users, runs)
                ladders[count].append(row)
                if row["release_spread_s"] > LIMIT_S:
                    over[count] = users
        for count in engines:
            best = _largest(ladders[count])
            side_by_side.append(
                {
                    "engine": f"{count} workers" if count else "one process",
                    "workers": count or None,
                    "max_users_within_limit": best["users"] if best else None,
                    "first_over_limit": over.get(count),
                    "searched_up_to": max(ladder),
                    "rss_per_user_bytes": best["rss_per_user_bytes"] if best else None,
                    "cpu_per_user_us": best["cpu_per_user_us"] if best else None,
                    "sizes": ladders[count],
                }
            )
    largest = _largest(sizes)
    return {
        "limit_s": LIMIT_S,
        "max_users_within_limit": largest["users"] if largest else None,
        "first_over_limit": bad or None,
        "searched_up_to": max_users,
        "rss_per_user_bytes": largest["rss_per_user_bytes"] if largest else None,
        "repeats": repeats,
        "sizes": sorted(sizes, key=lambda p: int(p["users"])),
        "cpu_per_user_us": largest["cpu_per_user_us"] if largest else None,
        "side_by_side": side_by_side,
        "million": _million(largest),
        "load_1m_before": load_before,
        "load_1m_after": round(os.getloadavg()[0], 2),
    }


def render(s: dict[str, Any]) -> list[str]:
    rows = [
        [
            f"{x['users']:,}",
            f"{x['release_spread_s']:.3f}",
            ", ".join(f"{v:.3f}" for v in x["spreads_s"]),
            f"{x['release_spread_s'] / x['users'] * 1e6:.1f}",
            md.kib(x["rss_per_user_bytes"]),
            f"{x['herd_seconds']:.1f}",
            f"{x['errors']}",
            f"{x['lost']}",
            _cpu(x.get("cpu_per_user_us")),
            _load(x.get("load_1m")),
        ]
        for x in s["sizes"]
    ]
    largest = s["max_users_within_limit"]
    bound = (
        f"the first size over it was {s['first_over_limit']:,}"
        if s["first_over_limit"]
        else f"no size up to {s['searched_up_to']:,} went over it, so this is a lower bound"
    )
    return [
        "`chaos herd`'s engine (`chaos.engine.herd.run_herd`) in its own process on the client "
        "core, "
        "all users on one warm key of the cache (on the server core). Release spread = from "
        "the barrier's opening to the last user's first send; each size is run "
        f"{s['repeats']} time(s) and judged by the median.",
        "",
        *md.table(
            [
                "users",
                "release spread (median, s)",
                "runs (s)",
                "us per user",
                "herd RSS per user",
                "herd seconds",
                "errors",
                "lost",
                "herd CPU per user",
                "load (1 min)",
            ],
            rows,
        ),
        f"Largest N released within {s['limit_s']:g} s: **{largest or 0:,}** ({bound}); the "
        f"herd process's RSS per user there: **{md.kib(s['rss_per_user_bytes'])}**.",
        "",
        "The limit is the one event loop that wakes every user: the spread grows with N at the "
        "per-user cost in the 'us per user' column (a user's wake-up, its retry policy's "
        "setup and the start of its gRPC call). Past the boundary, more users need more "
        "processes: two herd processes each releasing N/2 behind a shared start time would "
        "double N at the same spread, on a machine with a core to spare for each.",
        "",
        *_render_workers(s),
    ]


def _cpu(us: float | None) -> str:
    return "n/a" if us is None else f"{us:.0f} us"


def _load(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _at_same_size(engines: list[dict[str, Any]], base: dict[str, Any] | None) -> str:
    """The workers' release spread over one process's, at one process's largest size within the
    limit (the ladder's steps are coarser than the differences)."""
    if base is None or not base["max_users_within_limit"]:
        return ""
    users = base["max_users_within_limit"]

    def spread(e: dict[str, Any]) -> float | None:
        return next((x["release_spread_s"] for x in e["sizes"] if x["users"] == users), None)

    one = spread(base)
    ratios = [
        f"{e['engine']} {value / one:.2f}x"
        for e in engines
        if e is not base and one and (value := spread(e)) is not None
    ]
    if not ratios:
        return ""
    return f" At {users:,} users the release spread over one process's: {', '.join(ratios)}."


def _render_workers(s: dict[str, Any]) -> list[str]:
    """One process and the herd on Locust workers, side by side in the same run, and the paper
    estimate for a 1,000,000-user burst."""
    if not s.get("side_by_side"):
        return []
    rows = []
    for e in s["side_by_side"]:
        for x in e["sizes"]:
            spreads = x.get("worker_spreads_s", [[]])[0]
            rows.append(
                [
                    e["engine"],
                    f"{x['users']:,}",
                    f"{x['release_spread_s']:.3f}",
                    ", ".join("n/a" if v is None else f"{v:.3f}" for v in spreads) or "-",
                    md.kib(x["rss_per_user_bytes"]),
                    _cpu(x["cpu_per_user_us"]),
                    f"{x['herd_seconds']:.1f}",
                    f"{x['errors']} / {x['lost']} / {x.get('unreported', 0)}",
                    _load(x["load_1m"]),
                ]
            )
    base = next((e for e in s["side_by_side"] if e["workers"] is None), None)
    one = base["max_users_within_limit"] if base else None

    def largest(e: dict[str, Any]) -> str:
        n = e["max_users_within_limit"] or 0
        ratio = f" ({n / one:.2f}x one process)" if one and e is not base else ""
        bound = (
            f"first over: {e['first_over_limit']:,}"
            if e["first_over_limit"]
            else f"none over up to {e['searched_up_to']:,}, a lower bound"
        )
        return f"{e['engine']}: **{n:,}**{ratio} ({bound})"

    lines = [
        "Side by side in the same run: one process, and the herd on Locust workers (`chaos herd "
        "--workers W`: a master and W local workers, each running its share in the asyncio herd "
        "core in a child process), each size run by each engine in turn, one run each, every "
        "engine on every core (the cache keeps its own). Release spread = from the release to "
        "the last user's first send; on workers, from the master's release instant to the last "
        "user's first send on any worker, each worker's clock offset taken off, with the "
        "workers' own spreads by their own clocks beside it. CPU per user: the herd processes' "
        "CPU seconds from the release to the last answer, over the users (the Locust processes "
        "around them not counted).",
        "",
        *md.table(
            [
                "engine",
                "users",
                "release spread (s)",
                "each worker's spread (s)",
                "herd RSS per user",
                "herd CPU per user",
                "herd seconds",
                "errors / lost / unreported",
                "load (1 min)",
            ],
            rows,
        ),
        f"Largest N released within {s['limit_s']:g} s in this ladder: "
        + "; ".join(largest(e) for e in s["side_by_side"])
        + f". Load average (1 min): {s['load_1m_before']:.1f} before the section, "
        f"{s['load_1m_after']:.1f} after." + _at_same_size(s["side_by_side"], base),
        "",
    ]
    m = s.get("million")
    if m:
        lines += [
            f"On paper, a {m['users']:,}-user burst released within {s['limit_s']:g} s: one "
            f"process here releases {m['per_process_within_limit']:,} users within the limit "
            f"(the search above), so it takes **{m['workers_needed']} workers**, each with a "
            "core of its own: the release is one event loop's work per worker, and workers "
            "beyond this machine's 2 cores share them (the ladder above). At that size the "
            f"release cost {m['us_per_user']:.1f} us per user (its spread over N): at that rate "
            f"one core would wake {1e6 / m['us_per_user']:,.0f} users in "
            f"{s['limit_s']:g} s, so no fewer than "
            f"{math.ceil(m['users'] * m['us_per_user'] / 1e6 / s['limit_s'])} workers would do, "
            "the per-user cost growing with N as the table shows. The whole burst, release to "
            "last answer, "
            f"costs {m['cpu_per_user_us']:.0f} us of herd CPU per user: "
            f"{m['cpu_seconds_of_the_burst']:,.0f} CPU seconds for {m['users']:,} users, and "
            f"{m['rss_bytes_of_the_burst'] / 2**30:.1f} GiB of herd memory at "
            f"{md.kib(s['rss_per_user_bytes'])} per user. The cache is the other half: one "
            "cache process answers a few thousand requests per second here, so a herd that "
            "size needs its replicas and a TTL longer than they take to answer it (README, "
            '"The herd on Locust").',
            "",
        ]
    return lines


def summary_rows(s: dict[str, Any]) -> list[list[str]]:
    """The summary's rows for this section: figure, limit, distance."""
    return [
        [
            f"largest herd released within {s['limit_s']:g} s: "
            f"{s['max_users_within_limit'] or 0:,} users",
            f"release spread <= {s['limit_s']:g} s",
            f"{md.kib(s['rss_per_user_bytes'])} herd RSS per user",
        ],
        *(
            [
                f"largest herd released within {s['limit_s']:g} s on {e['workers']} Locust "
                f"workers: {e['max_users_within_limit'] or 0:,} users",
                f"release spread <= {s['limit_s']:g} s",
                f"{_cpu(e['cpu_per_user_us'])} herd CPU per user",
            ]
            for e in s.get("side_by_side", [])
            if e["workers"]
        ),
    ]
