"""`python -m benchmarks [--quick] [--out BENCHMARKS.md] [--json benchmarks/results.json]`

Runs every section in one run, side by side, and rewrites the report and the results document
(and the policies plot next to the document). `--quick` runs small sizes and few seeds: a smoke
that fills every section in about a minute, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import (
    coalescing,
    contention,
    herd_scale,
    hit_path,
    policies,
    recovery,
    report,
    sharpness,
    tls_handshake,
    wire_proxy,
)
from benchmarks.system import cpu_plan, load_average, machine
from herdlab.guards import GUARD_NAMES

PLOT_NAME = "policies.png"


@dataclass(frozen=True)
class Profile:
    """Sizes of every section; `FULL` is the measurement, `QUICK` the smoke."""

    coalescing_calls: int
    peer_callers: int
    peer_db_latency_s: float
    hit_concurrencies: tuple[int, ...]
    hit_rounds: int
    hit_warmup_s: float
    hit_duration_s: float
    wire_concurrencies: tuple[int, ...]
    wire_rounds: int
    policy_clients: tuple[int, ...]
    policy_seeds: int
    recovery_keys: tuple[int, ...]
    recovery_policies: tuple[str, ...]
    recovery_outage_s: float
    recovery_db_concurrency: int
    guard_keys: int
    guard_policy: str
    guard_sets: tuple[str, ...]
    scale_start: int
    scale_max: int
    scale_bisect_steps: int
    scale_repeats: int
    scale_workers: tuple[int, ...]
    scale_ladder: tuple[int, ...]
    sharp_clients: int
    sharp_rounds: int
    tls_connections: int
    tls_rounds: int


FULL = Profile(
    coalescing_calls=10_000,
    peer_callers=10_000,
    peer_db_latency_s=0.2,
    hit_concurrencies=(1, 64, 512),
    # 25 rounds put the median of the rounds' ratios within about +-0.03 (its 95% interval is
    # the 8th lowest to the 8th highest round) on a 2-core machine whose rounds spread +-0.1.
    hit_rounds=25,
    hit_warmup_s=1.0,
    hit_duration_s=2.0,
    # The proxy's overhead is read at the hit path's usual points (one caller, and 64 at once).
    wire_concurrencies=(1, 64),
    wire_rounds=15,
    policy_clients=tuple(range(10, 101, 10)),
    policy_seeds=100,
    recovery_keys=(1_000, 10_000),
    recovery_policies=contention.POLICIES,
    recovery_outage_s=10.0,
    recovery_db_concurrency=20,
    guard_keys=10_000,
    guard_policy="full",
    # No guard, each guard alone, then the limit's adaptive algorithms and the recommended set.
    guard_sets=("none", *GUARD_NAMES, "limit:aimd", "limit:vegas+breaker", "recommended"),
    scale_start=2_000,
    scale_max=64_000,
    scale_bisect_steps=2,
    scale_repeats=3,
    # One process beside the herd on 2 and 4 Locust workers, from about where one process stops
    # up to the herd's bound; one run per size and engine: each is tens of thousands of answers.
    scale_workers=(2, 4),
    scale_ladder=(16_000, 24_000, 32_000, 48_000, 64_000, 100_000),
    sharp_clients=10_000,
    sharp_rounds=3,
    # 7 rounds: the median of the rounds' ratios has a 95% interval (the 1st lowest to the 1st
    # highest round); 500 connections a round put the server's CPU far above the clock's tick.
    tls_connections=500,
    tls_rounds=7,
)

# The smoke: every section filled, each at its smallest size that still runs all its parts (one
# concurrency, one round, one herd size, both event loops, two storm sizes under one policy and
# one under two guard sets).
QUICK = Profile(
    coalescing_calls=200,
    peer_callers=200,
    peer_db_latency_s=0.2,
    hit_concurrencies=(64,),
    hit_rounds=1,
    hit_warmup_s=0.2,
    hit_duration_s=0.5,
    wire_concurrencies=(64,),
    wire_rounds=1,
    policy_clients=(10, 50, 100),
    policy_seeds=3,
    recovery_keys=(50, 200),
    recovery_policies=("exponential",),
    recovery_outage_s=0.5,
    recovery_db_concurrency=20,
    guard_keys=200,
    guard_policy="full",
    guard_sets=("none", "recommended"),
    scale_start=1_000,
    scale_max=1_000,
    scale_bisect_steps=0,
    scale_repeats=1,
    scale_workers=(2,),
    scale_ladder=(1_000,),
    sharp_clients=200,
    sharp_rounds=1,
    tls_connections=20,
    tls_rounds=1,
)


def _log(line: str) -> None:
    print(f"[benchmarks] {line}", file=sys.stderr, flush=True)


def run(
    profile: Profile, plot_path: Path, only: Sequence[str] = (), kept: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Runs every section, or only the sections named in `only`, taking the others' results as
    they were recorded in `kept` (an earlier results.json)."""
    plan = cpu_plan()
    p = profile
    sections: dict[str, Callable[[], dict[str, Any]]] = {
        "coalescing": lambda: coalescing.run(
            plan, p.coalescing_calls, p.peer_callers, p.peer_db_latency_s
        ),
        "hit_path": lambda: hit_path.run(
            plan, p.hit_concurrencies, p.hit_rounds, p.hit_warmup_s, p.hit_duration_s, emit=_log
        ),
        "policies": lambda: policies.run(p.policy_clients, p.policy_seeds, plot_path),
        "herd_recovery": lambda: recovery.run(
            p.recovery_keys,
            p.recovery_policies,
            p.recovery_outage_s,
            p.recovery_db_concurrency,
            seed=42,
            guard_keys=p.guard_keys,
            guard_policy=p.guard_policy,
            guard_sets=p.guard_sets,
            emit=_log,
        ),
        "herd_scale": lambda: herd_scale.run(
            plan,
            p.scale_start,
            p.scale_max,
            p.scale_bisect_steps,
            p.scale_repeats,
            p.scale_workers,
            p.scale_ladder,
        ),
        "sharpness": lambda: sharpness.run(p.sharp_clients, p.sharp_rounds),
        "wire_proxy": lambda: wire_proxy.run(
            plan, p.wire_concurrencies, p.wire_rounds, p.hit_warmup_s, p.hit_duration_s
        ),
        "tls_handshake": lambda: tls_handshake.run(plan, p.tls_connections, p.tls_rounds),
    }
    unknown = [name for name in only if name not in sections]
    if unknown:
        raise SystemExit(f"unknown section {', '.join(unknown)}; sections: {', '.join(sections)}")
    meta: dict[str, Any] = {"machine": machine(plan)}
    results: dict[str, Any] = {"meta": meta}
    seconds: dict[str, float] = {}
    started = time.monotonic()
    for name, section in sections.items():
        if only and name not in only:
            if kept is None or name not in kept:
                raise SystemExit(f"no recorded result of section {name} to keep; run it too")
            results[name] = kept[name]
            seconds[name] = kept.get("meta", {}).get("section_seconds", {}).get(name, 0.0)
            _log(f"{name}: kept from the earlier run")
            continue
        _log(f"{name} ...")
        t0 = time.monotonic()
        try:
            results[name] = section()
        except Exception as exc:
            # One section's failure must not throw away the others' measurements: it is
            # recorded, rendered as a failure, and makes the command exit non-zero.
            _log(f"{name} FAILED: {traceback.format_exc()}")
            results[name] = {"failed": f"{type(exc).__name__}: {exc}"}
        seconds[name] = round(time.monotonic() - t0, 1)
        _log(f"{name} done in {seconds[name]:g} s")
    meta["section_seconds"] = seconds
    meta["seconds"] = round(time.monotonic() - started, 1)
    meta["load_average_at_end"] = [round(x, 2) for x in load_average()]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run every benchmark; rewrite BENCHMARKS.md and benchmarks/results.json.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke, in minutes")
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results.json"))
    parser.add_argument(
        "--sections",
        default="",
        help="re-run only these sections (comma-separated); the others keep the results "
        "recorded in --json, and the report says which run each came from",
    )
    args = parser.parse_args()
    command = " ".join(["python -m benchmarks", *sys.argv[1:]])
    plot_path = args.json.parent / PLOT_NAME
    only = [name.strip() for name in args.sections.split(",") if name.strip()]
    kept = json.loads(args.json.read_text()) if only and args.json.exists() else None
    results = run(QUICK if args.quick else FULL, plot_path, only, kept)
    results["meta"].update({"command": command, "quick": args.quick})
    if kept is not None:
        earlier = kept.get("meta", {})
        results["meta"]["kept_sections"] = {
            # A section the earlier run had kept in turn keeps the command that measured it.
            name: earlier.get("kept_sections", {}).get(name)
            or earlier.get("command", "an earlier run")
            for name in results
            if name != "meta" and name not in only
        }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    plot = os.path.relpath(plot_path.resolve(), args.out.resolve().parent)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report.render(results, plot))
    _log(f"wrote {args.out} and {args.json} in {results['meta']['seconds']:g} s")
    failed = [name for name in report.SECTIONS if "failed" in results[name]]
    if failed:
        _log(f"sections that failed: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
