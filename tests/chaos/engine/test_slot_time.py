"""`slot_time_amplification` from a trial's observations: slot-seconds over keys x service."""

from __future__ import annotations

from collections import Counter

from cache_service.settings import CacheSettings
from chaos.engine.herd import HerdResult, Outcome
from chaos.engine.herd_settings import HerdSettings
from chaos.engine.measures.slot_time import slot_time_amplification
from chaos.engine.observations import DbCounters, Observations
from db_service.settings import DbSettings
from protos import admin_pb2


def _observations(
    slot_seconds: float, keys: int, latency_s: float, spread_s: float
) -> Observations:
    return Observations(
        variant={},
        db=DbSettings(latency_s=latency_s, spread_s=spread_s),
        cache=CacheSettings(),
        herd=HerdSettings(keys=keys),
        herd_result=HerdResult(
            keys,
            [Outcome(i, f"k{i}", "MISS", None, 1, 0, 0) for i in range(keys)],
            0,
            0.0,
            Counter(),
            0,
            0.0,
        ),
        t0_ns=0,
        end_ns=0,
        db_arrivals=[],
        cache_attempts=[],
        db_counters=DbCounters(slot_seconds=slot_seconds),
        db_capacity_per_s=200.0,
        outages=[],
        journal=[],
        setup={},
        cache_peak_rss_bytes=0,
    )


def test_each_key_served_once_at_the_service_time_is_one() -> None:
    assert slot_time_amplification(_observations(100.0, 1000, 0.1, 0.0)) == 1.0


def test_the_mean_service_time_counts_half_the_spread() -> None:
    # 1,000 keys x (100 ms + 20 ms / 2) = 110 slot-seconds at the least.
    assert slot_time_amplification(_observations(220.0, 1000, 0.1, 0.02)) == 2.0


def test_work_for_callers_that_left_shows_above_one() -> None:
    assert slot_time_amplification(_observations(150.0, 1000, 0.1, 0.0)) == 1.5


def test_a_db_with_no_service_time_has_no_ratio() -> None:
    assert slot_time_amplification(_observations(0.0, 10, 0.0, 0.0)) is None


def test_counters_leave_out_what_setup_cost_before_the_release() -> None:
    counters = DbCounters()
    at_release = admin_pb2.DbState(
        completed=1000, slot_seconds=100.0, dropped_by_stage={"queue": 2}
    )
    before_kill = admin_pb2.DbState(
        completed=1300, slot_seconds=130.0, dropped_by_stage={"queue": 5, "deadline": 1}
    )
    counters.add(before_kill, at_release)
    restored = admin_pb2.DbState(completed=50, slot_seconds=5.0, dropped_by_stage={"codel": 4})
    counters.add(restored)
    assert counters.completed == 350
    assert counters.slot_seconds == 35.0
    assert counters.dropped_by_stage == {"queue": 3, "deadline": 1, "codel": 4}
