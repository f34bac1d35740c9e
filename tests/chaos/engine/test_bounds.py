"""`out_of_range`: the range checked is the range its error shows."""

from __future__ import annotations

import math

import pytest

from chaos.engine.bounds import out_of_range


@pytest.mark.parametrize(
    ("name", "value", "allowed", "problem"),
    [
        ("keys", 0, "1..10000", "keys must be in 1..10000, got 0"),
        ("rate", 0.0, "(0, 5000]/s", "rate must be in (0, 5000]/s, got 0"),
        ("ttl", 0.5, "[1s, 10m]", "ttl must be in [1s, 10m], got 0.5s"),
        ("outage", 0.01, "[100ms, 10m]", "outage must be in [100ms, 10m], got 0.01s"),
        ("stale", 86401.0, "(0, 86400s]", "stale must be in (0, 86400s], got 86401s"),
        ("jitter", 95.0, "(0, 90]%", "jitter must be in (0, 90]%, got 95"),
        ("beta", math.nan, "(0, 100]", "beta must be in (0, 100], got nan"),
        ("spike", 0.05, "(50ms, 60s]", "spike must be in (50ms, 60s], got 0.05s"),
    ],
)
def test_a_value_outside_is_one_problem_in_the_ranges_words(
    name: str, value: float, allowed: str, problem: str
) -> None:
    assert out_of_range(name, value, allowed) == [problem]


@pytest.mark.parametrize(
    ("value", "allowed"),
    [
        (1, "1..10000"),
        (10000, "1..10000"),
        (0.1, "[100ms, 10m]"),
        (600.0, "(0, 10m]"),
        (0.0, "[0, 60s]"),
    ],
)
def test_the_ends_a_range_allows_are_inside(value: float, allowed: str) -> None:
    assert out_of_range("x", value, allowed) == []


def test_another_verb() -> None:
    assert out_of_range("the partition", 0.0, "(0, 600s]", must="must last") == [
        "the partition must last (0, 600s], got 0s"
    ]


def test_a_text_that_is_no_range_is_refused() -> None:
    with pytest.raises(ValueError, match="not a range"):
        out_of_range("x", 1, "1 to 10")
