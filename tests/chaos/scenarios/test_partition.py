"""The partition scenario's pieces without a stack: its measures on hand-made observations (a
partition timed as an outage, channel state changes, errors), the shipped file with its smoke and
with the CLI's configuration, and the selectors of its hypothesis matching the rows they mean."""

from __future__ import annotations

from collections import Counter

import pytest

from cache_service.settings import CacheSettings
from chaos.engine import spec
from chaos.engine.herd import HerdResult, Outcome
from chaos.engine.herd_settings import HerdSettings
from chaos.engine.measures.fault_notice import (
    all_ready_after_heal_s,
    fault,
    keepalive,
    noticed_s,
    stayed_ready,
)
from chaos.engine.observations import DbCounters, Observations, Outage
from chaos.engine.shipped import path_of
from chaos.scenarios.partition import PartitionConfig
from db_service.settings import DbSettings

S = 1_000_000_000


def _observations(
    outcomes: list[Outcome],
    events: list[tuple[int, int, str]],
    *,
    kind: str = "partition",
    keepalive_s: float = 0.0,
) -> Observations:
    result = HerdResult(
        users=2,
        outcomes=outcomes,
        release_ns=0,
        release_spread_s=0.0,
        lost=Counter(),
        wrong_values=0,
        seconds=20.0,
        channel_events=events,
    )
    return Observations(
        variant={},
        db=DbSettings(),
        cache=CacheSettings(),
        herd=HerdSettings(users=2, channels=2, keepalive_s=keepalive_s),
        herd_result=result,
        t0_ns=0,
        end_ns=20 * S,
        db_arrivals=[],
        cache_attempts=[],
        db_counters=DbCounters(),
        db_capacity_per_s=1.0,
        outages=[Outage("cache", down_ns=1 * S, up_ns=11 * S, kind=kind)],
        journal=[],
        setup={},
        cache_peak_rss_bytes=0,
    )


def test_a_partition_noticed_by_deadlines_with_channels_ready_throughout() -> None:
    outcomes = [
        Outcome(0, "k", "HIT", None, 1, 0, int(0.5 * S)),  # before the fault: not counted
        Outcome(1, "k", None, "DEADLINE_EXCEEDED", 1, 0, 6 * S),
        Outcome(0, "k", None, "DEADLINE_EXCEEDED", 1, 0, 7 * S),
    ]
    events = [(0, 0, "READY"), (0, 1, "READY")]  # nothing told the channels
    obs = _observations(outcomes, events)
    assert fault(obs) == "partition" and keepalive(obs) is False
    assert noticed_s(obs) == 5.0
    assert stayed_ready(obs) == 2
    # Bug it pins: a channel READY on a dead connection is not "READY again after the heal".
    assert all_ready_after_heal_s(obs) is None


def test_with_keepalive_every_channel_reconnects_and_is_timed_from_the_heal() -> None:
    outcomes = [Outcome(0, "k", None, "UNAVAILABLE", 1, 0, int(2.5 * S))]
    events = [
        (0, 0, "READY"),
        (0, 1, "READY"),
        (int(2.5 * S), 0, "IDLE"),
        (int(2.6 * S), 1, "TRANSIENT_FAILURE"),
        (int(11.5 * S), 0, "READY"),
        (int(12.0 * S), 1, "READY"),
    ]
    obs = _observations(outcomes, events, keepalive_s=1.0)
    assert keepalive(obs) is True
    assert noticed_s(obs) == 1.5
    assert stayed_ready(obs) == 0
    assert all_ready_after_heal_s(obs) == 1.0


def test_a_kill_is_a_fault_too() -> None:
    obs = _observations([Outcome(0, "k", None, "UNAVAILABLE", 1, 0, int(1.1 * S))], [], kind="kill")
    assert fault(obs) == "kill" and noticed_s(obs) == 0.1


@pytest.mark.parametrize("params", [None, "smoke", PartitionConfig().params()])
def test_the_shipped_file_loads_and_its_hypothesis_selects_rows(params: object) -> None:
    path = path_of("partition")
    plain = spec.load(path)
    chosen = plain.smoke if params == "smoke" else params
    experiment = spec.load(path, chosen) if isinstance(chosen, dict) else plain
    assert experiment.kind == "partition" and experiment.wire.proxied() == ("cache",)
    combinations = experiment.combinations()
    assert len(combinations) == 4
    for expectation in experiment.expect:
        selected = [
            c for c in combinations if all(c[k] == v for k, v in expectation.variant.items())
        ]
        assert selected, expectation  # a selector that matches nothing checks nothing
    faults = {experiment.wire_for(c).fault for c in combinations}
    assert faults == {"kill", "partition"}


def test_the_smoke_run_is_smaller() -> None:
    plain = spec.load(path_of("partition"))
    smoke = spec.load(path_of("partition"), plain.smoke)
    assert smoke.herd.users < plain.herd.users and smoke.herd.channels < plain.herd.channels


def test_bad_wire_settings_name_the_field() -> None:
    text = path_of("partition").read_text().replace('proxy = "cache"', 'proxy = "redis"')
    with pytest.raises(spec.ExperimentError, match=r"stack.wire: proxy must name db and/or cache"):
        spec.parse(text, "p.toml")


def test_the_wire_keys_are_keys_of_stack_and_of_stack_wire_alike() -> None:
    text = path_of("partition").read_text()
    nested = text.replace('[stack]\nproxy = "cache"\n', '[stack.wire]\nproxy = "cache"\n')
    assert nested != text
    assert spec.parse(nested, "p.toml").wire == spec.parse(text, "p.toml").wire
    both = text.replace(
        '[stack]\nproxy = "cache"\n', '[stack]\nproxy = "cache"\nwire = { proxy = "db" }\n'
    )
    with pytest.raises(spec.ExperimentError, match=r"stack.proxy: given in \[stack\] and in"):
        spec.parse(both, "p.toml")


def test_the_first_connects_gate_needs_the_cache_behind_the_proxy() -> None:
    text = (
        path_of("partition")
        .read_text()
        .replace('proxy = "cache"', 'proxy = "db"\nconnect_pending = 8')
    )
    with pytest.raises(spec.ExperimentError, match=r"connect_pending needs the proxy in front"):
        spec.parse(text, "p.toml")
