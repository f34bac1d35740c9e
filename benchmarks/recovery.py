"""Section `herd_recovery`: the retry-storm scenario (`chaos.scenarios.retry_storm`) per policy.

The DB keeps the scenario's capacity (20 slots x 100 ms = 200 queries/s) at every K, so
`ideal_recovery_s` = K / 200 grows with K; the cache's retry budget grows with it (the outage
plus two ideal recoveries, at least the scenario's 60 s), so a policy within 2x of the ideal is
measured rather than cut off; one that is not shows as incomplete. The scenario starts and
restarts its own processes (the DB is killed and started again), so this section is not pinned.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.stats import ratio
from chaos.scenarios.retry_storm import RetryStormConfig, run_retry_storm

MIN_RETRY_TOTAL_S = 60.0
# The cache's retry budget: the outage plus this many ideal recoveries (at least the default's).
BUDGET_IDEALS = 2.0
MAX_ATTEMPTS = 100


def config_for(
    keys: int, policies: Sequence[str], outage_s: float, db_concurrency: int, seed: int
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
    )


def _arrivals_before_kill(timeline: dict[str, Any]) -> int:
    """DB arrivals up to the kill: the bins up to the kill's own, since the DB records nothing
    from the kill to its restart, which is a whole outage (longer than a bin) later."""
    kill_bin = int(timeline["outage"][0] / timeline["bin_s"])
    return int(sum(timeline["db_arrivals"][: kill_bin + 1]))


def _row(row: dict[str, Any]) -> dict[str, Any]:
    recovery = row["recovery_s"]
    return {
        "policy": row["policy"],
        "keys": row["keys"],
        "recovery_s": recovery,
        "ideal_recovery_s": row["ideal_recovery_s"],
        "recovery_over_ideal": (
            ratio(recovery, row["ideal_recovery_s"]) if recovery is not None else None
        ),
        "amplification": row["amplification"],
        "post_restore_peak_per_100ms": row["post_restore_peak_per_100ms"],
        "post_restore_peak_over_capacity": row["post_restore_peak_over_capacity"],
        "keys_served": row["keys_served"],
        "keys_pending_at_restore": row.get("keys_pending_at_restore"),
        "db_arrivals_before_kill": _arrivals_before_kill(row["timeline"]),
        "herd_release_spread_s": row["release_spread_s"],
        "client_errors": row["client_errors"],
        "lost": row["lost"],
    }


def run(
    key_counts: Sequence[int],
    policies: Sequence[str],
    outage_s: float,
    db_concurrency: int,
    seed: int,
    emit: Callable[[str], None],
) -> dict[str, Any]:
    runs = []
    for keys in key_counts:
        config = config_for(keys, policies, outage_s, db_concurrency, seed)
        doc = asyncio.run(run_retry_storm(config, emit))
        runs.append(
            {
                "keys": keys,
                "command": doc["command"],
                "db_capacity_per_s": config.db_capacity_per_s,
                "outage_s": outage_s,
                "retry": {
                    "base_s": config.retry_base_s,
                    "cap_s": config.retry_cap_s,
                    "attempts": config.retry_attempts,
                    "total_s": config.retry_total_s,
                    "attempt_timeout_s": config.attempt_timeout_s,
                },
                "policies": [_row(r) for r in doc["policies"]],
            }
        )
    return {"runs": runs, "policy_names": list(policies)}
