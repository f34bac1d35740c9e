"""The shipped reconnect-storm and soak experiments load as files (and as their smoke runs), and
the pieces they were split into compute what they claim, without a stack: the channelz reader's
timestamps, de-duplication and gaps, the times after the cache's return, and the soak-cycles
action's words."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from cache_service.settings import CacheSettings
from chaos.engine import spec
from chaos.engine.actions.soak_cycles import Cycles, SoakCycles
from chaos.engine.herd import HerdResult, Outcome
from chaos.engine.herd_settings import HerdSettings
from chaos.engine.measures.cache_return import (
    channel_ready_s,
    failed_after_restore,
    time_to_all_channels_ready_s,
    time_to_first_success_s,
)
from chaos.engine.observations import DbCounters, Observations, Outage
from chaos.engine.observers.channelz import ReconnectProbe, parse_timestamp
from chaos.engine.shipped import path_of
from chaos.scenarios.reconnect_storm import ReconnectStormConfig
from chaos.scenarios.soak import SoakConfig
from db_service.settings import DbSettings

S = 1_000_000_000


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("reconnect-storm", ReconnectStormConfig().params()),
        ("soak", SoakConfig().params()),
        ("soak", SoakConfig(cycles=50).params()),
    ],
)
def test_shipped_file_loads_as_is_with_its_smoke_and_with_a_config(
    name: str, params: dict[str, Any]
) -> None:
    path = path_of(name)
    plain = spec.load(path)
    assert plain.smoke, f"{name} has no [smoke] table"
    smoke = spec.load(path, plain.smoke)
    assert smoke.kind == plain.kind == name
    assert spec.load(path, params).params == {**plain.params, **params}


def test_the_smoke_runs_are_smaller() -> None:
    storm = spec.load(path_of("reconnect-storm"))
    storm_smoke = spec.load(path_of("reconnect-storm"), storm.smoke)
    assert storm_smoke.herd.users < storm.herd.users
    assert len(storm_smoke.combinations()) == 4
    soak = spec.load(path_of("soak"))
    (step,) = spec.load(path_of("soak"), soak.smoke).timeline
    assert isinstance(step.action, SoakCycles) and step.action.plan.cycles == 3


def test_channelz_timestamps_are_ns_since_the_epoch() -> None:
    assert parse_timestamp("1970-01-01T00:00:01.5Z") == 1_500_000_000
    assert parse_timestamp("1970-01-01T00:00:02Z") == 2 * S
    assert parse_timestamp("2026-01-02T03:04:05.123456789Z") % S == 123_456_789


def _event(t_ns: int, description: str) -> dict[str, Any]:
    seconds, fraction = divmod(t_ns, S)
    stamp = f"1970-01-01T00:00:{seconds:02d}.{fraction:09d}Z"
    return {"timestamp": stamp, "description": description}


CONNECTING = "Subchannel connectivity state changed to CONNECTING"


def test_reader_keeps_each_connecting_event_once_across_reads() -> None:
    """Bug it pins: channelz renders an event's time afresh on each read, a few ns apart; the
    same attempt must not count twice."""
    probe = ReconnectProbe("127.0.0.1:1")  # no channel to it: only what is handed in is read
    first = [_event(1 * S, CONNECTING), _event(1 * S + 5_000, "READY")]
    again = [_event(1 * S + 7, CONNECTING), _event(2 * S, CONNECTING)]
    probe.read_subchannel(9, lambda _id: first)
    probe.read_subchannel(9, lambda _id: again)
    assert probe.attempt_times() == [1 * S, 2 * S]
    assert probe.gaps == 0


def test_reader_counts_a_gap_when_nothing_seen_before_is_left() -> None:
    probe = ReconnectProbe("127.0.0.1:1")  # no channel to it: only what is handed in is read
    probe.read_subchannel(1, lambda _id: [_event(1 * S, CONNECTING)])
    probe.read_subchannel(1, lambda _id: [_event(5 * S, CONNECTING)])
    assert probe.gaps == 1 and probe.attempt_times() == [1 * S, 5 * S]


def _observations(outcomes: list[Outcome], events: list[tuple[int, int, str]]) -> Observations:
    herd = HerdSettings(users=2, channels=2)
    result = HerdResult(
        users=2,
        outcomes=outcomes,
        release_ns=0,
        release_spread_s=0.0,
        lost=Counter(),
        wrong_values=0,
        seconds=10.0,
        channel_events=events,
    )
    return Observations(
        variant={},
        db=DbSettings(),
        cache=CacheSettings(),
        herd=herd,
        herd_result=result,
        t0_ns=0,
        end_ns=10 * S,
        db_arrivals=[],
        cache_attempts=[],
        db_counters=DbCounters(),
        db_capacity_per_s=1.0,
        outages=[Outage("cache", down_ns=1 * S, restart_ns=3 * S, up_ns=4 * S, serving_ns=5 * S)],
        journal=[],
        setup={},
        cache_peak_rss_bytes=0,
    )


def test_times_after_the_cache_is_back_run_from_the_outage_s_end() -> None:
    outcomes = [
        Outcome(0, "k", "HIT", None, 1, 0, 2 * S),  # before the kill
        Outcome(1, "k", None, "UNAVAILABLE", 1, 0, int(4.2 * S)),  # failed after the return
        Outcome(0, "k", "MISS", None, 1, 0, int(4.5 * S)),  # first success after it
    ]
    events = [(0, 0, "READY"), (0, 1, "READY"), (int(4.3 * S), 0, "READY")]
    obs = _observations(outcomes, events)
    assert time_to_first_success_s(obs) == 0.5
    assert failed_after_restore(obs) == 1
    assert time_to_all_channels_ready_s(obs) is None  # channel 1 never came back
    assert channel_ready_s(obs) == [0.3, None]
    events.append((int(6 * S), 1, "READY"))
    assert time_to_all_channels_ready_s(_observations(outcomes, events)) == 2.0


@pytest.mark.parametrize(
    ("words", "needle"),
    [
        ("3 outage 500ms cache-kills 1", "usage: soak-cycles"),
        ("3 outage 500ms cache-kills 1 warmup x", "usage: soak-cycles"),
        ("3 outage 500ms cache-kills 3 warmup 1", "cache kill cycles must be in 0..cycles-1"),
        ("3 outage 2m cache-kills 1 warmup 1", "outage must be in (0, 60s]"),
    ],
)
def test_soak_cycles_words_are_checked(words: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        SoakCycles.parse(words.split())


def test_soak_cycles_reads_the_long_lived_cache_after_its_warm_up() -> None:
    action = SoakCycles.parse(["10", "outage", "500ms", "cache-kills", "5", "warmup", "2"])
    assert isinstance(action, SoakCycles)
    assert action.plan == Cycles(cycles=10, outage_s=0.5, cache_kills=5, warmup=2)
    assert action.plan.from_cycle == 7
