"""The DB's capacity model: a concurrency limit in front of a bounded FIFO queue. Waiters are
gated on the model's own futures; nothing sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from herdlab.server.capacity import Capacity, Rejected


async def settle(until: Callable[[], bool], max_steps: int = 1_000) -> None:
    for _ in range(max_steps):
        if until():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached within the step bound")


def waiters(cap: Capacity, n: int, order: list[int], first: int = 0) -> list[asyncio.Task[None]]:
    """`n` tasks that each take a slot and note their number in `order` when they get it."""

    async def one(i: int) -> None:
        await cap.acquire()
        order.append(i)

    return [asyncio.create_task(one(first + i)) for i in range(n)]


async def test_free_slots_are_taken_at_once() -> None:
    cap = Capacity(concurrency=3, queue=0)
    for _ in range(3):
        await cap.acquire()
    assert cap.in_flight == 3 and cap.queued == 0


async def test_waiters_get_slots_in_arrival_order() -> None:
    cap = Capacity(concurrency=1, queue=5)
    await cap.acquire()
    order: list[int] = []
    tasks = waiters(cap, 5, order)
    await settle(lambda: cap.queued == 5)
    for expected in range(5):
        cap.release()
        await settle(lambda: len(order) == expected + 1)  # noqa: B023
        assert cap.in_flight == 1
    assert order == [0, 1, 2, 3, 4]
    await asyncio.gather(*tasks)
    cap.release()
    assert cap.in_flight == 0 and cap.queued == 0


async def test_rejects_at_once_past_the_queue() -> None:
    cap = Capacity(concurrency=1, queue=2)
    await cap.acquire()
    order: list[int] = []
    tasks = waiters(cap, 2, order)
    await settle(lambda: cap.queued == 2)
    for _ in range(3):
        with pytest.raises(Rejected, match=r"queue full \(2 waiting, 1 in flight\)"):
            await cap.acquire()
    assert cap.queued == 2 and cap.in_flight == 1
    for _ in range(3):
        cap.release()
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert cap.in_flight == 0


async def test_zero_queue_rejects_when_busy() -> None:
    cap = Capacity(concurrency=1, queue=0)
    await cap.acquire()
    with pytest.raises(Rejected):
        await cap.acquire()


async def test_a_new_arrival_does_not_jump_the_queue() -> None:
    """Bug: a slot released while others wait is taken by whoever calls acquire() next, not by
    the oldest waiter (the fast path ignores the queue)."""
    cap = Capacity(concurrency=1, queue=5)
    await cap.acquire()
    order: list[int] = []
    queued = waiters(cap, 2, order)
    await settle(lambda: cap.queued == 2)
    cap.release()  # hands the slot to waiter 0 before it even runs
    late = waiters(cap, 1, order, first=99)
    await settle(lambda: order == [0] and cap.queued == 2)
    assert cap.in_flight == 1
    cap.release()
    await settle(lambda: order == [0, 1])
    cap.release()
    await settle(lambda: order == [0, 1, 99])
    await asyncio.gather(*queued, *late)


async def test_cancelled_waiter_leaves_the_queue_without_taking_a_slot() -> None:
    cap = Capacity(concurrency=1, queue=3)
    await cap.acquire()
    order: list[int] = []
    tasks = waiters(cap, 3, order)
    await settle(lambda: cap.queued == 3)
    tasks[1].cancel()
    await settle(tasks[1].done)
    assert tasks[1].cancelled()
    assert cap.queued == 2 and cap.in_flight == 1
    cap.release()
    await settle(lambda: order == [0])
    cap.release()
    await settle(lambda: order == [0, 2])
    cap.release()
    assert cap.in_flight == 0 and cap.queued == 0


async def test_waiter_cancelled_as_its_slot_arrives_gives_the_slot_back() -> None:
    """Bug: the slot handed to a waiter in the same loop tick as its cancellation is lost
    (in_flight stays up forever: the DB's capacity shrinks with every such race)."""
    cap = Capacity(concurrency=1, queue=3)
    await cap.acquire()
    order: list[int] = []
    tasks = waiters(cap, 2, order)
    await settle(lambda: cap.queued == 2)
    cap.release()  # the slot goes to waiter 0 ...
    tasks[0].cancel()  # ... which is cancelled before it could run
    await settle(tasks[0].done)
    assert tasks[0].cancelled()
    await settle(lambda: order == [1])  # the slot passed on to the next waiter
    assert cap.in_flight == 1 and cap.queued == 0
    cap.release()
    assert cap.in_flight == 0


async def test_growing_the_limit_admits_waiters_at_once() -> None:
    cap = Capacity(concurrency=1, queue=10)
    await cap.acquire()
    order: list[int] = []
    tasks = waiters(cap, 4, order)
    await settle(lambda: cap.queued == 4)
    cap.resize(concurrency=3, queue=10)
    await settle(lambda: order == [0, 1])
    assert cap.in_flight == 3 and cap.queued == 2
    for _ in range(5):
        cap.release()
    await asyncio.gather(*tasks)
    assert cap.in_flight == 0


async def test_shrinking_the_limit_takes_effect_as_slots_free() -> None:
    cap = Capacity(concurrency=3, queue=10)
    for _ in range(3):
        await cap.acquire()
    cap.resize(concurrency=1, queue=10)
    assert cap.in_flight == 3  # running work is not interrupted
    order: list[int] = []
    tasks = waiters(cap, 1, order)
    await settle(lambda: cap.queued == 1)
    cap.release()
    cap.release()
    await asyncio.sleep(0)
    assert order == [] and cap.in_flight == 1
    cap.release()
    await settle(lambda: order == [0])
    assert cap.in_flight == 1
    cap.release()
    await asyncio.gather(*tasks)


async def test_shrinking_the_queue_rejects_new_arrivals_and_keeps_the_waiting() -> None:
    cap = Capacity(concurrency=1, queue=5)
    await cap.acquire()
    order: list[int] = []
    tasks = waiters(cap, 3, order)
    await settle(lambda: cap.queued == 3)
    cap.resize(concurrency=1, queue=1)
    with pytest.raises(Rejected):
        await cap.acquire()
    assert cap.queued == 3
    for _ in range(4):
        cap.release()
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2] and cap.in_flight == 0


async def test_take_reports_the_slots_in_use_as_each_was_handed_over() -> None:
    """The limiter (`herdlab.capacity`) the `limit` guard shares: each slot comes with the slots in
    use once it was taken (the limit algorithms' sample), not as many as when its waiter ran."""
    cap = Capacity(concurrency=1, queue=10)
    first = await cap.take()
    assert (first.waited, first.in_flight) == (False, 1)
    tasks = [asyncio.create_task(cap.take(timeout_s=60.0)) for _ in range(2)]
    await settle(lambda: cap.queued == 2)
    cap.resize(concurrency=3, queue=10)  # hands both slots over in one go
    slots = await asyncio.gather(*tasks)
    assert [(s.waited, s.in_flight) for s in slots] == [(True, 2), (True, 3)]


async def test_take_with_no_time_left_does_not_join_the_line() -> None:
    cap = Capacity(concurrency=1, queue=10)
    await cap.take(timeout_s=0.0)  # a free slot needs no time
    with pytest.raises(TimeoutError):
        await cap.take(timeout_s=0.0)
    assert cap.queued == 0 and cap.in_flight == 1
