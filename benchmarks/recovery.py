"""Section `herd_recovery`: the retry-storm scenario (`chaos.scenarios.retry_storm`) per policy.

The DB keeps the scenario's capacity (20 slots x 100 ms = 200 queries/s) at every K, so
`ideal_recovery_s` = K / 200 grows with K; the cache's retry budget grows with it (the outage
plus two ideal recoveries, at least the scenario's 60 s), so a policy within 2x of the ideal is
measured rather than cut off; one that is not shows as incomplete. The scenario starts and
restarts its own processes (the DB is killed and started again), so this section is not pinned.

`guard_run` is the same storm at one K under one policy, swept over guard sets on the cache's
calls to the DB (`herdlab.guards`): each row adds the guard set as written and as it ran, the
DB's queue discipline, slot-time amplification, and `guard_state`, the lowest and highest value
of each guard state the cache exported during the storm (`guard_timeline`), which says what the
guard did.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.stats import ratio
from chaos.scenarios.retry_storm import RetryStormConfig, run_retry_storm
from herdlab.guards import parse_guard_set

MIN_RETRY_TOTAL_S = 60.0
# The cache's retry budget: the outage plus this many ideal recoveries (at least the default's).
BUDGET_IDEALS = 2.0
MAX_ATTEMPTS = 100


def config_for(
    keys: int,
    policies: Sequence[str],
    outage_s: float,
    db_concurrency: int,
    seed: int,
    guards: Sequence[str] = ("none",),
) -> RetryStormConfig:
    base = RetryStormConfig(keys=keys, db_concurrency=db_concurrency)
    budget = max(MIN_RETRY_TOTAL_S, outage_s + BUDGET_IDEALS * keys / base.db_capacity_per_s)
    return RetryStormConfig(
        policies=tuple(policies),
        keys=keys,
        outage_s=outage_s,
        seed=seed,
        db_concurrency=db_concurrency,
        retry_attempts=MAX_ATTEMPTS if budget > MIN_RETRY_TOTAL_S else base.retry_attempts,
        retry_total_s=budget,
        guards=tuple(guards),
    )


def _arrivals_before_kill(timeline: dict[str, Any]) -> int:
    """DB arrivals up to the kill: the bins up to the kill's own, since the DB records nothing
    from the kill to its restart, which is a whole outage (longer than a bin) later."""
    kill_bin = int(timeline["outage"][0] / timeline["bin_s"])
    return int(sum(timeline["db_arrivals"][: kill_bin + 1]))


def _guard_state(timeline: dict[str, Any]) -> dict[str, list[float]]:
    """{"<guard>_<key>": [lowest, highest]} over the samples of every guard state; empty when the
    cache ran no guard (or no sample was taken)."""
    found = {}
    for key, values in timeline.items():
        known = [float(v) for v in values if v is not None]
        if key != "t_s" and known:
            found[key] = [round(min(known), 3), round(max(known), 3)]
    return found


def _guards_params(guards: str) -> str:
    """Every parameter of every guard in the set, defaults included: what it ran with."""
    return "+".join(g.spec for g in parse_guard_set(guards).guards) or "none"


def _row(row: dict[str, Any]) -> dict[str, Any]:
    recovery = row["recovery_s"]
    return {
        "policy": row["policy"],
        "guards": row["guards"],
        "guards_spec": row["guards_spec"],
        "guards_params": _guards_params(row["guards"]),
        "queue": row["queue"],
        "keys": row["keys"],
        "recovery_s": recovery,
        "ideal_recovery_s": row["ideal_recovery_s"],
        "recovery_over_ideal": (
            ratio(recovery, row["ideal_recovery_s"]) if recovery is not None else None
        ),
        "amplification": row["amplification"],
        "post_restore_peak_per_100ms": row["post_restore_peak_per_100ms"],
        "post_restore_peak_over_capacity": row["post_restore_peak_over_capacity"],
        "slot_time_amplification": row["slot_time_amplification"],
        "guard_state": _guard_state(row["guard_timeline"]),
        "keys_served": row["keys_served"],
        "keys_pending_at_restore": row.get("keys_pending_at_restore"),
        "db_arrivals_before_kill": _arrivals_before_kill(row["timeline"]),
        "herd_release_spread_s": row["release_spread_s"],
        "client_errors": row["client_errors"],
        "lost": row["lost"],
    }


def _storm(config: RetryStormConfig, emit: Callable[[str], None]) -> dict[str, Any]:
    """Runs one storm; its command, setup and rows."""
    doc = asyncio.run(run_retry_storm(config, emit))
    return {
        "keys": config.keys,
        "command": doc["command"],
        "db_capacity_per_s": config.db_capacity_per_s,
        "outage_s": config.outage_s,
        "retry": {
            "base_s": config.retry_base_s,
            "cap_s": config.retry_cap_s,
            "attempts": config.retry_attempts,
            "total_s": config.retry_total_s,
            "attempt_timeout_s": config.attempt_timeout_s,
        },
        "policies": [_row(r) for r in doc["policies"]],
    }


def run(
    key_counts: Sequence[int],
    policies: Sequence[str],
    outage_s: float,
    db_concurrency: int,
    seed: int,
    guard_keys: int,
    guard_policy: str,
    guard_sets: Sequence[str],
    emit: Callable[[str], None],
) -> dict[str, Any]:
    runs = [
        _storm(config_for(keys, policies, outage_s, db_concurrency, seed), emit)
        for keys in key_counts
    ]
    guarded = config_for(guard_keys, (guard_policy,), outage_s, db_concurrency, seed, guard_sets)
    return {
        "runs": runs,
        "policy_names": list(policies),
        "guard_run": _storm(guarded, emit),
        "guard_sets": list(guard_sets),
    }
