"""The benchmarks' interval of a median: the order statistics it picks and their coverage."""

from __future__ import annotations

import math
import random

import pytest

from benchmarks.stats import median_interval


def test_too_few_values_have_no_95_percent_interval() -> None:
    # With 5 values even [min, max] misses the median with probability 2/32 > 5%.
    assert median_interval([1.0, 2.0, 3.0, 4.0, 5.0]) is None
    assert median_interval([]) is None


def test_six_values_give_the_extremes() -> None:
    # [min, max] holds the median unless all six fall on one side: 1 - 2/64 = 0.969.
    assert median_interval([6.0, 1.0, 5.0, 2.0, 4.0, 3.0]) == [1.0, 6.0]


def test_twenty_five_values_give_the_eighth_from_each_end() -> None:
    # P(Binomial(25, 1/2) <= 7) = 0.0216: coverage 0.957; the 9th would give 0.892.
    values = [float(v) for v in range(25, 0, -1)]
    assert median_interval(values) == [8.0, 18.0]
    assert median_interval(values, confidence=0.85) == [9.0, 17.0]


def test_coverage_reaches_the_confidence_on_skewed_values() -> None:
    # Exponential samples (true median ln 2): the interval holds it at least 95% of the time,
    # give or take the 2,000 trials' own spread.
    rng = random.Random(7)
    trials = 2_000
    held = 0
    for _ in range(trials):
        interval = median_interval([rng.expovariate(1.0) for _ in range(25)])
        assert interval is not None
        held += interval[0] <= math.log(2) <= interval[1]
    assert held / trials >= 0.94


@pytest.mark.parametrize("confidence", [0.0, 1.0, 1.5])
def test_a_confidence_outside_zero_to_one_is_refused(confidence: float) -> None:
    with pytest.raises(ValueError, match="confidence"):
        median_interval([1.0] * 10, confidence)
