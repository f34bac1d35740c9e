"""The nearest-rank quantile the herd's summary and the benchmarks share."""

from __future__ import annotations

import pytest

from herdlab.stats import quantile


@pytest.mark.parametrize(
    ("q", "expected"), [(0.0, 1.0), (0.5, 5.0), (0.51, 6.0), (0.99, 10.0), (1.0, 10.0)]
)
def test_nearest_rank(q: float, expected: float) -> None:
    assert quantile([float(v) for v in range(1, 11)], q) == expected


def test_no_values_is_zero() -> None:
    assert quantile([], 0.99) == 0.0
