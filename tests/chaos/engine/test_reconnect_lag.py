"""The reconnect lag, from an injected DB arrival record and outage: restore to first arrival."""

from __future__ import annotations

import pytest
from support import observations

from chaos.engine.measures.reconnect_lag import reconnect_lag_s
from chaos.engine.observations import Outage

S = 1_000_000_000


def _kill(down: float, restart: float, up: float) -> Outage:
    return Outage("db", down_ns=int(down * S), restart_ns=int(restart * S), up_ns=int(up * S))


def test_the_lag_runs_from_listening_again_to_the_first_arrival_after_it() -> None:
    arrivals = [1 * S, 2 * S, int(19.25 * S), 20 * S]  # before the kill, then after the restore
    assert reconnect_lag_s(observations(arrivals, [_kill(5, 15, 15.1)])) == 4.15


def test_a_graceful_stop_and_restore_is_a_restore_too() -> None:
    stop = Outage("db", down_ns=5 * S, restart_ns=15 * S, up_ns=int(15.1 * S), kind="stop")
    assert reconnect_lag_s(observations([1 * S, int(15.6 * S)], [stop])) == 0.5


def test_an_arrival_that_beat_the_listening_probe_is_no_lag() -> None:
    arrivals = [int(15.098 * S), 16 * S]
    assert reconnect_lag_s(observations(arrivals, [_kill(5, 15, 15.1)])) == 0.0


@pytest.mark.parametrize(
    "outages",
    [
        [],
        [Outage("cache", down_ns=5 * S, restart_ns=15 * S, up_ns=15 * S)],
        [Outage("db", down_ns=5 * S, up_ns=15 * S, kind="partition")],
        [Outage("db", down_ns=5 * S)],  # never restored
    ],
)
def test_no_lag_without_a_db_restore(outages: list[Outage]) -> None:
    assert reconnect_lag_s(observations([1 * S, 20 * S], outages)) is None


def test_no_lag_when_nothing_reached_the_restored_db() -> None:
    assert reconnect_lag_s(observations([1 * S, 2 * S], [_kill(5, 15, 15.1)])) is None


def test_only_the_first_db_kill_counts() -> None:
    outages = [_kill(5, 15, 15.5), _kill(30, 40, 40.1)]
    assert reconnect_lag_s(observations([16 * S, 41 * S], outages)) == 0.5
