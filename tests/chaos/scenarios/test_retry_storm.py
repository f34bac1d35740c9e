"""The retry-storm scenario on real processes: a herd's fetches are in flight when the DB is
SIGKILLed; it is restarted after the outage and every key must still be served.

One small storm (200 keys, a 2 s outage, a DB of 100 queries/s) is run once for the module with
a fixed seed; the tests read its result document. The DB here is small on purpose: a wave of
~200 synchronised retries is then many times what it serves in 100 ms, while 200 fetches spread
by full jitter come close to its capacity, so the comparison holds with a wide margin (measured:
exponential ~9-10x capacity, full ~2x).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import psutil
import pytest

from chaos.engine.runner import run_scenario
from chaos.engine.timeline import bins
from chaos.scenarios.retry_storm import SCENARIO, RetryStormConfig

CONFIG = RetryStormConfig(
    policies=("exponential", "full"),
    keys=200,
    outage_s=2.0,
    seed=7,
    db_concurrency=10,
    retry_cap_s=2.0,
    retry_total_s=20.0,
)

FIELDS = {
    "policy",
    "keys",
    "db_capacity_per_s",
    "db_attempts",
    "amplification",
    "post_restore_peak_per_100ms",
    "post_restore_peak_over_capacity",
    "recovery_s",
    "ideal_recovery_s",
    "client_errors",
    "lost",
    "timeline",
}


def _lab_processes() -> list[psutil.Process]:
    found = []
    for proc in psutil.Process(os.getpid()).children(recursive=True):
        try:
            cmdline = " ".join(proc.cmdline())
        except psutil.NoSuchProcess:
            continue
        if ("db_service" in cmdline or "cache_service" in cmdline) and (
            proc.status() != psutil.STATUS_ZOMBIE
        ):
            found.append(proc)
    return found


@pytest.fixture(scope="module")
def storm() -> dict[str, Any]:
    lines: list[str] = []
    doc = asyncio.run(run_scenario(SCENARIO, CONFIG, lines.append))
    assert any("DB killed" in line for line in lines), lines
    return doc


@pytest.fixture(scope="module")
def by_policy(storm: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["policy"]: row for row in storm["policies"]}


def test_document_shape(storm: dict[str, Any]) -> None:
    assert storm["scenario"] == "retry-storm"
    assert [row["policy"] for row in storm["policies"]] == ["exponential", "full"]
    for row in storm["policies"]:
        assert set(row) >= FIELDS, FIELDS - set(row)
        timeline = row["timeline"]
        assert timeline["bin_s"] == 0.1
        lengths = {len(timeline[s]) for s in ("db_arrivals", "cache_attempts", "served")}
        assert len(lengths) == 1, lengths
        assert row["ideal_recovery_s"] == pytest.approx(CONFIG.keys / row["db_capacity_per_s"])
        assert row["db_capacity_per_s"] == pytest.approx(CONFIG.db_capacity_per_s)


def test_nothing_lost_and_every_key_served(storm: dict[str, Any]) -> None:
    for row in storm["policies"]:
        assert row["lost"] == 0, row["policy"]
        assert row["wrong_values"] == 0, row["policy"]
        assert row["client_errors"] == 0, (row["policy"], row["errors"])
        assert row["keys_served"] == CONFIG.keys, row["policy"]
        assert sum(row["timeline"]["served"]) == CONFIG.keys, row["policy"]
        assert row["recovery_s"] is not None and row["recovery_s"] > 0, row["policy"]


def test_every_key_needed_at_least_one_attempt(storm: dict[str, Any]) -> None:
    for row in storm["policies"]:
        assert row["amplification"] >= 1, row["policy"]
        assert row["db_attempts"] == sum(row["timeline"]["cache_attempts"]), row["policy"]
        # The outage makes the cache retry: more attempts than keys, and more than reached the DB.
        assert row["db_attempts"] > CONFIG.keys, row["policy"]
        assert row["db_attempts"] > row["db_queries"], row["policy"]


def test_no_db_arrival_while_the_db_is_down(storm: dict[str, Any]) -> None:
    for row in storm["policies"]:
        timeline = row["timeline"]
        start, end = timeline["outage"]
        assert end - start >= CONFIG.outage_s
        arrivals = timeline["db_arrivals"]
        first_inside = int(start / timeline["bin_s"]) + 1
        last_inside = int(end / timeline["bin_s"]) - 1  # bins strictly inside [start, end]
        assert last_inside > first_inside
        assert arrivals[first_inside : last_inside + 1] == [0] * (last_inside - first_inside + 1)
        # ... while the cache kept trying, and the DB saw the herd before and after.
        assert sum(timeline["cache_attempts"][first_inside : last_inside + 1]) > 0
        assert sum(arrivals[:first_inside]) > 0
        assert sum(arrivals[last_inside + 1 :]) > 0


def test_jitter_flattens_the_wave_after_the_restore(by_policy: dict[str, dict[str, Any]]) -> None:
    exponential = by_policy["exponential"]["post_restore_peak_over_capacity"]
    full = by_policy["full"]["post_restore_peak_over_capacity"]
    assert exponential > full, (exponential, full)
    assert exponential >= 3, exponential


def test_no_lab_process_is_left(storm: dict[str, Any]) -> None:
    assert _lab_processes() == []


def test_bins_count_by_100ms_from_t0() -> None:
    t0 = 1_000_000_000
    times = [t0, t0 + 99_999_999, t0 + 100_000_000, t0 + 250_000_000, t0 - 1, t0 + 10**10]
    assert bins(times, t0, 3) == [2, 1, 1]


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"policies": ("exponential", "nosuch")}, "unknown retry policy nosuch"),
        ({"policies": ()}, "at least one retry policy"),
        ({"keys": 0}, "keys must be in"),
        ({"outage_s": 30.0, "retry_total_s": 20.0}, "must outlast the outage"),
        ({"retry_base_s": 5.0, "retry_cap_s": 1.0}, "retry base <= retry cap"),
    ],
)
def test_bad_configs_are_named_before_anything_starts(changes: dict[str, Any], needle: str) -> None:
    config = RetryStormConfig(**changes)
    assert any(needle in problem for problem in config.problems()), config.problems()
    with pytest.raises(ValueError, match=needle):
        asyncio.run(run_scenario(SCENARIO, config, print))
