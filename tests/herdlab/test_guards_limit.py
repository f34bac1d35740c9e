"""The `limit` guard: slots, FIFO waiting bounded by the caller's timeout and by the queue, clean
cancellation (the handover race included), and the AIMD and Vegas algorithms' moves on chosen
samples. Waiters are gated on the guard's own state through bounded loop steps; nothing sleeps
for timing."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest

from herdlab.guards import GuardRejected, Outcome, Permit, parse_guard_set
from herdlab.guards.limit import ConcurrencyLimit
from herdlab.guards.limit_algorithms import AIMDLimit, StaticLimit, VegasLimit, vegas_log10


async def settle(until: Callable[[], bool], max_steps: int = 1_000) -> None:
    """Yields to the event loop until `until()` holds (a bounded number of loop steps)."""
    for _ in range(max_steps):
        if until():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached within the step bound")


def static(n: int, queue: int = 100) -> ConcurrencyLimit:
    return ConcurrencyLimit(StaticLimit(n), queue=queue)


def waiters(
    guard: ConcurrencyLimit, n: int, order: list[int], timeout_s: float = 60.0
) -> list[asyncio.Task[Permit]]:
    """`n` tasks that each wait for a slot and note their number in `order` when they get it."""

    async def one(i: int) -> Permit:
        permit = await guard.acquire(retry=False, timeout_s=timeout_s)
        order.append(i)
        return permit

    return [asyncio.create_task(one(i)) for i in range(n)]


async def test_free_slots_are_taken_at_once() -> None:
    guard = static(2)
    await guard.acquire(retry=False, timeout_s=0.0)
    await guard.acquire(retry=True, timeout_s=0.0)
    assert guard.state() == {"limit": 2.0, "in_flight": 2.0, "waiting": 0.0}


async def test_waiters_get_slots_in_arrival_order() -> None:
    guard = static(1)
    holder = await guard.acquire(retry=False, timeout_s=1.0)
    order: list[int] = []
    tasks = waiters(guard, 3, order)
    await settle(lambda: guard.waiting == 3)
    holder.done(Outcome.OK, 0.1)
    for expected in range(3):
        permit = await tasks[expected]
        assert order == list(range(expected + 1))
        assert guard.in_flight == 1
        permit.done(Outcome.OK, 0.1)
    assert guard.state() == {"limit": 1.0, "in_flight": 0.0, "waiting": 0.0}


async def test_a_newcomer_does_not_jump_the_queue() -> None:
    guard = static(1)
    holder = await guard.acquire(retry=False, timeout_s=1.0)
    order: list[int] = []
    (first,) = waiters(guard, 1, order)
    await settle(lambda: guard.waiting == 1)
    holder.done(Outcome.OK, 0.1)
    with pytest.raises(GuardRejected):
        await guard.acquire(retry=False, timeout_s=0.0)
    (await first).done(Outcome.OK, 0.1)


async def test_a_waiter_gives_up_at_its_timeout() -> None:
    guard = static(1)
    await guard.acquire(retry=False, timeout_s=1.0)
    with pytest.raises(GuardRejected) as refused:
        await guard.acquire(retry=False, timeout_s=0.01)
    assert str(refused.value) == "limit: no slot free within 0.01s (1 slots)"
    assert guard.state() == {"limit": 1.0, "in_flight": 1.0, "waiting": 0.0}
    assert guard.rejected == 1


async def test_no_time_left_is_refused_without_waiting() -> None:
    guard = static(1)
    await guard.acquire(retry=False, timeout_s=1.0)
    with pytest.raises(GuardRejected, match=r"^limit: no time left to wait for one of 1 slots$"):
        await guard.acquire(retry=False, timeout_s=0.0)
    assert guard.waiting == 0


async def test_an_unbounded_wait_is_a_programming_error() -> None:
    guard = static(1)
    with pytest.raises(ValueError, match=r"^guard 'limit': timeout_s must be finite, got inf$"):
        await guard.acquire(retry=False, timeout_s=float("inf"))


async def test_a_full_queue_refuses_at_once() -> None:
    guard = static(1, queue=1)
    holder = await guard.acquire(retry=False, timeout_s=1.0)
    order: list[int] = []
    (waiting,) = waiters(guard, 1, order)
    await settle(lambda: guard.waiting == 1)
    with pytest.raises(GuardRejected, match=r"^limit: queue full \(1 waiting for 1 slots\)$"):
        await guard.acquire(retry=False, timeout_s=60.0)
    holder.done(Outcome.OK, 0.1)
    (await waiting).done(Outcome.OK, 0.1)
    assert guard.in_flight == 0 and guard.rejected == 1


async def test_queue_zero_fails_fast() -> None:
    guard = static(1, queue=0)
    await guard.acquire(retry=False, timeout_s=1.0)
    with pytest.raises(GuardRejected, match="queue full"):
        await guard.acquire(retry=False, timeout_s=60.0)


async def test_a_cancelled_waiter_leaves_the_queue_without_a_slot() -> None:
    guard = static(1)
    holder = await guard.acquire(retry=False, timeout_s=1.0)
    order: list[int] = []
    tasks = waiters(guard, 2, order)
    await settle(lambda: guard.waiting == 2)
    tasks[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await tasks[0]
    assert guard.waiting == 1
    holder.done(Outcome.OK, 0.1)
    (await tasks[1]).done(Outcome.OK, 0.1)
    assert order == [1]
    assert guard.state() == {"limit": 1.0, "in_flight": 0.0, "waiting": 0.0}


async def test_a_slot_handed_over_in_the_same_tick_as_a_cancel_is_given_back() -> None:
    """Bug: the slot handed to a waiter whose task is cancelled before it resumes leaks."""
    guard = static(1)
    holder = await guard.acquire(retry=False, timeout_s=1.0)
    order: list[int] = []
    tasks = waiters(guard, 2, order)
    await settle(lambda: guard.waiting == 2)
    holder.done(Outcome.OK, 0.1)  # hands the slot to task 0 ...
    tasks[0].cancel()  # ... which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await tasks[0]
    (await tasks[1]).done(Outcome.OK, 0.1)
    assert order == [1]
    assert guard.state() == {"limit": 1.0, "in_flight": 0.0, "waiting": 0.0}


async def test_a_permit_reports_once() -> None:
    guard = static(1)
    permit = await guard.acquire(retry=False, timeout_s=1.0)
    permit.done(Outcome.OK, 0.1)
    with pytest.raises(RuntimeError, match="exactly once"):
        permit.done(Outcome.OK, 0.1)
    assert guard.in_flight == 0


async def test_a_grown_limit_hands_over_every_slot_it_frees() -> None:
    guard = ConcurrencyLimit(AIMDLimit(initial=1), queue=10)
    holder = await guard.acquire(retry=False, timeout_s=1.0)
    order: list[int] = []
    tasks = waiters(guard, 2, order)
    await settle(lambda: guard.waiting == 2)
    holder.done(Outcome.OK, 0.1)  # in flight 1 of limit 1: 1 * 2 >= 1, so limit 2
    permits = [await t for t in tasks]
    assert order == [0, 1] and guard.state()["limit"] == 2.0
    for permit in permits:
        permit.done(Outcome.IGNORE, 0.0)
    assert guard.state() == {"limit": 2.0, "in_flight": 0.0, "waiting": 0.0}


async def test_a_smaller_limit_takes_effect_as_calls_end() -> None:
    guard = ConcurrencyLimit(AIMDLimit(initial=3, backoff=0.5), queue=10)
    permits = [await guard.acquire(retry=False, timeout_s=1.0) for _ in range(3)]
    permits[0].done(Outcome.OVERLOAD, 0.1)  # limit 3 -> 1, two still in flight
    order: list[int] = []
    (waiting,) = waiters(guard, 1, order)
    await settle(lambda: guard.waiting == 1)
    permits[1].done(Outcome.IGNORE, 0.0)
    assert guard.waiting == 1, "in flight 1 of limit 1: no slot yet"
    permits[2].done(Outcome.IGNORE, 0.0)
    (await waiting).done(Outcome.IGNORE, 0.0)
    assert guard.state() == {"limit": 1.0, "in_flight": 0.0, "waiting": 0.0}


def test_aimd_moves() -> None:
    aimd = AIMDLimit(initial=20, min_limit=1, max_limit=22, backoff=0.9)
    aimd.on_sample(0.1, 20, dropped=True)
    assert aimd.limit == 18
    aimd.on_sample(0.1, 9, dropped=False)
    assert aimd.limit == 19, "9 * 2 >= 18"
    aimd.on_sample(0.1, 9, dropped=False)
    assert aimd.limit == 19, "9 * 2 < 19: an idle client does not grow its limit"
    for _ in range(5):
        aimd.on_sample(0.1, 22, dropped=False)
    assert aimd.limit == 22, "capped at max"
    for _ in range(40):
        aimd.on_sample(0.1, 22, dropped=True)
    assert aimd.limit == 1, "floored at min"


def test_aimd_floor_always_decreases() -> None:
    aimd = AIMDLimit(initial=5, min_limit=1, max_limit=200, backoff=0.9)
    moves = []
    for _ in range(5):
        aimd.on_sample(0.1, 5, dropped=True)
        moves.append(aimd.limit)
    assert moves == [4, 3, 2, 1, 1]


async def test_ignored_outcomes_do_not_move_the_limit() -> None:
    guard = ConcurrencyLimit(AIMDLimit(initial=2), queue=10)
    for _ in range(3):
        (await guard.acquire(retry=False, timeout_s=1.0)).done(Outcome.IGNORE, 0.1)
    assert guard.algorithm.limit == 2
    (await guard.acquire(retry=False, timeout_s=1.0)).done(Outcome.OVERLOAD, 0.1)
    assert guard.algorithm.limit == 1


@pytest.mark.parametrize(
    ("limit", "expected"), [(1, 1), (9, 1), (10, 1), (99, 1), (100, 2), (999, 2), (1000, 31)]
)
def test_vegas_log10(limit: int, expected: int) -> None:
    assert vegas_log10(limit) == expected


def test_vegas_moves() -> None:
    vegas = VegasLimit(initial=20, max_limit=1000, rng=random.Random(1))
    vegas.on_sample(0.1, 20, dropped=False)
    assert (vegas.limit, vegas.rtt_noload) == (20, 0.1), "the first sample sets rtt_noload"
    vegas.on_sample(0.1, 20, dropped=False)
    assert vegas.limit == 26, "queue 0 <= log10: grow by beta = 6"
    vegas.on_sample(0.1, 5, dropped=False)
    assert vegas.limit == 26, "5 * 2 < 26: no upward drift while idle"
    vegas.on_sample(0.2, 26, dropped=False)
    assert vegas.limit == 25, "queue ceil(26 * 0.5) = 13 > beta 6: shrink by log10"
    vegas.on_sample(0.105, 25, dropped=False)
    assert vegas.limit == 26, "queue ceil(1.19) = 2 < alpha 3: grow by log10"
    vegas.on_sample(0.12, 26, dropped=False)
    assert vegas.limit == 26, "queue ceil(4.33) = 5 in [alpha, beta]: hold"
    vegas.on_sample(0.001, 26, dropped=True)
    assert (vegas.limit, vegas.rtt_noload) == (25, 0.1), "a drop shrinks; its rtt is not no-load"
    vegas.on_sample(0.05, 25, dropped=False)
    assert (vegas.limit, vegas.rtt_noload) == (25, 0.05), "a faster success lowers rtt_noload"


def test_vegas_stays_within_one_and_max() -> None:
    vegas = VegasLimit(initial=3, max_limit=8, rng=random.Random(1))
    vegas.on_sample(0.1, 3, dropped=False)
    vegas.on_sample(0.1, 3, dropped=False)
    assert vegas.limit == 8
    for _ in range(20):
        vegas.on_sample(0.1, 8, dropped=True)
    assert vegas.limit == 1


class LowRandom(random.Random):
    """Draws 0.0, so uniform(0.5, 1) is 0.5: Vegas re-learns rtt_noload after 15 x limit."""

    def random(self) -> float:
        return 0.0


def test_vegas_relearns_rtt_noload_after_the_probe_interval() -> None:
    vegas = VegasLimit(initial=1, max_limit=1, rng=LowRandom())
    vegas.on_sample(0.1, 1, dropped=False)
    for _ in range(13):
        vegas.on_sample(0.2, 1, dropped=False)
    assert vegas.rtt_noload == 0.1
    vegas.on_sample(0.2, 1, dropped=False)
    assert vegas.rtt_noload == 0.2, "the 15th sample is the probe"


async def test_parsed_limits_and_their_state() -> None:
    guard = parse_guard_set("limit:vegas,initial=10,queue=5").guards[0]
    assert isinstance(guard, ConcurrencyLimit)
    assert guard.spec == "limit:vegas,initial=10,max=1000,queue=5"
    assert guard.state() == {"limit": 10.0, "in_flight": 0.0, "waiting": 0.0}
