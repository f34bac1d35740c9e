"""The stampede's sharpness at the DB, from the DB's exact arrival record."""

from __future__ import annotations

import pytest
from support import observations as _observations

from chaos.engine.measures.db_arrival_spread import db_arrival_rate_per_s, db_arrival_spread_s


def test_the_spread_is_first_to_last_arrival_in_any_order() -> None:
    obs = _observations([5_000_000_000, 3_000_000_000, 3_500_000_000])
    assert db_arrival_spread_s(obs) == 2.0
    assert db_arrival_rate_per_s(obs) == 1.0  # two arrivals after the first, over 2 s


def test_ten_thousand_arrivals_within_a_millisecond_are_ten_million_a_second() -> None:
    obs = _observations([i * 100 for i in range(10_000)])  # 0.1 us apart: 0.9999 ms in all
    assert db_arrival_spread_s(obs) == pytest.approx(0.001, abs=1e-6)
    assert db_arrival_rate_per_s(obs) == pytest.approx(9_999 / 0.0009999, rel=1e-3)


@pytest.mark.parametrize("arrivals", [[], [7], [7, 7]])
def test_no_rate_without_a_spread(arrivals: list[int]) -> None:
    obs = _observations(arrivals)
    assert db_arrival_rate_per_s(obs) is None
    assert db_arrival_spread_s(obs) == (None if not arrivals else 0.0)
