"""The DB's queue disciplines (fifo, codel, adaptive lifo), its dequeue deadline check and its
slot time.

The arithmetic is tested on the capacity model with a hand-moved clock: which waiter a freed
slot goes to, when CoDel sheds and when it does not, when LIFO switches on and off; no test
waits for real time. Then the same behaviour against a real DB process, synchronised on the
DB's own state: a gate query holds the only slot while the test builds the queue it wants.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from support import WAIT_S, DbGate, StackClients

from chaos.lab.backends.local import LocalStack, StackInfo
from db_service.settings import DbSettings
from herdlab.server.capacity import Capacity
from herdlab.server.queueing import AdaptiveLifo, CoDel, Discipline, Fifo, Shed, discipline
from protos import admin_pb2, db_pb2

# -- a clock moved by hand -------------------------------------------------------------------


@dataclass
class ManualTimer:
    when: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """Monotonic seconds that move only when `advance` is called; due timers fire then, in
    order of their time."""

    def __init__(self) -> None:
        self.t = 0.0
        self._timers: list[ManualTimer] = []

    def now(self) -> float:
        return self.t

    def call_at(self, when: float, callback: Callable[[], None]) -> ManualTimer:
        timer = ManualTimer(when, callback)
        self._timers.append(timer)
        return timer

    @property
    def pending(self) -> int:
        """Timers neither fired nor cancelled."""
        return sum(not t.cancelled for t in self._timers)

    def advance(self, seconds: float) -> None:
        self.t += seconds
        due = sorted((t for t in self._timers if t.when <= self.t), key=lambda t: t.when)
        for timer in due:
            self._timers.remove(timer)
            if not timer.cancelled:
                timer.callback()


async def settle(until: Callable[[], bool], max_steps: int = 1_000) -> None:
    for _ in range(max_steps):
        if until():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached within the step bound")


class Line:
    """A capacity model with one slot, held, and waiters that note when they get it."""

    def __init__(self, discipline: Discipline, queue: int = 10) -> None:
        self.clock = ManualClock()
        self.cap = Capacity(concurrency=1, queue=queue, discipline=discipline, clock=self.clock)
        self.served: list[str] = []
        self.tasks: dict[str, asyncio.Task[None]] = {}

    async def hold(self) -> None:
        assert not await self.cap.acquire()

    async def join(self, *names: str) -> None:
        """Each name joins the queue, in order, at the current time."""
        for name in names:

            async def one(name: str = name) -> None:
                await self.cap.acquire()
                self.served.append(name)

            self.tasks[name] = asyncio.create_task(one())
            await settle(lambda: self.cap.queued == len(self.waiting()))

    def waiting(self) -> list[str]:
        return [n for n, t in self.tasks.items() if n not in self.served and not t.done()]

    async def serve_next(self) -> str:
        """Releases the slot; returns who got it (they hold it now)."""
        before = len(self.served)
        self.cap.release()
        await settle(lambda: len(self.served) == before + 1)
        return self.served[-1]

    async def shed(self, name: str) -> str:
        task = self.tasks[name]
        await settle(task.done)
        error = task.exception()
        assert isinstance(error, Shed), error
        return str(error)


# -- the disciplines' arithmetic (hand-moved clock) ------------------------------------------


def test_disciplines_by_name() -> None:
    assert discipline("fifo") == Fifo()
    assert discipline("codel", 0.002, 0.05) == CoDel(target=0.002, interval=0.05)
    assert discipline("lifo") == AdaptiveLifo(target=0.005, interval=0.1)
    assert DbSettings().discipline() == Fifo(target=0.005, interval=0.1)


async def test_fifo_serves_oldest_first_and_sheds_nobody() -> None:
    line = Line(Fifo(interval=0.1))
    await line.hold()
    await line.join("a", "b", "c")
    line.clock.advance(3600)
    assert line.cap.standing and line.clock.pending == 0
    assert [await line.serve_next() for _ in range(3)] == ["a", "b", "c"]


async def test_codel_joiner_of_a_fresh_queue_may_wait_the_interval() -> None:
    line = Line(CoDel(target=0.005, interval=0.1))
    await line.hold()
    await line.join("a")
    line.clock.advance(0.099)
    assert line.waiting() == ["a"]
    line.clock.advance(0.001)
    assert await line.shed("a") == "shed by codel after waiting 100ms"
    assert (line.cap.queued, line.cap.in_flight, line.clock.pending) == (0, 1, 0)
    assert not line.cap.standing


async def test_codel_joiner_of_a_standing_queue_may_wait_only_the_target() -> None:
    line = Line(CoDel(target=0.005, interval=0.1))
    await line.hold()
    await line.join("a")  # t=0: the queue was empty, so a may wait 100 ms
    line.clock.advance(0.05)
    await line.join("b")  # t=50ms: empty 50 ms ago, not standing: b may wait 100 ms too
    line.clock.advance(0.05)  # t=100ms: a is shed; b keeps the queue standing since t=0
    assert await line.shed("a") == "shed by codel after waiting 100ms"
    assert line.cap.standing
    await line.join("c")  # joins a standing queue: may wait 5 ms
    line.clock.advance(0.0049)
    assert line.waiting() == ["b", "c"]
    line.clock.advance(0.0001)
    assert await line.shed("c") == "shed by codel after waiting 5ms"
    assert await line.serve_next() == "b"  # served within its limit: its timer is cancelled
    assert line.clock.pending == 0
    line.clock.advance(3600)
    assert line.cap.in_flight == 1 and not line.tasks["b"].cancelled()


async def test_codel_queue_that_drained_gives_the_interval_again() -> None:
    """Bug pinned: the standing state outlives the queue, so the first query after a drain is
    held to the target as if the queue had never emptied."""
    line = Line(CoDel(target=0.005, interval=0.1))
    await line.hold()
    await line.join("a")
    line.clock.advance(0.05)
    await line.join("b")
    line.clock.advance(0.06)  # t=110ms: a shed at 100 ms, b (limit until 150 ms) stands
    await line.shed("a")
    assert await line.serve_next() == "b"
    assert line.cap.queued == 0 and not line.cap.standing
    line.clock.advance(1.0)
    await line.join("c")
    line.clock.advance(0.099)
    assert line.waiting() == ["c"]
    assert await line.serve_next() == "c"


async def test_codel_limits_are_fixed_when_a_query_joins() -> None:
    line = Line(CoDel(target=0.005, interval=10.0))
    await line.hold()
    await line.join("a")  # may wait 10 s
    line.cap.set_discipline(CoDel(target=0.005, interval=0.001))
    line.clock.advance(0.002)
    assert line.cap.standing
    await line.join("b")  # joins a standing queue under the new interval: 5 ms
    line.clock.advance(0.005)
    await line.shed("b")
    assert line.waiting() == ["a"]
    assert await line.serve_next() == "a"


async def test_lifo_is_fifo_until_the_queue_stands_then_newest_first() -> None:
    line = Line(AdaptiveLifo(interval=0.1))
    await line.hold()
    await line.join("a", "b", "c", "d")
    line.clock.advance(0.099)
    assert not line.cap.standing
    assert await line.serve_next() == "a"  # not standing: oldest first
    line.clock.advance(0.001)
    assert line.cap.standing
    assert await line.serve_next() == "d"  # standing since t=0: newest first
    await line.join("e")
    assert [await line.serve_next() for _ in range(3)] == ["e", "c", "b"]
    assert line.clock.pending == 0  # lifo sheds nobody: no timers


async def test_lifo_switches_off_when_the_queue_drains() -> None:
    line = Line(AdaptiveLifo(interval=0.1))
    await line.hold()
    await line.join("a", "b")
    line.clock.advance(0.2)
    assert [await line.serve_next() for _ in range(2)] == ["b", "a"]
    assert not line.cap.standing
    await line.join("c", "d")
    line.clock.advance(0.05)
    assert [await line.serve_next() for _ in range(2)] == ["c", "d"]


async def test_changing_the_discipline_applies_to_the_next_hand_over() -> None:
    line = Line(Fifo(interval=0.1))
    await line.hold()
    await line.join("a", "b", "c")
    line.clock.advance(1.0)
    assert await line.serve_next() == "a"
    line.cap.set_discipline(AdaptiveLifo(interval=0.1))
    assert await line.serve_next() == "c"
    line.cap.set_discipline(Fifo(interval=0.1))
    assert await line.serve_next() == "b"


# -- cancellation: no leaked slot, no leaked timer -------------------------------------------


@pytest.mark.parametrize("kind", [Fifo, CoDel, AdaptiveLifo])
async def test_cancelled_waiter_leaves_no_slot_and_no_timer(kind: type[Discipline]) -> None:
    line = Line(kind(target=0.005, interval=0.1))
    await line.hold()
    await line.join("a", "b")
    line.tasks["a"].cancel()
    await settle(line.tasks["a"].done)
    assert line.tasks["a"].cancelled()
    assert (line.cap.queued, line.cap.in_flight) == (1, 1)
    assert line.clock.pending == (1 if kind is CoDel else 0)
    assert await line.serve_next() == "b"
    assert line.clock.pending == 0


@pytest.mark.parametrize("kind", [Fifo, CoDel, AdaptiveLifo])
async def test_waiter_cancelled_as_its_slot_arrives_gives_the_slot_back(
    kind: type[Discipline],
) -> None:
    """Bug pinned: the slot handed to a waiter in the same loop tick as its cancellation is
    lost, whatever the discipline picked it."""
    line = Line(kind(target=0.005, interval=0.1))
    await line.hold()
    await line.join("a", "b")
    line.cap.release()  # the slot goes to a (not standing: oldest first) ...
    line.tasks["a"].cancel()  # ... which is cancelled before it could run
    await settle(line.tasks["a"].done)
    assert line.tasks["a"].cancelled()
    await settle(lambda: line.served == ["b"])
    assert (line.cap.in_flight, line.cap.queued, line.clock.pending) == (1, 0, 0)


async def test_waiter_cancelled_as_it_is_shed_takes_nothing() -> None:
    """Bug pinned: a waiter shed and cancelled in the same tick is treated as having been handed
    a slot, and 'gives back' a slot it never had (in_flight drops below the truth)."""
    line = Line(CoDel(target=0.005, interval=0.1))
    await line.hold()
    await line.join("a")
    line.clock.advance(0.1)  # a is shed ...
    line.tasks["a"].cancel()  # ... and its caller leaves in the same tick
    await settle(line.tasks["a"].done)
    assert line.tasks["a"].cancelled()
    assert (line.cap.in_flight, line.cap.queued, line.clock.pending) == (1, 0, 0)


# -- slot time -------------------------------------------------------------------------------


async def test_slot_seconds_integrate_the_slots_held() -> None:
    clock = ManualClock()
    cap = Capacity(concurrency=2, queue=1, clock=clock)
    await cap.acquire()
    await cap.acquire()
    clock.advance(1.5)
    assert cap.slot_seconds == 3.0  # holds still running count
    cap.release()
    clock.advance(0.5)
    assert cap.slot_seconds == 3.5
    cap.release()
    clock.advance(10.0)
    assert cap.slot_seconds == 3.5


async def test_slot_seconds_count_a_waiter_from_the_hand_over() -> None:
    line = Line(Fifo())
    await line.hold()
    await line.join("a")
    line.clock.advance(2.0)
    assert line.cap.slot_seconds == 2.0  # the waiter holds nothing yet
    await line.serve_next()
    line.clock.advance(1.0)
    line.cap.release()
    assert line.cap.slot_seconds == 3.0


# -- settings --------------------------------------------------------------------------------


def test_settings_name_the_field_and_the_allowed_values() -> None:
    assert DbSettings(queue_discipline="bogus").problems() == [
        "queue discipline must be one of fifo, codel, lifo, got 'bogus'"
    ]
    assert DbSettings(codel_target_s=0.0).problems() == [
        "codel target must be in [0.1ms, 60000ms], got 0ms"
    ]
    assert DbSettings(codel_target_s=0.2, codel_interval_s=0.1).problems() == [
        "codel target must not exceed codel interval, got target 200ms > interval 100ms"
    ]
    argv = DbSettings(queue_discipline="codel", codel_target_s=0.002).to_argv(changed_only=True)
    assert argv == ["--queue-discipline", "codel", "--codel-target", "2ms"]


# -- against a real DB process ---------------------------------------------------------------

DB_ARGS = ["--concurrency", "1", "--queue", "20", "--latency", "1h", "--spread", "0ms"]
LONG_INTERVAL_MS = 60_000.0  # far longer than any test: a queue never stands under it


class Scene:
    """One test's queries against the module's DB. On exit whatever is left is ended (the gate
    opened, calls cancelled) and the DB is back to fifo, 5 ms / 100 ms, an hour of latency and
    idle, so a failing test does not leave the next one a busy DB."""

    def __init__(self, lab: StackClients) -> None:
        self.lab = lab
        self.gate = DbGate(lab)
        self.gate_shut = False
        self.calls: list[asyncio.Task[db_pb2.DbGetResponse]] = []

    async def __aenter__(self) -> Scene:
        await self.restore()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self.gate_shut:
            await self.open_gate()
        for call in self.calls:
            call.cancel()
        await asyncio.gather(*self.calls, return_exceptions=True)
        await self.restore()

    async def restore(self) -> None:
        await self.set_queue(discipline="fifo", codel_target_ms=5, codel_interval_ms=100)
        await self.lab.faults(latency_ms=3_600_000)
        await self.lab.until_db(lambda s: s.in_flight == 0 and s.queued == 0, "DB idle")

    async def set_queue(
        self,
        discipline: str | None = None,
        codel_target_ms: float | None = None,
        codel_interval_ms: float | None = None,
    ) -> admin_pb2.DbState:
        capacity = admin_pb2.Capacity(
            discipline=discipline,
            codel_target_ms=codel_target_ms,
            codel_interval_ms=codel_interval_ms,
        )
        state: admin_pb2.DbState = await self.lab.db_admin.SetCapacity(capacity, timeout=10)
        return state

    async def shut_gate(self, latency_after_ms: float) -> None:
        await self.gate.shut(latency_after_ms)
        self.gate_shut = True

    async def open_gate(self) -> None:
        self.gate_shut = False
        await self.gate.open()

    def get(self, key: str, timeout_s: float | None = None) -> asyncio.Task[db_pb2.DbGetResponse]:
        call = asyncio.create_task(self.lab.db_get(key, timeout_s=timeout_s))
        self.calls.append(call)
        return call

    async def queued(self, n: int, what: str) -> admin_pb2.DbState:
        return await self.lab.until_db(lambda s: s.queued == n, what)

    async def dropped(self, stage: str) -> float:
        return await self.lab.metric("db", "herdlab_db_dropped_total", stage=stage)


async def outcome(call: asyncio.Task[db_pb2.DbGetResponse]) -> str:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return f"{exc.code().name}: {exc.details()}"
    return "ok"


@pytest.mark.parametrize(("discipline", "shed"), [("codel", 5), ("fifo", 0)])
async def test_codel_sheds_joiners_of_a_standing_queue_and_fifo_does_not(
    stack_info: StackInfo, discipline: str, shed: int
) -> None:
    """The first query joins an empty queue (so may wait the interval, a minute); once the queue
    stands (the interval is cut to 1 ms), five more join: under codel each may wait only the
    target (0.5 ms, not the interval) and is shed while the gate holds the slot; under fifo all
    wait. Then the gate opens and whoever is still queued is served."""
    async with StackClients(stack_info) as lab, Scene(lab) as scene:
        await scene.set_queue(discipline, codel_target_ms=0.5, codel_interval_ms=LONG_INTERVAL_MS)
        await scene.shut_gate(latency_after_ms=0)
        codel_before = await scene.dropped("codel")
        first = scene.get("first")
        await scene.queued(1, "first query queued")
        await scene.set_queue(codel_interval_ms=1)
        await lab.until_db(lambda s: s.standing, "queue standing")
        later = [scene.get(f"later-{i}") for i in range(5)]
        state = await lab.until_db(
            lambda s: s.arrivals - scene.gate.arrivals_before == 6 and s.queued == 6 - shed,
            f"6 arrivals, {shed} shed",
        )
        assert state.in_flight == 1 and state.rejected == 0
        await scene.open_gate()
        results = [await outcome(call) for call in (first, *later)]
        assert results[0] == "ok"
        shed_message = "RESOURCE_EXHAUSTED: db overloaded: shed by codel after waiting 0.5ms"
        assert results[1:] == ([shed_message] * 5 if shed else ["ok"] * 5)
        assert await scene.dropped("codel") - codel_before == shed


@pytest.mark.parametrize(
    ("interval_ms", "order"),
    [(1, ["k3", "k2", "k1", "k0"]), (LONG_INTERVAL_MS, ["k0", "k1", "k2", "k3"])],
    ids=["standing", "not-standing"],
)
async def test_lifo_serves_newest_first_only_while_the_queue_stands(
    stack_info: StackInfo, interval_ms: float, order: list[str]
) -> None:
    async with StackClients(stack_info) as lab, Scene(lab) as scene:
        await scene.set_queue("lifo", codel_target_ms=1, codel_interval_ms=LONG_INTERVAL_MS)
        # Each query is then served for 20 ms, one at a time: completions come in service order.
        await scene.shut_gate(latency_after_ms=20)
        calls = []
        for i in range(4):
            calls.append(scene.get(f"k{i}"))
            await scene.queued(i + 1, f"{i + 1} queued")
        state = await scene.set_queue(codel_interval_ms=interval_ms)
        if interval_ms < LONG_INTERVAL_MS:
            await lab.until_db(lambda s: s.standing, "queue standing")
        else:
            assert not state.standing
        await scene.open_gate()
        assert [(await done).key for done in asyncio.as_completed(calls)] == order


async def test_dequeue_drops_a_query_whose_deadline_is_shorter_than_the_service_time(
    stack_info: StackInfo,
) -> None:
    """Service takes an hour; a query with WAIT_S left when its slot comes cannot be answered:
    it is dropped at once (stage deadline), and the slot goes straight to the next waiter."""
    async with StackClients(stack_info) as lab, Scene(lab) as scene:
        await scene.shut_gate(latency_after_ms=3_600_000)
        deadline_before = await scene.dropped("deadline")
        before = await lab.db_state()
        hopeless = scene.get("hopeless", timeout_s=WAIT_S)
        await scene.queued(1, "hopeless queued")
        patient = scene.get("patient")
        await scene.queued(2, "patient queued")
        await scene.open_gate()
        result = await outcome(hopeless)
        assert result.startswith("DEADLINE_EXCEEDED: dropped at dequeue: "), result
        assert result.endswith("ms left, a query takes 3600000ms"), result
        # The patient query holds the slot now: the hopeless one did not keep it.
        state = await lab.until_db(
            lambda s: s.in_flight == 1 and s.queued == 0 and s.dropped - before.dropped == 2,
            "gate and hopeless dropped, patient holding the slot",
        )
        assert state.completed == before.completed
        assert await scene.dropped("deadline") - deadline_before == 1
        assert not patient.done()


async def test_slot_seconds_are_reported_and_exported(stack_info: StackInfo) -> None:
    async with StackClients(stack_info) as lab, Scene(lab):
        before = await lab.db_state()
        await lab.faults(latency_ms=50)
        await lab.db_get("timed")
        after = await lab.until_db(lambda s: s.in_flight == 0, "idle")
        # The slot was held at least for the 50 ms sleep (asyncio may wake up to 1 ns early).
        assert after.slot_seconds - before.slot_seconds >= 0.049
        # Idle: nothing accrues, so the scrape reads exactly what the state said.
        exported = await lab.metric("db", "herdlab_db_slot_seconds_total")
        assert exported == (await lab.db_state()).slot_seconds == after.slot_seconds


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"discipline": "bogus"}, "queue discipline must be one of fifo, codel, lifo, got 'bogus'"),
        ({"codel_target_ms": 0}, "codel target must be in [0.1ms, 60000ms], got 0ms"),
        ({"codel_interval_ms": -1}, "codel interval must be in [1ms, 60000ms], got -1ms"),
        ({"codel_target_ms": 80}, "codel target must not exceed codel interval"),
    ],
    ids=["discipline", "target", "interval", "target-above-interval"],
)
async def test_admin_changes_the_discipline_and_rejects_bad_values(
    stack_info: StackInfo, change: dict[str, Any], message: str
) -> None:
    async with StackClients(stack_info) as lab, Scene(lab) as scene:
        state = await scene.set_queue("codel", codel_target_ms=2, codel_interval_ms=50)
        capacity = state.capacity
        assert (capacity.concurrency, capacity.queue) == (1, 20)
        assert (capacity.discipline, capacity.codel_target_ms, capacity.codel_interval_ms) == (
            "codel",
            2,
            50,
        )
        metrics = await lab.metrics("db")
        assert metrics[("herdlab_db_queue_discipline_info", (("discipline", "codel"),))] == 1
        assert metrics[("herdlab_db_codel_target_seconds", ())] == 0.002
        assert metrics[("herdlab_db_codel_interval_seconds", ())] == 0.05
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await scene.set_queue(**change)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in (error.value.details() or ""), error.value.details()
        assert (await lab.db_state()).capacity == capacity


def chaos(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HERDLAB_STATE_DIR": str(state_dir)}
    return subprocess.run(
        [sys.executable, "-m", "chaos", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


async def test_chaos_queue_sets_the_discipline_and_journals_it(
    lab_stack: tuple[LocalStack, StackInfo],
) -> None:
    stack, info = lab_stack
    async with StackClients(info) as lab, Scene(lab):
        dry = await asyncio.to_thread(chaos, stack.state_dir, "queue", "db", "lifo", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert dry.stdout.startswith("would queue db (discipline=lifo)")
        assert (await lab.db_state()).capacity.discipline == "fifo"
        args = ["queue", "db", "codel", "--target", "3ms", "--interval", "40ms", "--json"]
        done = await asyncio.to_thread(chaos, stack.state_dir, *args)
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        assert (doc["verb"], doc["target"], doc["result"]) == ("queue", "db", "ok")
        assert (doc["discipline"], doc["codel_target_ms"], doc["codel_interval_ms"]) == (
            "codel",
            3,
            40,
        )
        capacity = (await lab.db_state()).capacity
        assert (capacity.discipline, capacity.codel_target_ms) == ("codel", 3)
        journal = (stack.state_dir / "journal.jsonl").read_text().splitlines()
        assert [json.loads(line)["verb"] for line in journal] == ["queue"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["queue", "db", "bogus"], "'bogus' is not one of 'fifo', 'codel', 'lifo'"),
        (["queue", "cache", "fifo"], "db only"),
        (["queue", "db", "codel", "--target", "0ms"], "codel target must be in [0.1ms"),
        (["queue", "db", "codel", "--interval", "2m"], "codel interval must be in [1ms, 60000ms]"),
        (
            ["queue", "db", "codel", "--target", "20ms", "--interval", "10ms"],
            "codel target must not exceed codel interval",
        ),
    ],
)
def test_chaos_queue_bad_input_exits_2_with_one_line(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    result = chaos(tmp_path, *args)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("chaos: error: "), result.stderr
    assert needle in lines[0]
