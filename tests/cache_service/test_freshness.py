"""The freshness policy's arithmetic, with injected random draws and clock readings: XFetch's
threshold, TTL jitter's bounds, the stale bounds (strict: a value is never served at or past
its bound), and the bounds of the settings themselves."""

from __future__ import annotations

import math
import random

import pytest

from cache_service.freshness import Freshness


class Draws(random.Random):
    """A random source that returns the given `random()` values in turn (and counts them)."""

    def __init__(self, *values: float) -> None:
        super().__init__(0)
        self.values = list(values)
        self.drawn = 0

    def random(self) -> float:
        self.drawn += 1
        return self.values.pop(0)


def test_xfetch_refreshes_when_now_minus_delta_beta_ln_u_reaches_the_expiry() -> None:
    policy = Freshness(beta=2.0)
    delta, expiry = 0.5, 100.0
    # random() = 0.75 -> u = 0.25: the draw reaches back delta * beta * -ln(0.25) = 1.386 s.
    reach = delta * 2.0 * -math.log(0.25)
    assert policy.early(expiry - reach + 1e-9, expiry, delta, Draws(0.75))
    assert not policy.early(expiry - reach - 1e-6, expiry, delta, Draws(0.75))


def test_xfetch_draw_of_zero_never_refreshes_a_fresh_value_and_never_fails() -> None:
    """Bug: ln(rand()) with rand() = 0 is -inf (or a math error); u is drawn in (0, 1]."""
    policy = Freshness(beta=1.0)
    # random() = 0 -> u = 1 -> ln(u) = 0: refresh only at or past expiry.
    assert not policy.early(99.999, 100.0, 1.0, Draws(0.0))
    assert policy.early(100.0, 100.0, 1.0, Draws(0.0))


def test_xfetch_probability_at_x_before_expiry_is_exp_of_minus_x_over_delta_beta() -> None:
    policy = Freshness(beta=1.0)
    delta, x = 2.0, 3.0
    threshold = math.exp(-x / (delta * 1.0))  # refresh iff u <= threshold, u = 1 - random()
    assert policy.early(100.0 - x, 100.0, delta, Draws(1 - threshold * 0.999))
    assert not policy.early(100.0 - x, 100.0, delta, Draws(1 - threshold * 1.001))


def test_xfetch_off_with_beta_zero_or_no_recompute_time_draws_nothing() -> None:
    draws = Draws()
    assert not Freshness(beta=0.0).early(100.0, 100.0, 1.0, draws)
    assert not Freshness(beta=1.0).early(100.0, 100.0, 0.0, draws)
    assert draws.drawn == 0


@pytest.mark.parametrize("draw", [0.0, 0.25, 0.5, 0.999999])
def test_ttl_jitter_shortens_by_at_most_its_percentage(draw: float) -> None:
    ttl = Freshness(ttl_jitter_pct=20.0).ttl_s(10.0, Draws(draw))
    assert ttl == pytest.approx(10.0 * (1 - 0.2 * draw))
    assert 8.0 < ttl <= 10.0 or (draw == 0.0 and ttl == 10.0)


def test_ttl_jitter_over_many_draws_stays_in_bounds_and_spreads() -> None:
    policy, rng = Freshness(ttl_jitter_pct=30.0), random.Random(7)
    ttls = [policy.ttl_s(20.0, rng) for _ in range(10_000)]
    assert all(14.0 < t <= 20.0 for t in ttls)
    assert min(ttls) < 14.5 and max(ttls) > 19.5, "the draws cover the range"


def test_no_jitter_is_the_ttl_and_draws_nothing() -> None:
    draws = Draws()
    assert Freshness().ttl_s(10.0, draws) == 10.0 and draws.drawn == 0


def test_stale_bounds_are_strict_and_only_after_expiry() -> None:
    policy = Freshness(stale_while_revalidate_s=5.0, stale_if_error_s=30.0)
    assert policy.stale_window_s == 30.0
    assert policy.while_revalidating(0.0) and policy.while_revalidating(4.999)
    assert not policy.while_revalidating(5.0), "at the bound: no longer served"
    assert not policy.while_revalidating(-0.001), "not expired: not stale"
    assert policy.if_error(29.999) and not policy.if_error(30.0)
    off = Freshness()
    assert not off.while_revalidating(0.0) and not off.if_error(0.0)
    assert off.stale_window_s == 0.0


def test_names_say_what_is_on() -> None:
    assert Freshness().name == "ttl"
    assert Freshness(beta=1).name == "xfetch"
    assert Freshness(ttl_jitter_pct=10, stale_while_revalidate_s=1).name == "jitter+swr"
    assert Freshness(stale_if_error_s=30).name == "sie"


def test_problems_name_the_field_and_its_range() -> None:
    bad = Freshness(
        stale_while_revalidate_s=-1, stale_if_error_s=math.inf, beta=101, ttl_jitter_pct=95
    )
    problems = bad.problems()
    assert [p.split()[0] for p in problems] == [
        "stale_while_revalidate_s",
        "stale_if_error_s",
        "beta",
        "ttl_jitter_pct",
    ]
    assert "[0, 90]" in problems[3]
    assert Freshness(1, 2, 3, 4).problems() == []
