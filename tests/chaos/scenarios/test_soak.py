"""The soak: a short run under chaos (the DB, redis and the cache replicas killed and paused, the
DB's link cut and reset) loses nothing, serves nothing wrong or stale, leaves nothing in flight,
finds every lab process back within 10% of its memory and file descriptors, leaves nothing
running; and the staleness check it relies on does fail when a value older than the TTL is served
(shown over real gRPC with a restored DB)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import psutil
import pytest
from conftest import running_stack
from support import StackClients

from chaos.engine.actions.soak_cycles import STEPS
from chaos.engine.freshness_oracle import Freshness
from chaos.engine.runner import run_scenario
from chaos.scenarios.soak import SCENARIO, SoakConfig
from herdlab.values import value_for
from protos import cache_pb2

TYPED_ERRORS = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"}


async def test_short_soak_loses_nothing_and_gives_back_every_fd() -> None:
    lines: list[str] = []
    doc = await run_scenario(SCENARIO, SoakConfig(cycles=3), lines.append)

    assert doc["cycles"] == 3 and len([ln for ln in lines if ln.startswith("cycle ")]) == 3
    assert (doc["db_restarts"], doc["cache_restarts"], doc["db_version_last"]) == (3, 1, 4)
    assert doc["redis_restarts"] == 3
    assert set(doc["recovery_s"]) == set(STEPS)  # every part of the lab was faulted
    assert doc["sent"] > 0 and doc["ok"] > 0 and doc["probe"]["ok"] > 0
    assert doc["lost"] == 0, doc["lost_by_cause"]
    assert set(doc["errors"]) <= TYPED_ERRORS, doc["errors"]
    assert doc["sent"] == doc["ok"] + sum(doc["errors"].values())
    assert doc["wrong_values"] == 0
    assert doc["stale_values"] == 0
    assert doc["inflight_after"] == 0
    measured = doc["cache_measured"]
    assert measured["same_process"] and measured["connections_settled"], measured
    processes = doc["process_resources"]
    assert set(processes) == {"db", "redis", "wire", "cache-1", "cache-2"}
    assert all(p["settled"] for p in processes.values()), processes
    assert doc["resource_drift"] <= 0.1, processes
    pids = {r[moment]["pid"] for r in processes.values() for moment in ("first", "last")}
    assert not [p for p in pids if psutil.pid_exists(p)], "the soak's stack is torn down"


def test_soak_config_problems() -> None:
    assert SoakConfig(cycles=3).problems() == []
    assert SoakConfig(cycles=3).cache_kills == 1
    problems = SoakConfig(cycles=0, users=0, ttl_s=0.0, outage_s=-1.0).problems()
    assert any("cycles must be" in p for p in problems)
    assert any("users must be" in p for p in problems)
    assert any("ttl must be" in p for p in problems)
    assert any("outage must be" in p for p in problems)
    assert (
        "cache kill cycles must be in 0..cycles-1 (the last cycle keeps its cache), got 2"
        in SoakConfig(cycles=2, cache_kill_cycles=2).problems()
    )
    assert SoakConfig(cycles=10, warmup_cycles=6).problems() == [
        "warm-up cycles must be in 1..(cycles - cache kill cycles), got 6"
    ]
    assert (SoakConfig(cycles=50).cache_kills, SoakConfig(cycles=50).warmup) == (25, 5)


async def test_run_soak_refuses_a_bad_config() -> None:
    with pytest.raises(ValueError, match=r"cycles must be in 1\.\.10000, got 0"):
        await run_scenario(SCENARIO, SoakConfig(cycles=0), print)


def test_freshness_floor_follows_each_version_after_a_ttl() -> None:
    fresh = Freshness(ttl_s=1.0)
    assert fresh.floor(0.0) == 1
    fresh.serving(2, since=10.0)
    # Within a TTL of the new DB's start the old version may still be served from the store...
    assert not fresh.is_stale(1, sent_at=10.5)
    # ...but not after, and a key never read before must come from the new DB at once.
    assert fresh.is_stale(1, sent_at=11.0)
    assert fresh.is_stale(1, sent_at=10.5, never_read=True)
    assert not fresh.is_stale(2, sent_at=10.5, never_read=True)
    fresh.serving(3, since=20.0)
    assert fresh.floor(20.5) == 2 and fresh.floor(21.0) == 3
    assert fresh.floor(-math.inf) == 1


async def test_staleness_is_observable_through_a_restored_db(tmp_path: Path) -> None:
    """A DB restored with a new data version makes an old cached value visible as old: with a
    cache whose TTL (1h) is longer than the checker allows (0), the check flags the cached v1
    while a key never read before comes back as v2. The check can fail."""
    with running_stack(tmp_path, (), ["--ttl", "1h"]) as (stack, info):
        async with StackClients(info) as lab:
            first = await lab.cache_get("old")
            assert (first.version, first.source) == (1, cache_pb2.MISS)
            stack.kill("db")
            stack.restore("db", ["--data-version", "2"])
            fresh = Freshness(ttl_s=0.0)
            fresh.serving(2, since=time.monotonic())

            sent_at = time.monotonic()
            cached = await lab.cache_get("old")
            new = await lab.cache_get("new")
            assert (cached.version, cached.source) == (1, cache_pb2.HIT)
            assert cached.value == value_for("old", 1)
            assert fresh.is_stale(cached.version, sent_at), "an old value must be flagged"
            assert new.version == 2 and new.value == value_for("new", 2)
            assert not fresh.is_stale(new.version, sent_at, never_read=True)
