"""The client cures (`herdlab.client.Cures`) over a real grpc.aio server on loopback: every policy's
attempt count, one deadline for all attempts, server pushback, gRPC's own retries switched off,
a stream retried only before its first message, each guard, per-method partitions. The server is
a test service of its own (raw bytes, scripted answers), counting every attempt that reaches it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from herdlab.client import CallFailed, Cures, channel_options
from herdlab.guards import GuardRejected
from herdlab.retry import GRPC_NATIVE, POLICY_NAMES, RetryPolicy

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
Answer = tuple[grpc.StatusCode, tuple[tuple[str, str], ...]]


def unary(channel: grpc.aio.Channel, method: str) -> Any:
    """`method` on `channel` with raw bytes for request and reply."""
    return channel.unary_unary(method, None, None)


def stream(channel: grpc.aio.Channel, method: str) -> Any:
    return channel.unary_stream(method, None, None)


@dataclass
class Script:
    """What the test server answers: each attempt of a method takes the next scripted failure
    (code, trailing metadata); when none is left it succeeds. `hang` makes attempts wait until
    their deadline; `messages` is how many a stream sends before its scripted failure."""

    failures: dict[str, list[Answer]] = field(default_factory=dict)
    arrivals: dict[str, list[float]] = field(default_factory=dict)
    remaining: list[float | None] = field(default_factory=list)
    hang: bool = False
    stream_messages: list[int] = field(default_factory=list)

    def arrived(self, method: str) -> list[float]:
        return self.arrivals.setdefault(method, [])


async def _abort(
    context: Any, code: grpc.StatusCode, trailing: tuple[tuple[str, str], ...]
) -> None:
    # Trailing metadata only when there is some: grpc.aio then sends the status with headers,
    # which commits the call and so keeps gRPC's own retries from retrying it (gRFC A6).
    if trailing:
        await context.abort(code, f"scripted {code.name}", trailing_metadata=trailing)
    await context.abort(code, f"scripted {code.name}")


def _server_handlers(script: Script) -> grpc.GenericRpcHandler[Any, Any]:
    async def unary(method: str, request: bytes, context: Any) -> bytes:
        script.arrived(method).append(time.monotonic())
        script.remaining.append(context.time_remaining())
        if script.hang:
            await asyncio.Event().wait()  # until the caller's deadline cancels it
        queue = script.failures.get(method, [])
        if queue:
            await _abort(context, *queue.pop(0))
        return b"ok:" + request

    async def stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
        script.arrived("Stream").append(time.monotonic())
        sends = script.stream_messages.pop(0) if script.stream_messages else 3
        for n in range(sends):
            yield f"m{n}".encode()
        queue = script.failures.get("Stream", [])
        if queue:
            await _abort(context, *queue.pop(0))

    def method(name: str) -> grpc.RpcMethodHandler[Any, Any]:
        async def behave(request: bytes, context: Any) -> bytes:
            return await unary(name, request, context)

        return grpc.unary_unary_rpc_method_handler(behave)

    return grpc.method_handlers_generic_handler(
        "t.T",
        {
            "A": method("A"),
            "B": method("B"),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
        },
    )


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, Script]]:
    script = Script()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_server_handlers(script),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", script
    finally:
        await asyncio.wait_for(server.stop(None), 10.0)


def fast(name: str, **changes: Any) -> RetryPolicy:
    """A policy with millisecond sleeps, so a test's retries cost no time."""
    params: dict[str, Any] = {"base_s": 0.001, "cap_s": 0.002, "max_attempts": 4, "seed": 1}
    params.update(changes)
    return RetryPolicy(name=name, **params)


def failing(n: int, code: grpc.StatusCode = UNAVAILABLE, trailing: Any = ()) -> list[Answer]:
    return [(code, tuple(trailing)) for _ in range(n)]


async def call(channel: grpc.aio.Channel, method: str = "A", deadline_s: float = 5.0) -> bytes:
    reply: bytes = await unary(channel, f"/t.T/{method}")(b"x", timeout=deadline_s)
    return reply


@pytest.mark.parametrize("name", [n for n in POLICY_NAMES if n != GRPC_NATIVE])
async def test_every_policy_makes_its_attempts_and_no_more(
    served: tuple[str, Script], name: str
) -> None:
    target, script = served
    script.failures["A"] = failing(2)
    cures = Cures(fast(name))
    async with cures.insecure_channel(target) as channel:
        if name == "none":
            with pytest.raises(CallFailed) as failed:
                await call(channel)
            assert failed.value.code() is UNAVAILABLE and failed.value.attempts == 1
            assert len(script.arrived("A")) == 1
        else:
            assert await call(channel) == b"ok:x"
            assert len(script.arrived("A")) == 3  # two failures, then the success
    assert cures.sent == len(script.arrived("A"))


async def test_a_policy_that_gives_up_raises_the_last_status_with_its_attempts(
    served: tuple[str, Script],
) -> None:
    target, script = served
    script.failures["A"] = failing(10)
    async with Cures(fast("full", max_attempts=4)).insecure_channel(target) as channel:
        with pytest.raises(CallFailed) as failed:
            await call(channel)
    assert failed.value.code() is UNAVAILABLE
    assert failed.value.attempts == 4 and "after 4 attempt(s)" in (failed.value.details() or "")
    assert isinstance(failed.value, grpc.aio.AioRpcError)
    assert len(script.arrived("A")) == 4


async def test_an_error_the_policy_does_not_retry_comes_through_as_sent(
    served: tuple[str, Script],
) -> None:
    target, script = served
    script.failures["A"] = failing(1, grpc.StatusCode.INVALID_ARGUMENT)
    async with Cures(fast("full")).insecure_channel(target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await call(channel)
    assert not isinstance(failed.value, CallFailed)
    assert failed.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert failed.value.details() == "scripted INVALID_ARGUMENT"
    assert len(script.arrived("A")) == 1


async def test_one_deadline_bounds_every_attempt_and_sleep(served: tuple[str, Script]) -> None:
    """The caller's 0.3 s is the whole call's budget: attempts of 0.1 s each, at most as many as
    fit, and the call ends with the budget instead of after 50 attempts."""
    target, script = served
    script.hang = True
    policy = fast("fixed", max_attempts=50, attempt_timeout_s=0.1, max_total_s=30)
    started = time.monotonic()
    async with Cures(policy).insecure_channel(target) as channel:
        with pytest.raises(CallFailed) as failed:
            await call(channel, deadline_s=0.3)
    elapsed = time.monotonic() - started
    assert failed.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert (
        1 <= len(script.arrived("A")) <= 4
    )  # 0.3 s holds at most 3 attempts of 0.1 s, and a 4th cut
    # Each attempt's deadline, as the server saw it, is the policy's, cut to what was left.
    assert all(r is not None and r <= 0.1 + 0.01 for r in script.remaining)
    assert elapsed < 2.5  # 50 attempts of 0.1 s would take 5 s


async def test_server_pushback_sets_the_next_attempts_time(served: tuple[str, Script]) -> None:
    """gRFC A6: a pushback of 150 ms is waited exactly, instead of the policy's 5 s backoff."""
    target, script = served
    script.failures["A"] = failing(
        1, grpc.StatusCode.RESOURCE_EXHAUSTED, [("grpc-retry-pushback-ms", "150")]
    )
    policy = RetryPolicy(name="fixed", base_s=5.0, cap_s=5.0, max_attempts=3, max_total_s=30)
    async with Cures(policy).insecure_channel(target) as channel:
        assert await call(channel, deadline_s=3.0) == b"ok:x"
    first, second = script.arrived("A")
    assert 0.15 <= second - first < 5.0


async def test_a_negative_pushback_stops_the_retries(served: tuple[str, Script]) -> None:
    target, script = served
    script.failures["A"] = failing(3, UNAVAILABLE, [("grpc-retry-pushback-ms", "-1")])
    async with Cures(fast("full")).insecure_channel(target) as channel:
        with pytest.raises(CallFailed) as failed:
            await call(channel)
    assert failed.value.attempts == 1 and len(script.arrived("A")) == 1


async def test_pushback_ignored_when_switched_off(served: tuple[str, Script]) -> None:
    target, script = served
    script.failures["A"] = failing(1, UNAVAILABLE, [("grpc-retry-pushback-ms", "-1")])
    async with Cures(fast("full"), pushback=False).insecure_channel(target) as channel:
        assert await call(channel) == b"ok:x"
    assert len(script.arrived("A")) == 2


# gRPC's own retries, as a user's channel might have them: 5 attempts per call.
GRPC_RETRIES: list[tuple[str, Any]] = [
    ("grpc.enable_retries", 1),
    (
        "grpc.service_config",
        RetryPolicy(GRPC_NATIVE, base_s=0.005, cap_s=0.02, max_attempts=5).grpc_service_config(),
    ),
]


async def test_grpc_retries_are_switched_off_and_do_not_multiply_attempts(
    served: tuple[str, Script],
) -> None:
    target, script = served
    script.failures["A"] = failing(100)
    # The options alone: gRPC makes 5 attempts of one call.
    async with grpc.aio.insecure_channel(target, options=GRPC_RETRIES) as plain:
        with pytest.raises(grpc.aio.AioRpcError):
            await call(plain)
    assert len(script.arrived("A")) == 5
    script.arrivals.clear()
    # The same options through the cures: the policy's 3 attempts, each one attempt.
    cures = Cures(fast("fixed", max_attempts=3))
    assert ("grpc.enable_retries", 0) in channel_options(cures.policy, GRPC_RETRIES)
    async with cures.insecure_channel(target, GRPC_RETRIES) as channel:
        with pytest.raises(CallFailed) as failed:
            await call(channel)
    assert failed.value.attempts == 3
    assert len(script.arrived("A")) == 3


async def test_grpc_native_hands_the_retries_to_grpc(served: tuple[str, Script]) -> None:
    target, script = served
    script.failures["A"] = failing(100)
    cures = Cures(fast(GRPC_NATIVE, base_s=0.005, cap_s=0.02, max_attempts=3))
    async with cures.insecure_channel(target) as channel:
        with pytest.raises(CallFailed) as failed:
            await call(channel)
    assert failed.value.attempts == 1  # the application's one call...
    assert len(script.arrived("A")) == 3  # ...of gRPC's three attempts


async def test_a_stream_is_retried_before_its_first_message(served: tuple[str, Script]) -> None:
    target, script = served
    script.failures["Stream"] = failing(2)
    script.stream_messages = [0, 0, 3]  # two attempts fail before any message
    async with Cures(fast("full")).insecure_channel(target) as channel:
        received = [m async for m in stream(channel, "/t.T/Stream")(b"x", timeout=5.0)]
    assert received == [b"m0", b"m1", b"m2"]
    assert len(script.arrived("Stream")) == 3


async def test_a_stream_is_not_retried_after_its_first_message(served: tuple[str, Script]) -> None:
    target, script = served
    script.failures["Stream"] = failing(5)
    script.stream_messages = [2]
    received: list[bytes] = []
    async with Cures(fast("full")).insecure_channel(target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            async for message in stream(channel, "/t.T/Stream")(b"x", timeout=5.0):
                received.append(message)
    assert received == [b"m0", b"m1"]
    assert failed.value.code() is UNAVAILABLE
    assert len(script.arrived("Stream")) == 1


async def test_a_breaker_refuses_locally_with_unavailable(served: tuple[str, Script]) -> None:
    target, script = served
    script.failures["A"] = failing(100)
    cures = Cures(fast("fixed", max_attempts=5), guards="breaker:failures=2,reset=10s")
    async with cures.insecure_channel(target) as channel:
        with pytest.raises(CallFailed) as failed:
            await call(channel)
    assert len(script.arrived("A")) == 2  # the breaker opened on the second failure
    assert failed.value.attempts == 5
    assert isinstance(failed.value.cause, GuardRejected) and failed.value.cause.guard == "breaker"
    assert failed.value.code() is UNAVAILABLE


async def test_a_budget_refuses_retries_once_spent(served: tuple[str, Script]) -> None:
    target, script = served
    script.failures["A"] = failing(100)
    cures = Cures(fast("fixed", max_attempts=4), guards="budget:max_tokens=2,token_ratio=0.1")
    async with cures.insecure_channel(target) as channel:
        with pytest.raises(CallFailed) as failed:
            await call(channel)
    assert len(script.arrived("A")) == 1
    assert failed.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_a_throttle_refuses_most_calls_to_a_backend_that_accepts_none(
    served: tuple[str, Script],
) -> None:
    target, script = served
    script.failures["A"] = failing(1000)
    cures = Cures(fast("none"), guards="throttle:k=1.1", rng=random.Random(7))
    async with cures.insecure_channel(target) as channel:
        outcomes = await asyncio.gather(
            *(call(channel) for _ in range(100)), return_exceptions=True
        )
    refused = [
        o for o in outcomes if isinstance(o, CallFailed) and isinstance(o.cause, GuardRejected)
    ]
    assert len(script.arrived("A")) + len(refused) == 100
    assert len(refused) > 50


async def test_a_limit_keeps_calls_in_flight_at_its_slots() -> None:
    in_flight = 0
    peak = 0
    gate = asyncio.Event()

    async def held(request: bytes, context: Any) -> bytes:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await gate.wait()
        in_flight -= 1
        return b"held"

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "t.H", {"M": grpc.unary_unary_rpc_method_handler(held)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    cures = Cures(fast("none"), guards="limit:n=2")
    try:
        async with cures.insecure_channel(f"127.0.0.1:{port}") as channel:
            calls = [
                asyncio.ensure_future(unary(channel, "/t.H/M")(b"", timeout=5.0)) for _ in range(6)
            ]
            limit = cures.guards.guards[0]
            for _ in range(1000):
                if limit.state()["waiting"] == 4 and in_flight == 2:
                    break
                await asyncio.sleep(0.005)
            assert (in_flight, limit.state()["waiting"]) == (2, 4)
            gate.set()
            assert await asyncio.gather(*calls) == [b"held"] * 6
    finally:
        await server.stop(None)
    assert peak == 2


async def test_per_method_partitions_keep_one_methods_breaker_from_the_others(
    served: tuple[str, Script],
) -> None:
    target, script = served
    script.failures["A"] = failing(100)
    spec = "breaker:failures=1,reset=10s"
    shared = Cures(fast("none"), guards=spec)
    partitioned = Cures(fast("none"), guards=spec, per_method=True)
    for cures, b_refused in ((shared, True), (partitioned, False)):
        async with cures.insecure_channel(target) as channel:
            with pytest.raises(CallFailed):
                await call(channel, "A")  # opens the breaker A's calls go through
            if b_refused:
                with pytest.raises(CallFailed) as failed:
                    await call(channel, "B")
                assert isinstance(failed.value.cause, GuardRejected)
            else:
                assert await call(channel, "B") == b"ok:x"
    assert set(partitioned.partitions()) == {"", "/t.T/A", "/t.T/B"}


def test_methods_name_their_own_partitions() -> None:
    cures = Cures("full", guards="none", methods={"t.T": "breaker", "/t.U/M": "limit:n=3"})
    assert cures.partition("/t.T/A") == "t.T" and cures.partition("/t.T/B") == "t.T"
    assert cures.partition("/t.U/M") == "/t.U/M"
    assert cures.partition("/t.U/N") == ""
    assert cures.guards_for("/t.T/A") is cures.guards_for("/t.T/B")
    assert cures.guards_for("/t.U/M").spec == "limit:n=3"
    assert cures.guards_for("/t.U/N").spec == "none"


def test_a_bad_guard_spec_fails_at_once_with_one_line() -> None:
    with pytest.raises(ValueError, match="unknown guard 'nope'"):
        Cures(guards="nope")
    with pytest.raises(ValueError, match="unknown guard"):
        Cures(methods={"t.T": "limit+nope"})
