"""The warm-key measures on hand-made observations: the expiry peak and per-key concurrency (from
the DB's records), availability and stale answers (from what users got), and the policy a row
ran with."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from cache_service.settings import CacheSettings
from chaos.engine.herd import HerdResult, Outcome
from chaos.engine.herd_settings import HerdSettings
from chaos.engine.measures.expiry import (
    expiry_peak_per_100ms,
    max_concurrent_db_queries_per_key,
)
from chaos.engine.measures.freshness import freshness, stale_if_error_s
from chaos.engine.measures.stale import (
    answers,
    availability,
    max_stale_age_s,
    stale_age_within_bound,
    stale_served,
)
from chaos.engine.observations import DbCounters, Observations, Outage
from db_service.settings import DbSettings

S = 1_000_000_000
MS = 1_000_000


def _observations(
    outcomes: list[Outcome],
    *,
    db_arrivals: Sequence[int] = (),
    cache: CacheSettings | None = None,
    per_key: int = 0,
    lost: int = 0,
) -> Observations:
    result = HerdResult(
        users=0,
        outcomes=outcomes,
        release_ns=0,
        release_spread_s=0.0,
        lost=Counter({"TimeoutError": lost}),
        wrong_values=0,
        seconds=2.0,
    )
    return Observations(
        variant={},
        db=DbSettings(),
        cache=cache or CacheSettings(),
        herd=HerdSettings(),
        herd_result=result,
        t0_ns=0,
        end_ns=2 * S,
        db_arrivals=list(db_arrivals),
        cache_attempts=[],
        db_counters=DbCounters(max_in_flight_per_key=per_key),
        db_capacity_per_s=200.0,
        outages=[Outage("db", down_ns=S // 2, restart_ns=S, up_ns=S + 100 * MS)],
        journal=[],
        setup={},
        cache_peak_rss_bytes=0,
    )


def _value(at_ms: int, source: str = "HIT", age: float | None = None) -> Outcome:
    return Outcome(0, "k", source, None, 1, 0, at_ms * MS, age)


def _error(at_ms: int) -> Outcome:
    return Outcome(0, "k", None, "UNAVAILABLE", 1, 0, at_ms * MS)


def test_expiry_peak_is_the_largest_100ms_bin_of_db_arrivals_after_the_release() -> None:
    arrivals = [10 * MS, 120 * MS, 150 * MS, 199 * MS, 200 * MS, -5 * MS]  # one before release
    obs = _observations([], db_arrivals=arrivals, per_key=3)
    assert expiry_peak_per_100ms(obs) == 3  # [100, 200) ms holds three
    assert max_concurrent_db_queries_per_key(obs) == 3
    assert expiry_peak_per_100ms(_observations([])) == 0


def test_availability_counts_values_fresh_or_stale_against_errors_and_lost() -> None:
    outcomes = [_value(1), _value(2, "STALE", 1.5), _value(3, "MISS"), _error(4)]
    obs = _observations(outcomes, lost=1)
    assert availability(obs) == round(3 / 5, 5)
    assert availability(_observations([])) is None


def test_stale_answers_their_count_oldest_age_and_bound() -> None:
    outcomes = [_value(1, "STALE", 0.5), _value(2, "STALE", 7.25), _value(3)]
    within = CacheSettings(stale_if_error_s=10.0, stale_while_revalidate_s=1.0)
    obs = _observations(outcomes, cache=within)
    assert (stale_served(obs), max_stale_age_s(obs)) == (2, 7.25)
    assert stale_age_within_bound(obs) is True
    tight = CacheSettings(stale_if_error_s=7.25)
    assert stale_age_within_bound(_observations(outcomes, cache=tight)) is False, "strict bound"
    assert (stale_served(_observations([])), max_stale_age_s(_observations([]))) == (0, 0.0)


def test_answers_per_100ms_split_fresh_stale_and_errors_with_the_outage() -> None:
    outcomes = [_value(50), _value(150, "STALE", 1.0), _error(160), _value(1950)]
    doc = answers(_observations(outcomes))
    assert doc["fresh"][:2] == [1, 0] and doc["fresh"][19] == 1
    assert doc["stale"][:2] == [0, 1] and doc["errors"][:2] == [0, 1]
    assert doc["outage"] == [0.5, 1.1]


def test_the_row_names_its_policy_and_its_stale_if_error_bound() -> None:
    assert freshness(_observations([])) == "ttl"
    both = CacheSettings(beta=1.0, stale_if_error_s=30.0)
    assert freshness(_observations([], cache=both)) == "xfetch+sie"
    assert stale_if_error_s(_observations([], cache=both)) == 30.0
