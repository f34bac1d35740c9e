"""The load shedder (`herdlab.server.LoadShedder`) on a real grpc.aio server under real overload:
slots, a bounded queue, refusals with RESOURCE_EXHAUSTED and a pushback hint, deadline-aware
drops, codel shedding, an adaptive limit, streams holding their slot, and the client cures
honouring its hint. Handlers are held on an event, so what is in flight is what the test says."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from herdlab.client import CallFailed, Cures
from herdlab.retry import PUSHBACK_KEY, RetryPolicy, pushback_s
from herdlab.server import AdaptiveLifo, CoDel, LoadShedder, limit_algorithm

EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


def unary(channel: grpc.aio.Channel, method: str) -> Any:
    """`method` on `channel` with raw bytes for request and reply."""
    return channel.unary_unary(method, None, None)


def stream(channel: grpc.aio.Channel, method: str) -> Any:
    return channel.unary_stream(method, None, None)


@dataclass
class Held:
    """Handlers that wait for `gate`; `running` counts those inside, `ran` every one that ran."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    running: int = 0
    ran: int = 0

    async def unary(self, request: bytes, context: Any) -> bytes:
        self.running += 1
        self.ran += 1
        try:
            await self.gate.wait()
        finally:
            self.running -= 1
        return b"ok"

    async def stream(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        self.running += 1
        self.ran += 1
        try:
            yield b"first"
            await self.gate.wait()
            yield b"last"
        finally:
            self.running -= 1


async def until(condition: Callable[[], bool]) -> None:
    """Waits (bounded) for a state the server reaches as the calls arrive."""
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.002)
    raise AssertionError("state not reached")


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[LoadShedder], Any]]:
    servers: list[grpc.aio.Server] = []

    async def start(shedder: LoadShedder) -> tuple[str, Held]:
        held = Held()
        server = grpc.aio.server(interceptors=[shedder])
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "t.S",
                    {
                        "M": grpc.unary_unary_rpc_method_handler(held.unary),
                        "Free": grpc.unary_unary_rpc_method_handler(held.unary),
                        "Stream": grpc.unary_stream_rpc_method_handler(held.stream),
                    },
                ),
            )
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        return f"127.0.0.1:{port}", held

    yield start
    for server in servers:
        await asyncio.wait_for(server.stop(None), 10.0)


def calls(channel: grpc.aio.Channel, n: int, timeout: float = 5.0) -> list[asyncio.Future[Any]]:
    method = unary(channel, "/t.S/M")
    return [asyncio.ensure_future(method(b"", timeout=timeout)) for _ in range(n)]


async def test_overload_is_shed_at_the_door_with_a_pushback_hint(serve: Any) -> None:
    shedder = LoadShedder(2, queue=3, pushback_s=0.2)
    target, held = await serve(shedder)
    async with grpc.aio.insecure_channel(target) as channel:
        pending = calls(channel, 10)
        await until(lambda: sum(f.done() for f in pending) == 5)  # the refusals' answers
        assert (held.running, shedder.capacity.queued) == (2, 3)
        assert shedder.counts["queue_full"] == 5
        refused = [f for f in pending if f.done()]
        for future in refused:
            error = future.exception()
            assert isinstance(error, grpc.aio.AioRpcError) and error.code() is EXHAUSTED
            hint = pushback_s(error)
            assert hint is not None and 0.1 <= hint <= 0.3  # 0.2 s x uniform(0.5, 1.5)
        held.gate.set()
        assert [await f for f in pending if f not in refused] == [b"ok"] * 5
    assert held.ran == 5 and shedder.counts["served"] == 5


async def test_a_call_that_cannot_meet_its_deadline_is_dropped_before_its_handler(
    serve: Any,
) -> None:
    shedder = LoadShedder(1, queue=10, min_service_s=0.2)
    target, held = await serve(shedder)
    async with grpc.aio.insecure_channel(target) as channel:
        holder = calls(channel, 1)
        await until(lambda: held.running == 1)
        # Less time left than a call takes: dropped at once, no slot, no handler.
        with pytest.raises(grpc.aio.AioRpcError) as short:
            await unary(channel, "/t.S/M")(b"", timeout=0.1)
        assert short.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        # Enough time, but no slot frees before it runs short: the server answers first.
        with pytest.raises(grpc.aio.AioRpcError) as waited:
            await unary(channel, "/t.S/M")(b"", timeout=0.4)
        assert waited.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert "no slot free before the caller's deadline" in (waited.value.details() or "")
        held.gate.set()
        await holder[0]
    assert held.ran == 1 and shedder.counts["deadline"] == 2


async def test_codel_sheds_a_waiter_of_a_standing_queue(serve: Any) -> None:
    shedder = LoadShedder(1, queue=10, discipline=CoDel(target=0.005, interval=0.05))
    target, held = await serve(shedder)
    async with grpc.aio.insecure_channel(target) as channel:
        holder = calls(channel, 1)
        await until(lambda: held.running == 1)
        with pytest.raises(grpc.aio.AioRpcError) as shed:
            await unary(channel, "/t.S/M")(b"", timeout=5.0)
        assert shed.value.code() is EXHAUSTED and "codel" in (shed.value.details() or "")
        held.gate.set()
        await holder[0]
    assert shedder.counts["shed"] == 1


async def test_an_adaptive_limit_grows_with_calls_served_at_its_limit(serve: Any) -> None:
    shedder = LoadShedder("aimd,initial=2,max=10", queue=10)
    target, held = await serve(shedder)
    held.gate.set()
    async with grpc.aio.insecure_channel(target) as channel:
        for _ in range(3):
            assert await asyncio.gather(*calls(channel, 4)) == [b"ok"] * 4
    assert shedder.capacity.concurrency > 2


async def test_a_stream_holds_its_slot_until_it_ends(serve: Any) -> None:
    shedder = LoadShedder(1, queue=0)
    target, held = await serve(shedder)
    async with grpc.aio.insecure_channel(target) as channel:
        watch = stream(channel, "/t.S/Stream")(b"", timeout=5.0)
        assert await watch.read() == b"first"
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await unary(channel, "/t.S/M")(b"", timeout=5.0)
        assert refused.value.code() is EXHAUSTED
        held.gate.set()
        assert await watch.read() == b"last"
        await until(lambda: shedder.capacity.in_flight == 0)
        assert await unary(channel, "/t.S/M")(b"", timeout=5.0) == b"ok"


async def test_only_the_methods_named_are_limited(serve: Any) -> None:
    shedder = LoadShedder(1, queue=0, methods={"/t.S/M"})
    target, held = await serve(shedder)
    async with grpc.aio.insecure_channel(target) as channel:
        holder = calls(channel, 1)
        await until(lambda: held.running == 1)
        free = asyncio.ensure_future(unary(channel, "/t.S/Free")(b"", timeout=5.0))
        await until(lambda: held.running == 2)
        held.gate.set()
        assert [await holder[0], await free] == [b"ok", b"ok"]


async def test_the_client_cures_come_back_when_the_hint_says(serve: Any) -> None:
    """A retry storm against 1 slot and no queue: the cures retry after each pushback hint and
    every call is answered; without the hint's spacing most would have run out of attempts."""
    shedder = LoadShedder(1, queue=0, pushback_s=0.05)
    target, held = await serve(shedder)
    held.gate.set()
    policy = RetryPolicy("fixed", base_s=0.001, cap_s=0.001, max_attempts=100, max_total_s=10)
    async with Cures(policy).insecure_channel(target) as channel:
        answers = await asyncio.gather(*calls(channel, 20), return_exceptions=True)
    assert answers == [b"ok"] * 20
    assert shedder.counts["served"] == 20


async def test_a_refusal_without_pushback_carries_no_hint(serve: Any) -> None:
    shedder = LoadShedder(1, queue=0, pushback=False)
    target, held = await serve(shedder)
    async with grpc.aio.insecure_channel(target) as channel:
        holder = calls(channel, 1)
        await until(lambda: held.running == 1)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await unary(channel, "/t.S/M")(b"", timeout=5.0)
        assert refused.value.code() is EXHAUSTED
        trailing: Any = refused.value.trailing_metadata() or ()
        assert PUSHBACK_KEY not in dict(trailing)
        held.gate.set()
        await holder[0]


def test_limits_are_given_in_the_limit_guards_grammar() -> None:
    assert limit_algorithm(8) == 8
    assert limit_algorithm("8").limit == 8  # type: ignore[union-attr]
    assert limit_algorithm("vegas,max=50").name == "vegas"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="unknown algorithm 'fast'"):
        limit_algorithm("fast")
    with pytest.raises(ValueError, match="queue must be >= 0"):
        LoadShedder(1, queue=-1)


async def test_a_call_failed_by_the_shedder_is_a_typed_error_for_the_cures(serve: Any) -> None:
    shedder = LoadShedder(1, queue=0, pushback=False)
    target, held = await serve(shedder)
    policy = RetryPolicy("fixed", base_s=0.001, cap_s=0.001, max_attempts=3)
    async with grpc.aio.insecure_channel(target) as plain:
        holder = calls(plain, 1)
        await until(lambda: held.running == 1)
        async with Cures(policy).insecure_channel(target) as channel:
            with pytest.raises(CallFailed) as failed:
                await unary(channel, "/t.S/M")(b"", timeout=5.0)
        assert failed.value.code() is EXHAUSTED and failed.value.attempts == 3
        held.gate.set()
        await holder[0]
    assert shedder.counts["queue_full"] == 3


async def test_the_hint_is_the_calls_ahead_over_the_slots_times_the_service_time(
    serve: Any,
) -> None:
    shedder = LoadShedder(2, queue=3, min_service_s=0.1)
    target, held = await serve(shedder)
    async with grpc.aio.insecure_channel(target) as channel:
        pending = calls(channel, 6)
        await until(lambda: any(f.done() for f in pending))
        refused = next(f for f in pending if f.done())
        # 5 calls ahead over 2 slots x 0.1 s (nothing served yet) = 0.25 s, jittered x 0.5-1.5.
        hint = pushback_s(refused.exception())  # type: ignore[arg-type]
        assert hint is not None and 0.125 <= hint <= 0.375
        held.gate.set()
        await asyncio.gather(*(f for f in pending if f is not refused))


async def test_adaptive_lifo_serves_the_newest_waiter_of_a_standing_queue(serve: Any) -> None:
    shedder = LoadShedder(1, queue=10, discipline=AdaptiveLifo(interval=0.01))
    target, held = await serve(shedder)
    order: list[int] = []
    async with grpc.aio.insecure_channel(target) as channel:
        holder = calls(channel, 1)
        await until(lambda: held.running == 1)
        waiters = []
        for n in range(3):
            waiters.append(asyncio.ensure_future(_numbered(channel, n, order)))
            await until(lambda n=n: shedder.capacity.queued == n + 1)  # type: ignore[misc]
        await until(lambda: shedder.capacity.standing)
        held.gate.set()
        await asyncio.gather(holder[0], *waiters)
    assert order[0] == 2  # the newest first while the queue stands


async def _numbered(channel: grpc.aio.Channel, n: int, order: list[int]) -> None:
    await unary(channel, "/t.S/M")(b"", timeout=5.0)
    order.append(n)
