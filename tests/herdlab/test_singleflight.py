"""The coalescer's contract, tested in the spirit of Go's singleflight tests.

Every test gates its fetches on asyncio futures/events and never sleeps: `asyncio.sleep(0)` only
yields to the event loop so that the tasks already created take their next step. Each regression
test names, in its docstring, the bug it would catch.
"""

from __future__ import annotations

import asyncio
import gc
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from herdlab.singleflight import SingleFlight, single_flight


async def settle(until: Callable[[], bool], max_steps: int = 1_000) -> None:
    """Yields to the event loop until `until()` holds (a bounded number of loop steps)."""
    for _ in range(max_steps):
        if until():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached within the step bound")


class Boom(Exception):
    pass


@dataclass
class GatedFetch:
    """A fetch that counts its calls and finishes only when the test resolves its gate."""

    gate: asyncio.Future[str] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    calls: int = 0
    finished: int = 0
    cancelled: int = 0

    async def __call__(self) -> str:
        self.calls += 1
        try:
            value = await self.gate
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        except BaseException:
            self.finished += 1
            raise
        self.finished += 1
        return value


def start(
    c: SingleFlight[str], key: str, fn: Callable[[], Awaitable[str]], n: int
) -> list[asyncio.Task[tuple[str, bool]]]:
    return [asyncio.create_task(c.do(key, fn)) for _ in range(n)]


async def test_value_is_shared_by_every_waiter_with_the_shared_flag() -> None:
    """Bug: concurrent callers each run the fetch (no coalescing), or the leader is reported as
    shared / a waiter as not shared."""
    c: SingleFlight[str] = SingleFlight()
    fetch = GatedFetch()
    tasks = start(c, "k", fetch, 10)
    await settle(lambda: c.waiters == 9 and fetch.calls == 1)
    assert c.in_flight() == 1
    value = "value-object"
    fetch.gate.set_result(value)
    results = await asyncio.gather(*tasks)
    assert fetch.calls == 1
    assert all(v is value for v, _ in results)
    assert [shared for _, shared in results] == [False] + [True] * 9
    assert c.in_flight() == 0 and c.waiters == 0


async def test_error_is_the_same_exception_object_for_every_waiter() -> None:
    """Bug: waiters of a failed fetch get different errors (or some hang / get a value)."""
    c: SingleFlight[str] = SingleFlight()
    fetch = GatedFetch()
    tasks = start(c, "k", fetch, 10)
    await settle(lambda: c.waiters == 9 and fetch.calls == 1)
    error = Boom("db down")
    fetch.gate.set_exception(error)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert fetch.calls == 1
    assert all(r is error for r in results)
    assert c.in_flight() == 0 and c.waiters == 0


async def test_cancelled_leader_does_not_cancel_the_fetch_for_the_others() -> None:
    """Bug: the fetch runs in the first caller's task (no shield), so when that caller's deadline
    passes every other waiter gets CancelledError too."""
    c: SingleFlight[str] = SingleFlight()
    fetch = GatedFetch()
    leader, *others = start(c, "k", fetch, 5)
    await settle(lambda: c.waiters == 4 and fetch.calls == 1)
    leader.cancel()
    await settle(leader.done)
    assert leader.cancelled()
    assert fetch.cancelled == 0
    assert c.in_flight() == 1 and c.waiters == 4
    fetch.gate.set_result("v")
    results = await asyncio.gather(*others)
    assert results == [("v", True)] * 4
    assert fetch.calls == 1 and fetch.finished == 1 and fetch.cancelled == 0


async def test_cancelled_waiter_leaves_without_disturbing_the_others() -> None:
    """Bug: the waiter count is not decremented for a cancelled waiter (gauge leaks), or a
    cancelled waiter cancels the shared fetch."""
    c: SingleFlight[str] = SingleFlight()
    fetch = GatedFetch()
    leader, quitter, stayer = start(c, "k", fetch, 3)
    await settle(lambda: c.waiters == 2 and fetch.calls == 1)
    quitter.cancel()
    await settle(quitter.done)
    assert quitter.cancelled()
    assert c.waiters == 1
    fetch.gate.set_result("v")
    assert await leader == ("v", False)
    assert await stayer == ("v", True)
    assert fetch.cancelled == 0 and c.waiters == 0


@pytest.mark.parametrize("fails", [False, True], ids=["success", "failure"])
async def test_all_waiters_cancelled_the_fetch_still_completes(fails: bool) -> None:
    """Bug: with nobody left waiting the fetch is abandoned (its value never stored), the entry
    leaks, or a failed fetch nobody waits for logs 'exception was never retrieved'."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    release = asyncio.Event()
    stored: list[str] = []

    async def fetch() -> str:
        await release.wait()
        if fails:
            raise Boom("nobody listening")
        stored.append("value")
        return "value"

    try:
        c: SingleFlight[str] = SingleFlight()
        tasks = start(c, "k", fetch, 4)
        await settle(lambda: c.waiters == 3 and c.in_flight() == 1)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert all(t.cancelled() for t in tasks)
        assert c.waiters == 0
        assert c.in_flight() == 1, "the fetch must keep running with nobody waiting"
        # A cancelled task's CancelledError holds its `do` frame, hence the fetch's task: drop them
        # so the fetch task becomes garbage once it ends.
        del tasks, task
        release.set()
        await settle(lambda: c.in_flight() == 0)
        assert stored == ([] if fails else ["value"])
        # The finished fetch task is garbage now; collecting it must not report an error.
        gc.collect()
        await asyncio.sleep(0)
        assert reported == []
    finally:
        loop.set_exception_handler(None)


async def test_key_is_forgotten_after_success() -> None:
    """Bug: the entry outlives its fetch, so a later caller gets an old value forever (the
    coalescer turns into a cache with no TTL)."""
    c: SingleFlight[str] = SingleFlight()
    first = GatedFetch()
    task = asyncio.create_task(c.do("k", first))
    await settle(lambda: first.calls == 1)
    first.gate.set_result("v1")
    assert await task == ("v1", False)
    assert c.in_flight() == 0
    second = GatedFetch()
    task = asyncio.create_task(c.do("k", second))
    await settle(lambda: second.calls == 1)
    second.gate.set_result("v2")
    assert await task == ("v2", False)
    assert first.calls == 1 and second.calls == 1


async def test_key_is_forgotten_after_failure_and_the_next_caller_starts_a_new_fetch() -> None:
    """Bug: a failed fetch is remembered, so every caller after a DB blip gets the old error."""
    c: SingleFlight[str] = SingleFlight()
    failing = GatedFetch()
    task = asyncio.create_task(c.do("k", failing))
    await settle(lambda: failing.calls == 1)
    failing.gate.set_exception(Boom("blip"))
    with pytest.raises(Boom):
        await task
    assert c.in_flight() == 0
    fresh = GatedFetch()
    task = asyncio.create_task(c.do("k", fresh))
    await settle(lambda: fresh.calls == 1)
    fresh.gate.set_result("recovered")
    assert await task == ("recovered", False)


async def test_entry_is_removed_before_any_waiter_resumes() -> None:
    """Bug: the entry is deleted after the waiters resume (e.g. in the leader's `finally`), so a
    waiter that retries at once on an error joins the same, already failed fetch."""
    c: SingleFlight[str] = SingleFlight()
    failing = GatedFetch()
    retry_fetch = GatedFetch()
    seen_in_flight: list[int] = []

    async def caller_that_retries() -> tuple[str, bool]:
        try:
            return await c.do("k", failing)
        except Boom:
            seen_in_flight.append(c.in_flight())
            return await c.do("k", retry_fetch)

    tasks = [asyncio.create_task(caller_that_retries()) for _ in range(3)]
    await settle(lambda: c.waiters == 2 and failing.calls == 1)
    failing.gate.set_exception(Boom("first try"))
    await settle(lambda: retry_fetch.calls == 1 and c.waiters == 2)
    retry_fetch.gate.set_result("second try")
    results = await asyncio.gather(*tasks)
    assert seen_in_flight[0] == 0
    assert sorted(shared for _, shared in results) == [False, True, True]
    assert {v for v, _ in results} == {"second try"}
    assert failing.calls == 1 and retry_fetch.calls == 1


async def test_keys_are_independent() -> None:
    """Bug: the map is keyed wrongly (one fetch for every key) or one key's result reaches
    another key's waiters."""
    c: SingleFlight[str] = SingleFlight()
    fetches = {key: GatedFetch() for key in ("a", "b", "c")}
    tasks = {key: start(c, key, fetch, 3) for key, fetch in fetches.items()}
    await settle(lambda: c.waiters == 6 and all(f.calls == 1 for f in fetches.values()))
    assert c.in_flight() == 3
    fetches["b"].gate.set_result("B")
    assert [v for v, _ in await asyncio.gather(*tasks["b"])] == ["B"] * 3
    assert c.in_flight() == 2
    fetches["a"].gate.set_exception(Boom("a failed"))
    fetches["c"].gate.set_result("C")
    assert all(
        isinstance(r, Boom) for r in await asyncio.gather(*tasks["a"], return_exceptions=True)
    )
    assert [v for v, _ in await asyncio.gather(*tasks["c"])] == ["C"] * 3
    assert c.in_flight() == 0 and c.waiters == 0


async def test_finished_fetch_never_removes_a_newer_entry() -> None:
    """Bug: the ending fetch deletes the key unconditionally; if another fetch for the key was
    registered meanwhile, it is dropped and the next caller starts a third, concurrent fetch.
    ("Deleted only if it is still ours.")"""
    c: SingleFlight[str] = SingleFlight()
    old = GatedFetch()
    old_task = asyncio.create_task(c.do("k", old))
    await settle(lambda: old.calls == 1)
    # Simulate a newer registration for the key while the old fetch is still running.
    old_entry = c._calls.pop("k")
    new = GatedFetch()
    new_task = asyncio.create_task(c.do("k", new))
    await settle(lambda: new.calls == 1)
    old.gate.set_result("old")
    assert await old_task == ("old", False)
    assert c._calls.get("k") is not None and c._calls["k"] is not old_entry
    joiner = asyncio.create_task(c.do("k", GatedFetch()))
    await settle(lambda: c.waiters == 1)
    new.gate.set_result("new")
    assert await new_task == ("new", False)
    assert await joiner == ("new", True)
    assert c.in_flight() == 0


@dataclass
class Round:
    """One key's fetches in a randomised round: gate i belongs to fetch i."""

    gates: list[asyncio.Future[str]] = field(default_factory=list)
    finished: int = 0

    async def fetch(self) -> str:
        gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.gates.append(gate)
        try:
            return await gate
        finally:
            self.finished += 1


@dataclass
class Tally:
    callers: int = 0
    cancelled: int = 0
    failed: int = 0


async def one_round(c: SingleFlight[str], rng: random.Random, round_no: int, tally: Tally) -> None:
    """Random keys, 1..6 callers each, random outcomes, random cancellations; checks every caller
    got its key's outcome (or CancelledError if its cancel took effect) and nothing is left."""
    keys = rng.sample([f"key-{i}" for i in range(8)], rng.randint(1, 4))
    rounds = {key: Round() for key in keys}
    callers = {key: start(c, key, rounds[key].fetch, rng.randint(1, 6)) for key in keys}
    expected_waiters = sum(len(tasks) - 1 for tasks in callers.values())
    await settle(
        lambda: c.waiters == expected_waiters and all(len(r.gates) == 1 for r in rounds.values())
    )
    assert c.in_flight() == len(keys)
    # Settle each key (in random order) with a value or an error; cancel random callers, some
    # before the outcome is set and some after (then the cancel races the result reaching them).
    outcomes: dict[str, str | Boom] = {}
    cancel_took: dict[asyncio.Task[tuple[str, bool]], bool] = {}
    for key in rng.sample(keys, len(keys)):
        tasks = callers[key]
        for task in tasks:
            if rng.random() < 0.15:
                cancel_took[task] = task.cancel()
        outcome: str | Boom
        if rng.random() < 0.4:
            outcome = Boom(f"{key} failed in round {round_no}")
            rounds[key].gates[0].set_exception(outcome)
            tally.failed += 1
        else:
            outcome = f"{key}@{round_no}"
            rounds[key].gates[0].set_result(outcome)
        outcomes[key] = outcome
        for _ in range(rng.randint(0, 2)):
            await asyncio.sleep(0)
        for task in tasks:
            if task not in cancel_took and rng.random() < 0.1:
                cancel_took[task] = task.cancel()
    for key, tasks in callers.items():
        results = await asyncio.gather(*tasks, return_exceptions=True)
        tally.callers += len(tasks)
        for i, (task, result) in enumerate(zip(tasks, results, strict=True)):
            where = (round_no, key, i)
            if cancel_took.get(task, False):
                assert isinstance(result, asyncio.CancelledError), where
                tally.cancelled += 1
            elif isinstance(outcomes[key], Boom):
                assert result is outcomes[key], where
            else:
                assert result == (outcomes[key], i != 0), where
    # Every fetch ran to its end, exactly one per key, whoever was left waiting.
    await settle(lambda: all(r.finished == 1 for r in rounds.values()))
    assert all(len(r.gates) == 1 for r in rounds.values()), round_no
    assert c.in_flight() == 0, round_no
    assert c.waiters == 0, round_no
    assert c._calls == {}, round_no


async def test_randomised_concurrent_rounds_leave_nothing_behind() -> None:
    """Bug: any leak or mix-up under interleavings the hand-written tests miss: an entry or a
    waiter count left behind after cancellations and failures, a waiter getting another fetch's
    result, or a fetch abandoned when its callers leave."""
    rng = random.Random(20260611)
    c: SingleFlight[str] = SingleFlight()
    tally = Tally()
    for round_no in range(1_000):
        await one_round(c, rng, round_no, tally)
    # The rounds exercised what they claim to (guards against a vacuous randomisation).
    assert tally.callers > 3_000 and tally.cancelled > 300 and tally.failed > 300


async def test_the_decorator_makes_any_async_function_single_flight_per_key() -> None:
    gates: dict[str, asyncio.Future[int]] = {}
    calls: list[str] = []

    @single_flight(key=lambda sku, **_: sku)
    async def stock(sku: str, *, note: str = "") -> int:
        calls.append(sku)
        gates[sku] = asyncio.get_running_loop().create_future()
        return await gates[sku]

    tasks = [asyncio.ensure_future(stock(f"k{n % 2}", note=str(n))) for n in range(10)]
    await settle(lambda: len(gates) == 2)
    gates["k0"].set_result(7)
    gates["k1"].set_exception(Boom("k1 failed"))
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert calls == ["k0", "k1"]
    assert results[0::2] == [7] * 5
    assert all(isinstance(r, Boom) for r in results[1::2])
    assert stock.flight.in_flight() == 0  # type: ignore[attr-defined]


async def test_the_decorator_runs_a_lease_once_per_key_behind_the_local_flight() -> None:
    """Many local callers make one lease attempt; the lease decides who runs the function."""
    runs: list[str] = []

    class CountingLease:
        def __init__(self) -> None:
            self.keys: list[str] = []

        async def run(self, key: str, fn: Callable[[], Awaitable[int]]) -> tuple[int, bool]:
            self.keys.append(key)
            return await fn(), True

    lease = CountingLease()
    group: SingleFlight[Any] = SingleFlight()

    @single_flight(group=group, lease=lease)
    async def load(n: int) -> int:
        runs.append(str(n))
        await asyncio.sleep(0)
        return n * 2

    assert await asyncio.gather(*(load(3) for _ in range(5))) == [6] * 5
    assert lease.keys == [repr(((3,), []))] and runs == ["3"]
    assert load.flight is group  # type: ignore[attr-defined]
