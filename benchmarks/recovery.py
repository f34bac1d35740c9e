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

`render` writes the section's part of BENCHMARKS.md from its results (under its `TITLE`),
`summary_rows` its rows of the report's summary; `benchmarks.report` assembles them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks import markdown as md
from benchmarks.stats import ratio
from chaos.engine.runner import raise_on_failures, run_scenario
from chaos.scenarios.retry_storm import SCENARIO, RetryStormConfig
from herdlab.guards import parse_guard_set

# The section's title in BENCHMARKS.md.
TITLE = "Herd recovery"

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
    doc = asyncio.run(run_scenario(SCENARIO, config, emit))
    raise_on_failures([doc])
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


def render(r: dict[str, Any]) -> list[str]:
    lines = [
        "The retry-storm scenario (`chaos/scenarios/retry_storm.py`): K users ask for K cold "
        "keys through the cache (one fetch per key under the cache's retry policy), the DB is "
        "SIGKILLed while every fetch is in flight and restarted after the outage, and the "
        "herd runs until every request has a value or a typed error. Limits: "
        "`recovery_s / ideal_recovery_s` = 1 (keys / DB capacity), `amplification` = 1 (one "
        "DB attempt per key), `post_restore_peak_over_capacity` = 1 (no 100 ms bin above what "
        "the DB serves).",
        "",
    ]
    for run in r["runs"]:
        retry = run["retry"]
        lines += [
            f"### K = {run['keys']:,} keys",
            "",
            f"`{run['command']}`; DB capacity {run['db_capacity_per_s']:g} queries/s; retry base "
            f"{retry['base_s']:g} s, cap {retry['cap_s']:g} s, up to {retry['attempts']} "
            f"attempts within {retry['total_s']:g} s, each with a {retry['attempt_timeout_s']:g} s "
            "deadline.",
            "",
        ]
        rows = []
        for p in run["policies"]:
            rows.append(
                [
                    p["policy"],
                    "incomplete" if p["recovery_s"] is None else f"{p['recovery_s']:g}",
                    f"{p['ideal_recovery_s']:g}",
                    f"**{md.times(p['recovery_over_ideal'])}**",
                    f"{p['amplification']:g}",
                    f"{p['post_restore_peak_over_capacity']}",
                    f"{p['db_arrivals_before_kill']:,}",
                    f"{p['keys_served']:,}/{p['keys']:,}",
                    f"{p['client_errors']:,}",
                    f"{p['lost']}",
                ]
            )
        lines += md.table(
            [
                "policy",
                "recovery_s",
                "ideal_recovery_s",
                "recovery / ideal",
                "amplification",
                "peak after restore / capacity",
                "first attempts at the DB before the kill",
                "keys served",
                "client errors",
                "lost",
            ],
            rows,
        )
        best = _best_recovery(run)
        if best is not None:
            lines += [
                f"Closest to the limit: `{best['policy']}`, "
                f"{md.times(best['recovery_over_ideal'])} "
                f"the ideal recovery. recovery_s counts from the DB's restart, so it includes "
                "the DB's own start-up (about half a second) that the ideal does not.",
                "",
            ]
        early = [p for p in run["policies"] if p["db_arrivals_before_kill"] < p["keys"]]
        if early:
            spreads = ", ".join(f"{p['herd_release_spread_s']:g}" for p in early)
            lines += [
                "The DB was killed before every key's first attempt had reached it for "
                + ", ".join(f"{p['policy']} ({p['db_arrivals_before_kill']:,})" for p in early)
                + ": the scenario kills at the latest 0.8 of an attempt's deadline after the "
                f"herd's release, and this herd (release spread {spreads} s) had not got all "
                f"{run['keys']:,} requests through the cache to the DB by then. Those fetches met "
                "a dead DB (fast UNAVAILABLE, retried under the policy) instead of dying in "
                "flight: the same outage, a different start to the storm.",
                "",
            ]
        failed = [p for p in run["policies"] if p["recovery_s"] is None]
        if any(p["policy"] == "none" for p in failed):
            lines += [
                "`none` makes one attempt: every fetch the outage touched fails for good, so it "
                "never recovers by construction (its row shows what no retry costs clients).",
                "",
            ]
        retrying = [p for p in failed if p["policy"] != "none"]
        if retrying:
            offered = run["keys"] / retry["cap_s"]
            lines += [
                "Did not serve every key within the budget: "
                + ", ".join(
                    f"`{p['policy']}` ({p['keys_served']:,} served, amplification "
                    f"{p['amplification']:g}, peak {p['post_restore_peak_over_capacity']}x)"
                    for p in retrying
                )
                + f". Even spread evenly below the cap, {run['keys']:,} fetches retrying offer "
                f"about {offered:,.0f} attempts/s (K / cap) to a DB that serves "
                f"{run['db_capacity_per_s']:g}/s, so the DB stays overloaded after the restore: "
                "its FIFO queue fills, queries reach a slot with little of their deadline left, "
                "and retries keep it full, the sustaining effect of a metastable failure. "
                "Jitter spreads retries; it does not bound their rate. What closes it: a retry "
                "budget (token bucket) in the cache's DB client, client-side adaptive "
                "throttling, a cap of at least K / capacity (here "
                f"{run['keys'] / run['db_capacity_per_s']:g} s), or a DB queue that sheds by "
                "queueing delay instead of FIFO; the guard sets are measured below.",
                "",
            ]
            most = max(retrying, key=lambda p: p["keys_served"])
            if most["policy"] == "exponential":
                lines += [
                    "Un-jittered `exponential` served the most keys here, with the least "
                    "amplification. A reading consistent with the figures (not yet isolated by "
                    "an experiment): its synchronised waves overload the DB in bursts and leave "
                    "it idle between them, so a wave's head is served while its deadlines are "
                    "fresh; jittered retries keep the FIFO queue full all the time, so most "
                    "queries reach a slot late. Spreading retries without bounding them turns "
                    "a periodic overload into a sustained one; the fixes above bound them.",
                    "",
                ]
    return [*lines, *_guard_run(r["guard_run"])]


def _best_recovery(run: dict[str, Any]) -> dict[str, Any] | None:
    done = [p for p in run["policies"] if p["recovery_over_ideal"] is not None]
    return min(done, key=lambda p: p["recovery_over_ideal"], default=None)


# What each guard does, in the words of its module; its parameters are in `guards_params`.
GUARD_MECHANISMS = {
    "budget": "a retry budget (each retry needs tokens, overloads spend them, successes refund "
    "a fraction; first attempts always pass)",
    "throttle": "adaptive throttling (refuses calls locally in proportion to requests beyond "
    "k x accepts over its window)",
    "breaker": "a circuit breaker (opens after `failures` overloads in a row, probes after "
    "`reset`)",
    "limit": "a limit on calls in flight to the DB (the rest wait in the cache, within their "
    "deadline)",
}


BREAKER_OPEN = 2.0  # `breaker_state`: 0 closed, 1 half-open, 2 open


def _guard_did(name: str, state: dict[str, list[float]]) -> str:
    """What the guard's exported state shows it did, from its [lowest, highest] values."""
    if name == "budget" and "budget_tokens" in state:
        low, high = state["budget_tokens"]
        return f"its tokens ranged {low:g}..{high:g}"
    if name == "throttle" and "throttle_rejection_probability" in state:
        return (
            "it refused up to "
            f"{state['throttle_rejection_probability'][1]:.0%} of calls at its peak"
        )
    if name == "breaker" and "breaker_state" in state:
        opened = state["breaker_state"][1] >= BREAKER_OPEN
        return "it opened" if opened else "it never opened"
    if name == "limit" and "limit_limit" in state:
        low, high = state["limit_limit"]
        held = f"held at {high:g}" if low == high else f"moved between {low:g} and {high:g}"
        waiting = state.get("limit_waiting", [0.0, 0.0])[1]
        return f"the limit {held}, with up to {waiting:,.0f} fetches waiting in the cache"
    return "no state was sampled"


def _guard_sentence(row: dict[str, Any], run: dict[str, Any]) -> str:
    names = [part.partition(":")[0] for part in row["guards_spec"].split("+")]
    if row["guards_spec"] == "none":
        did = "no guard: the retry policy alone"
    else:
        did = f"`{row['guards_params']}`, " + "; ".join(
            f"{GUARD_MECHANISMS[n]}: {_guard_did(n, row['guard_state'])}" for n in names
        )
    if row["recovery_s"] is not None:
        outcome = (
            f"recovered in {row['recovery_s']:g} s ({md.times(row['recovery_over_ideal'])} the "
            f"ideal) with amplification {row['amplification']:g} and slot-time amplification "
            f"{row['slot_time_amplification']}"
        )
    else:
        outcome = (
            f"did not serve every key within the {run['retry']['total_s']:g} s budget "
            f"({row['keys_served']:,} served, {row['client_errors']:,} client errors, "
            f"amplification {row['amplification']:g}, slot-time amplification "
            f"{row['slot_time_amplification']})"
        )
    return f"- `{row['guards']}`: {did}; {outcome}."


def _guard_run(g: dict[str, Any]) -> list[str]:
    retry = g["retry"]
    rows = [
        [
            f"`{p['guards']}`",
            f"`{p['guards_spec']}`",
            "incomplete" if p["recovery_s"] is None else f"{p['recovery_s']:g}",
            f"{p['ideal_recovery_s']:g}",
            f"**{md.times(p['recovery_over_ideal'])}**",
            f"{p['amplification']:g}",
            f"{p['post_restore_peak_over_capacity']}",
            f"{p['slot_time_amplification']}",
            f"{p['keys_served']:,}/{p['keys']:,}",
            f"{p['client_errors']:,}",
            f"{p['lost']}",
        ]
        for p in g["policies"]
    ]
    policy = g["policies"][0]["policy"]
    return [
        f"### K = {g['keys']:,} keys, `{policy}` jitter, per guard set",
        "",
        f"`{g['command']} --json r.json`; the same storm as above (DB capacity "
        f"{g['db_capacity_per_s']:g} queries/s, {g['outage_s']:g} s outage, retry cap "
        f"{retry['cap_s']:g} s, up to {retry['attempts']} attempts within {retry['total_s']:g} s, "
        f"{retry['attempt_timeout_s']:g} s per attempt, DB queue "
        f"{', '.join(sorted({p['queue'] for p in g['policies']}))}), with a guard set on the "
        "cache's calls to the DB (`herdlab.guards`; `recommended` is `herdlab.guards."
        "RECOMMENDED`). Slot-time amplification = DB slot-seconds spent / (keys x service "
        "time), counted from the herd's release: 1 is the least the keys could cost, above 1 "
        "the DB held slots for work nobody needed, below 1 it served fewer keys than asked.",
        "",
        *md.table(
            [
                "guards",
                "ran as",
                "recovery_s",
                "ideal_recovery_s",
                "recovery / ideal",
                "amplification",
                "peak after restore / capacity",
                "slot-time amplification",
                "keys served",
                "client errors",
                "lost",
            ],
            rows,
        ),
        "What each guard did (its state as the cache exported it every 100 ms):",
        "",
        *[_guard_sentence(p, g) for p in g["policies"]],
        "",
    ]


def summary_rows(r: dict[str, Any]) -> list[list[str]]:
    """The summary's rows for this section: figure, limit, distance."""
    rows = []
    for run in r["runs"]:
        best = _best_recovery(run)
        if best is not None:
            rows.append(
                [
                    f"K={run['keys']:,}: best {best['policy']} {best['recovery_s']} s",
                    f"ideal {best['ideal_recovery_s']} s",
                    md.times(best["recovery_over_ideal"]),
                ]
            )
        else:
            most = max(run["policies"], key=lambda p: p["keys_served"])
            rows.append(
                [
                    f"K={run['keys']:,}: no policy served every key within its "
                    f"{run['retry']['total_s']:g} s budget; most: {most['policy']} "
                    f"({most['keys_served']:,})",
                    f"ideal {most['ideal_recovery_s']} s",
                    "not recovered",
                ]
            )
    g = r["guard_run"]
    best = _best_recovery(g)
    rows.append(
        [
            f"K={g['keys']:,}, {g['policies'][0]['policy']} jitter, per guard set: "
            + (
                f"best `{best['guards']}` {best['recovery_s']} s"
                if best is not None
                else "no guard set served every key"
            ),
            f"ideal {g['policies'][0]['ideal_recovery_s']} s",
            md.times(best["recovery_over_ideal"]) if best is not None else "not recovered",
        ]
    )
    return rows
