"""Section `herd_scale`: the largest herd this machine releases within one second of its barrier.

The herd (`benchmarks.herd_probe`, which runs `chaos.engine.herd.run_herd` like `chaos herd`) runs
in its own process on the client cores against the cache on the server cores, all users on one warm
key. N doubles from `start` until the release spread passes the limit (or N reaches `max_users`),
then a bounded bisection narrows the boundary. The spread of one herd varies by up to 2x from run
to run on a loaded machine, so each N is run `repeats` times and judged by its median. Each run
also gives the herd process's RSS per user: its peak RSS growth over N.

`render` writes the section's part of BENCHMARKS.md from its results (under its `TITLE`),
`summary_rows` its rows of the report's summary; `benchmarks.report` assembles them.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from benchmarks import markdown as md
from benchmarks.servers import get, lab_stack
from benchmarks.stats import median
from benchmarks.system import CpuPlan, run_json

# The section's title in BENCHMARKS.md.
TITLE = "Scale of the herd"

LIMIT_S = 1.0
KEY_PREFIX = "hot"
KEY = f"{KEY_PREFIX}0"  # the herd's only key: prefix + index 0


def _probe(plan: CpuPlan, target: str, users: int) -> dict[str, Any]:
    line, _ = run_json(
        [
            sys.executable,
            "-m",
            "benchmarks.herd_probe",
            "--target",
            target,
            "--users",
            str(users),
            "--key",
            KEY_PREFIX,
        ],
        plan.client,
        timeout_s=300.0,
    )
    result: dict[str, Any] = json.loads(line)
    return result


def run(
    plan: CpuPlan, start: int, max_users: int, bisect_steps: int, repeats: int
) -> dict[str, Any]:
    if start < 1 or repeats < 1:
        raise ValueError("start and repeats must be >= 1")
    sizes: list[dict[str, Any]] = []
    with lab_stack(plan, ["--latency", "5ms", "--spread", "0ms"], ["--ttl", "1h"]) as (
        _,
        _db,
        cache,
    ):
        get(cache.target, KEY, 10.0)

        def within(users: int) -> bool:
            runs = [_probe(plan, cache.target, users) for _ in range(repeats)]
            spread = median([float(r["release_spread_s"]) for r in runs])
            sizes.append(
                {
                    "users": users,
                    "release_spread_s": round(spread, 4),
                    "spreads_s": [r["release_spread_s"] for r in runs],
                    "rss_per_user_bytes": round(median([r["rss_per_user_bytes"] for r in runs])),
                    "herd_seconds": round(median([r["seconds"] for r in runs]), 3),
                    "errors": sum(sum(r["errors"].values()) for r in runs),
                    "lost": sum(r["lost"] for r in runs),
                }
            )
            return spread <= LIMIT_S

        good, bad = 0, 0
        users = start
        while users <= max_users:
            if not within(users):
                bad = users
                break
            good = users
            users *= 2
        if good and bad:
            for _ in range(bisect_steps):
                middle = (good + bad) // 2
                if middle in (good, bad):
                    break
                if within(middle):
                    good = middle
                else:
                    bad = middle
    largest = max(
        (p for p in sizes if p["release_spread_s"] <= LIMIT_S),
        key=lambda p: p["users"],
        default=None,
    )
    return {
        "limit_s": LIMIT_S,
        "max_users_within_limit": largest["users"] if largest else None,
        "first_over_limit": bad or None,
        "searched_up_to": max_users,
        "rss_per_user_bytes": largest["rss_per_user_bytes"] if largest else None,
        "repeats": repeats,
        "sizes": sorted(sizes, key=lambda p: int(p["users"])),
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
    ]


def summary_rows(s: dict[str, Any]) -> list[list[str]]:
    """The summary's rows for this section: figure, limit, distance."""
    return [
        [
            f"largest herd released within {s['limit_s']:g} s: "
            f"{s['max_users_within_limit'] or 0:,} users",
            f"release spread <= {s['limit_s']:g} s",
            f"{md.kib(s['rss_per_user_bytes'])} herd RSS per user",
        ]
    ]
