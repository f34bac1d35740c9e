"""The wire-fault proxy over real sockets on 127.0.0.1: each fault as a client sees it, the
rules every fault shares (direction, expiry, removal), bad faults refused, and nothing of the
proxy (task or socket) left behind once it stops.

The service behind the proxy is a tiny asyncio TCP server that records what reached it and
echoes it back, so a test can say what went through and what the client got.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import psutil
import pytest

from chaos.wire.admin import fault_doc, fault_message
from chaos.wire.gate import PROBE_S, AdaptiveBucket, Holding, TokenBucket, Waves
from chaos.wire.proxy import Link, parse_fault
from chaos.wire.stats import LinkStats
from chaos.wire.toxics import TOXICS
from chaos.wire.toxics.age import Age
from chaos.wire.toxics.latency import Latency

HOST = "127.0.0.1"


@dataclass
class Upstream:
    """An echo server that records every byte it received."""

    received: bytearray = field(default_factory=bytearray)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    server: asyncio.Server | None = None
    handlers: set[asyncio.Task[None]] = field(default_factory=set)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            while chunk := await reader.read(65536):
                self.received += chunk
                self.arrived.set()
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self.handlers.discard(task)

    async def wait_for(self, data: bytes) -> None:
        """Until `data` has reached the server (bounded)."""
        async with asyncio.timeout(5):
            while data not in self.received:
                self.arrived.clear()
                await self.arrived.wait()


@pytest.fixture()
async def proxied() -> AsyncIterator[tuple[Link, Upstream]]:
    upstream = Upstream()
    upstream.server = await asyncio.start_server(upstream.handle, HOST, 0)
    port = upstream.server.sockets[0].getsockname()[1]
    link = Link("cache", HOST, port, rng=random.Random(1))
    await link.start(HOST, 0)
    try:
        yield link, upstream
    finally:
        await link.stop()
        upstream.server.close()
        for task in list(upstream.handlers):
            task.cancel()
        await asyncio.gather(*upstream.handlers, return_exceptions=True)
        await upstream.server.wait_closed()


async def until(link: Link, holds: Callable[[], bool]) -> None:
    """Waits (at most 5 s) for `holds()`, re-checked each time the link reports a change."""
    async with asyncio.timeout(5):
        while not holds():
            link.changed.clear()
            await link.changed.wait()


async def connect(link: Link) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = link.listen.rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


async def read_exactly(reader: asyncio.StreamReader, n: int) -> bytes:
    async with asyncio.timeout(5):
        return await reader.readexactly(n)


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def test_without_faults_bytes_pass_both_ways(proxied: tuple[Link, Upstream]) -> None:
    link, upstream = proxied
    reader, writer = await connect(link)
    writer.write(b"hello")
    assert await read_exactly(reader, 5) == b"hello"
    assert bytes(upstream.received) == b"hello"
    await close(writer)


async def test_latency_delays_each_chunk_at_least_its_latency(
    proxied: tuple[Link, Upstream],
) -> None:
    link, _ = proxied
    link.add(parse_fault("", "cache", "latency", {"latency_ms": 150}, stream="downstream"))
    reader, writer = await connect(link)
    loop = asyncio.get_running_loop()
    started = loop.time()
    writer.write(b"ping")
    assert await read_exactly(reader, 4) == b"ping"
    assert loop.time() - started >= 0.15
    await close(writer)


def test_latency_jitter_stays_within_its_bounds_and_never_below_zero() -> None:
    rng = random.Random(7)
    toxic = Latency(latency_ms=10, jitter_ms=50)
    delays = [toxic.delay_s(rng) for _ in range(1000)]
    assert all(0.0 <= d <= 0.060 for d in delays)
    assert min(delays) == 0.0  # draws below zero are clamped


async def test_blackhole_keeps_the_connection_and_drops_the_bytes_until_removed(
    proxied: tuple[Link, Upstream],
) -> None:
    link, upstream = proxied
    reader, writer = await connect(link)
    writer.write(b"before|")
    assert await read_exactly(reader, 7) == b"before|"
    fault = parse_fault("cache-partition", "cache", "blackhole", {})
    link.add(fault)
    writer.write(b"lost|")
    conn = next(iter(link.connections))
    await until(link, lambda: conn.dropped == 5)  # the proxy has read them and dropped them
    # Bug: a partition that closed or reset the connection would be a kill, not a partition.
    assert len(link.connections) == 1 and not conn.closed
    link.remove("cache-partition")
    writer.write(b"after")
    await upstream.wait_for(b"after")
    assert bytes(upstream.received) == b"before|after"
    assert await read_exactly(reader, 5) == b"after"
    await close(writer)


async def test_reset_closes_the_client_side_with_rst(proxied: tuple[Link, Upstream]) -> None:
    link, _ = proxied
    reader, writer = await connect(link)
    writer.write(b"x")
    assert await read_exactly(reader, 1) == b"x"
    await link.apply_once(parse_fault("", "cache", "reset", {}, once=True))
    with pytest.raises(ConnectionResetError):
        async with asyncio.timeout(5):
            await reader.read(1)
    assert link.faults == {}  # applied once, then removed
    await close(writer)


async def test_reset_in_force_resets_new_connections(proxied: tuple[Link, Upstream]) -> None:
    link, _ = proxied
    link.add(parse_fault("", "cache", "reset", {}))
    reader, writer = await connect(link)
    with pytest.raises(ConnectionResetError):
        async with asyncio.timeout(5):
            await reader.read(1)
    await close(writer)


async def test_timeout_drops_bytes_then_closes(proxied: tuple[Link, Upstream]) -> None:
    link, upstream = proxied
    link.add(parse_fault("", "cache", "timeout", {"timeout_ms": 100}))
    reader, writer = await connect(link)
    writer.write(b"dropped")
    async with asyncio.timeout(5):
        assert await reader.read(10) == b""  # EOF: closed, not reset
    assert bytes(upstream.received) == b""
    await close(writer)


async def test_limit_passes_that_many_bytes_then_closes(proxied: tuple[Link, Upstream]) -> None:
    link, upstream = proxied
    link.add(parse_fault("", "cache", "limit", {"max_bytes": 5}, stream="upstream"))
    reader, writer = await connect(link)
    writer.write(b"0123456789")
    async with asyncio.timeout(5):
        assert await reader.read(100) in (b"01234", b"")
        assert await reader.read(100) == b""
    assert bytes(upstream.received) in (b"01234", b"")
    assert bytes(upstream.received) == bytes(upstream.received)[:5]
    await close(writer)


async def test_bandwidth_takes_at_least_size_over_rate(proxied: tuple[Link, Upstream]) -> None:
    link, _ = proxied
    link.add(parse_fault("", "cache", "bandwidth", {"rate_kbps": 10}, stream="downstream"))
    reader, writer = await connect(link)
    payload = b"z" * 3072  # 3 KiB at 10 KiB/s: at least 0.3 s
    loop = asyncio.get_running_loop()
    started = loop.time()
    writer.write(payload)
    assert await read_exactly(reader, len(payload)) == payload
    assert loop.time() - started >= 0.3
    await close(writer)


async def relaying_straight(link: Link) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection through `link` that has carried bytes both ways with no fault in force,
    straight through (no fault acted on its bytes, so none went through a pump)."""
    reader, writer = await connect(link)
    for _ in range(3):
        writer.write(b"warm")
        assert await read_exactly(reader, 4) == b"warm"
    assert link.straight == {"upstream": True, "downstream": True}
    return reader, writer


async def test_latency_added_to_a_live_straight_connection_delays_its_next_chunk(
    proxied: tuple[Link, Upstream],
) -> None:
    link, _ = proxied
    reader, writer = await relaying_straight(link)
    link.add(parse_fault("", "cache", "latency", {"latency_ms": 150}, stream="downstream"))
    assert link.straight == {"upstream": True, "downstream": False}
    loop = asyncio.get_running_loop()
    started = loop.time()
    writer.write(b"ping")
    assert await read_exactly(reader, 4) == b"ping"
    assert loop.time() - started >= 0.15
    await close(writer)


async def test_bandwidth_added_to_a_live_straight_connection_slows_it(
    proxied: tuple[Link, Upstream],
) -> None:
    link, _ = proxied
    reader, writer = await relaying_straight(link)
    link.add(parse_fault("", "cache", "bandwidth", {"rate_kbps": 10}, stream="upstream"))
    loop = asyncio.get_running_loop()
    started = loop.time()
    payload = b"z" * 3072  # 3 KiB at 10 KiB/s: at least 0.3 s
    writer.write(payload)
    assert await read_exactly(reader, len(payload)) == payload
    assert loop.time() - started >= 0.3
    await close(writer)


async def test_limit_and_timeout_added_to_a_live_straight_connection_end_it(
    proxied: tuple[Link, Upstream],
) -> None:
    link, upstream = proxied
    reader, writer = await relaying_straight(link)
    link.add(parse_fault("", "cache", "limit", {"max_bytes": 5}, stream="upstream"))
    writer.write(b"0123456789")
    async with asyncio.timeout(5):
        while await reader.read(100):
            pass  # up to the five bytes the limit passed, then EOF
    assert bytes(upstream.received) in (b"warm" * 3 + b"01234", b"warm" * 3)
    await close(writer)
    link.remove("cache-limit")
    reader, writer = await relaying_straight(link)
    link.add(parse_fault("", "cache", "timeout", {"timeout_ms": 100}))
    writer.write(b"dropped")
    async with asyncio.timeout(5):
        assert await reader.read(10) == b""  # closed, and the bytes never reached the service
    assert b"dropped" not in upstream.received
    await close(writer)


async def test_a_writer_faster_than_the_service_reads_is_held_back_not_buffered(
    proxied: tuple[Link, Upstream],
) -> None:
    """Backpressure on the straight path: while the service reads nothing, the proxy stops
    reading the client once the service's socket is full, so what the proxy holds is bounded
    and the rest waits in the client's own buffer."""
    link, upstream = proxied
    assert upstream.server is not None
    stalled, released = asyncio.Event(), asyncio.Event()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stalled.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                await released.wait()  # reads nothing until the test is done
        writer.transport.abort()

    silent = await asyncio.start_server(stall, HOST, 0)
    try:
        link.upstream_port = silent.sockets[0].getsockname()[1]
        _, writer = await connect(link)
        async with asyncio.timeout(5):
            await stalled.wait()
        await until(link, lambda: bool(link.connections))
        conn = next(iter(link.connections))
        writer.write(b"x" * (64 * 1024 * 1024))
        source, sink = conn.client.transport, conn.upstream.transport
        assert source is not None and sink is not None
        async with asyncio.timeout(10):
            # A transport's state has no event of its own: polled.
            while source.is_reading():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        held = len(conn.directions["upstream"].buffer) + sink.get_write_buffer_size()
        assert held <= 4 * 1024 * 1024
        assert writer.transport.get_write_buffer_size() >= 32 * 1024 * 1024
        writer.transport.abort()
    finally:
        released.set()
        silent.close()
        await silent.wait_closed()


async def test_a_fault_on_one_direction_leaves_the_other(proxied: tuple[Link, Upstream]) -> None:
    link, upstream = proxied
    link.add(parse_fault("", "cache", "blackhole", {}, stream="downstream"))
    reader, writer = await connect(link)
    writer.write(b"up")
    await upstream.wait_for(b"up")  # upstream passes; the echo coming back is dropped
    conn = next(iter(link.connections))
    await until(link, lambda: conn.dropped == 2)
    link.remove("cache-blackhole")
    writer.write(b"again")
    assert await read_exactly(reader, 5) == b"again"
    await close(writer)


async def test_a_fault_given_a_duration_is_removed_by_the_proxy(
    proxied: tuple[Link, Upstream],
) -> None:
    link, _ = proxied
    installed = link.add(parse_fault("", "cache", "blackhole", {}, for_ms=50))
    assert installed.expires_at is not None and installed.timer is not None
    await until(link, lambda: not link.faults)
    assert link.active == {"upstream": (), "downstream": ()}


@pytest.mark.parametrize(
    ("kind", "attributes", "options", "needle"),
    [
        ("nosuch", {}, {}, "unknown wire fault kind 'nosuch'"),
        ("latency", {"latency_ms": -1}, {}, "latency latency_ms must be in"),
        ("latency", {"delay": 1}, {}, "latency has no attribute 'delay'"),
        ("latency", {"latency_ms": float("nan")}, {}, "must be in"),
        ("blackhole", {}, {"stream": "sideways"}, "stream must be one of"),
        ("blackhole", {}, {"toxicity": 0.0}, "toxicity must be in (0, 1]"),
        ("blackhole", {}, {"once": True}, "once applies to faults on whole connections"),
        ("blackhole", {}, {"for_ms": -5.0}, "for must be in"),
    ],
)
def test_bad_faults_are_refused_naming_the_problem(
    kind: str, attributes: dict[str, float], options: dict[str, object], needle: str
) -> None:
    with pytest.raises(ValueError, match=None) as caught:
        parse_fault("", "cache", kind, attributes, **options)  # type: ignore[arg-type]
    assert needle in str(caught.value)


def test_every_fault_the_issue_names_is_registered() -> None:
    assert set(TOXICS.names()) >= {"latency", "bandwidth", "blackhole", "reset", "timeout", "limit"}


async def test_stop_leaves_no_task_and_no_socket_behind() -> None:
    me = psutil.Process()
    before_tasks = asyncio.all_tasks()
    before_fds = me.num_fds()
    upstream = Upstream()
    upstream.server = await asyncio.start_server(upstream.handle, HOST, 0)
    port = upstream.server.sockets[0].getsockname()[1]
    link = Link("db", HOST, port)
    await link.start(HOST, 0)
    link.add(parse_fault("", "db", "timeout", {"timeout_ms": 60_000}))  # a pending hold
    link.add(parse_fault("slow", "db", "latency", {"latency_ms": 10}, for_ms=60_000))
    clients = [await connect(link) for _ in range(3)]
    for _, writer in clients:
        writer.write(b"x")
    await until(link, lambda: len(link.connections) == 3)
    await link.stop()
    for _, writer in clients:
        await close(writer)
    upstream.server.close()
    await asyncio.gather(*upstream.handlers, return_exceptions=True)
    await upstream.server.wait_closed()
    assert link.connections == set() and link.faults == {}
    assert asyncio.all_tasks() == before_tasks
    assert me.num_fds() == before_fds
    listen_port = int(link.listen.rsplit(":", 1)[1])
    assert not [c for c in me.net_connections() if c.laddr and c.laddr.port == listen_port]


# -- the cures that bring a fleet back slowly: admission (admit, stage) and maximum age ---------


@dataclass
class Clock:
    """The link's clock, moved by hand: a gate's arithmetic (tokens, waves) reads only it.
    Moved by binary fractions of a second, so the arithmetic is exact."""

    now: float = 0.0

    def __call__(self) -> float:
        return self.now


async def passes(link: Link, addresses: list[str] | None = None) -> bool:
    """Connects through `link` and says whether the connection reached the service (its byte
    echoed) or was refused (reset or closed before any byte); the client's own address, as the
    proxy sees it, is appended to `addresses`."""
    reader, writer = await connect(link)
    if addresses is not None:
        addresses.append("{}:{}".format(*writer.get_extra_info("sockname")[:2]))
    try:
        writer.write(b"x")
        async with asyncio.timeout(5):
            return await reader.read(1) == b"x"
    except ConnectionError:
        return False
    finally:
        await close(writer)


def counts(link: Link, name: str) -> dict[str, int]:
    gate = link.faults[name].gate
    assert gate is not None
    return dict(gate.counts)


async def test_admit_passes_the_burst_then_rate_per_second_and_refuses_the_rest(
    proxied: tuple[Link, Upstream],
) -> None:
    link, _ = proxied
    clock = link.clock = Clock()
    link.add(parse_fault("gate", "cache", "admit", {"rate": 2, "burst": 3, "max_wait_ms": 0}))
    assert [await passes(link) for _ in range(5)] == [True] * 3 + [False] * 2
    clock.now += 1.0  # two tokens
    assert [await passes(link) for _ in range(3)] == [True, True, False]
    clock.now += 0.25  # half a token: nothing
    assert not await passes(link)
    assert counts(link, "gate") == {
        "admitted": 5,
        "held": 0,
        "refused": 4,
        "expired": 0,
        "queued": 0,
        "pending": 0,
    }


async def test_admit_holds_the_excess_in_order_until_a_token_is_free(
    proxied: tuple[Link, Upstream],
) -> None:
    link, _ = proxied
    clock = link.clock = Clock()
    link.add(parse_fault("gate", "cache", "admit", {"rate": 16, "burst": 1, "max_wait_ms": 5000}))
    assert await passes(link)  # the burst of one
    held = [asyncio.create_task(passes(link)) for _ in range(3)]
    await until(link, lambda: counts(link, "gate")["queued"] == 3)
    clock.now += 1 / 16  # one token: one of the three passes, the others still wait
    await until(link, lambda: counts(link, "gate")["admitted"] == 2)
    assert counts(link, "gate")["queued"] == 2
    clock.now += 1 / 16
    await until(link, lambda: counts(link, "gate")["admitted"] == 3)
    clock.now += 1 / 16  # a bucket of one keeps one token at most: one per sixteenth
    assert await asyncio.gather(*held) == [True, True, True]
    assert counts(link, "gate") | {"admitted": 4, "held": 3, "queued": 0} == counts(link, "gate")


async def test_admit_resets_a_connection_held_past_its_wait(
    proxied: tuple[Link, Upstream],
) -> None:
    link, upstream = proxied
    link.clock = Clock()  # never moves: no token after the first
    # The next token is due in 10 ms, within the wait: held, and reset when the wait is over.
    link.add(parse_fault("gate", "cache", "admit", {"rate": 100, "burst": 1, "max_wait_ms": 50}))
    assert await passes(link)
    assert not await passes(link)
    assert counts(link, "gate") | {"held": 1, "expired": 1, "queued": 0} == counts(link, "gate")
    assert bytes(upstream.received) == b"x"  # only the admitted one reached the service


async def test_admit_refuses_at_once_a_connection_that_would_wait_past_its_wait(
    proxied: tuple[Link, Upstream],
) -> None:
    link, _ = proxied
    link.clock = Clock()
    link.add(parse_fault("gate", "cache", "admit", {"rate": 4, "burst": 1, "max_wait_ms": 500}))
    assert await passes(link)
    held = [asyncio.create_task(passes(link)) for _ in range(2)]  # due in 250 and 500 ms
    await until(link, lambda: counts(link, "gate")["queued"] == 2)
    assert not await passes(link)  # due in 750 ms: refused now, not reset later
    assert counts(link, "gate") | {"held": 2, "refused": 1, "expired": 0} == counts(link, "gate")
    link.remove("gate")
    assert await asyncio.gather(*held) == [True, True]


async def test_admit_passes_no_more_than_pending_unanswered_connections(
    proxied: tuple[Link, Upstream],
) -> None:
    link, _ = proxied
    link.clock = Clock()
    link.add(parse_fault("gate", "cache", "admit", {"rate": 100, "burst": 10, "pending": 2}))
    first, second = [await connect(link) for _ in range(2)]  # passed; the service says nothing
    await until(link, lambda: counts(link, "gate")["pending"] == 2)
    third = await connect(link)
    await until(link, lambda: counts(link, "gate")["queued"] == 1)
    first[1].write(b"x")  # the service's echo: first answered, a place for the third
    assert await read_exactly(first[0], 1) == b"x"
    await until(link, lambda: counts(link, "gate")["admitted"] == 3)
    assert counts(link, "gate")["pending"] == 2
    await close(second[1])  # ended unanswered: no longer pending
    await until(link, lambda: counts(link, "gate")["pending"] == 1)
    for _, writer in (first, third):
        await close(writer)
    await until(link, lambda: counts(link, "gate")["pending"] == 0)


async def test_one_answer_lets_one_held_connection_through_not_the_line(
    proxied: tuple[Link, Upstream],
) -> None:
    link, _ = proxied
    link.clock = Clock()
    link.add(parse_fault("gate", "cache", "admit", {"rate": 100, "burst": 10, "pending": 1}))
    first = await connect(link)
    await until(link, lambda: counts(link, "gate")["pending"] == 1)
    held = [await connect(link) for _ in range(5)]
    await until(link, lambda: counts(link, "gate")["queued"] == 5)
    first[1].write(b"x")  # answered: one place frees
    assert await read_exactly(first[0], 1) == b"x"
    await until(link, lambda: counts(link, "gate")["admitted"] == 2)
    assert counts(link, "gate") | {"pending": 1, "queued": 4} == counts(link, "gate")
    for _, writer in (first, *held):
        await close(writer)


async def test_clients_gone_from_mid_line_are_skipped_and_not_counted_ahead() -> None:
    all_held = asyncio.Event()

    def changed() -> None:
        if bucket.counts["queued"] == 5:
            all_held.set()

    bucket = TokenBucket(Holding(Clock(), 10.0, changed), rate=64, burst=64, max_pending=1)
    assert await bucket.admit("first")  # passed: pending 1, the line waits for a place
    line = [asyncio.create_task(bucket.admit(f"held-{i}")) for i in range(5)]
    await all_held.wait()
    for gone in line[1:4]:  # three clients give up from mid-line
        gone.cancel()
    await asyncio.gather(*line[1:4], return_exceptions=True)
    assert len(bucket.line) - len(bucket.gone) == 2 and bucket.counts["queued"] == 2
    bucket.settle()  # the first answered: the head of the line passes
    assert await line[0] and bucket.counts["admitted"] == 2
    bucket.settle()  # and then the last, past the three gone
    assert await line[4] and bucket.counts["admitted"] == 3
    assert not bucket.line and not bucket.gone


@pytest.mark.parametrize("steps", range(12))
async def test_a_client_gone_in_any_step_around_its_turn_leaves_no_place_taken(steps: int) -> None:
    """The client of a held connection leaves (its admission cancelled) `steps` steps of the
    loop after its place frees up: whether its turn had come or not, the gate ends with nothing
    pending and nothing queued. One place kept by a client gone in the wrong step would, after
    `max_pending` of them, hold the gate shut for good."""
    queued = asyncio.Event()

    def changed() -> None:
        if bucket.counts["queued"]:
            queued.set()

    bucket = TokenBucket(Holding(Clock(), 10.0, changed), rate=64, burst=64, max_pending=1)
    assert await bucket.admit("first")  # pending 1: the next one is held
    held = asyncio.create_task(bucket.admit("held"))
    await queued.wait()
    bucket.settle()  # the first answered: the held one's turn comes in the next steps
    for _ in range(steps):
        await asyncio.sleep(0)
    held.cancel()
    outcome = (await asyncio.gather(held, return_exceptions=True))[0]
    if outcome is True:  # it had passed before the cancel reached it: the proxy settles it
        bucket.settle()
    assert bucket.counts["pending"] == 0, (outcome, bucket.counts)
    assert bucket.counts["queued"] == 0 and not bucket.line, bucket.counts
    assert bucket.passes("next")  # the place is free for the next connection


async def test_while_the_service_is_down_the_gate_holds_and_lets_one_probe_through() -> None:
    clock = Clock()
    all_held = asyncio.Event()

    def changed() -> None:
        if bucket.counts["queued"] == 3:
            all_held.set()

    bucket = TokenBucket(Holding(clock, 30.0, changed), rate=1024, burst=1024, max_pending=4)
    assert await bucket.admit("first")
    bucket.unreachable()  # its connect was refused: the service is down
    assert bucket.counts["pending"] == 0 and not bucket.passes("newcomer")
    line = [asyncio.create_task(bucket.admit(f"held-{i}")) for i in range(3)]
    await all_held.wait()
    clock.now += PROBE_S  # the next probe is due: the head of the line is let through alone
    assert await line[0] and bucket.counts["admitted"] == 2 and bucket.counts["pending"] == 1
    clock.now += 4 * PROBE_S  # while the probe is out nobody else passes, however long
    assert not bucket.passes("newcomer") and bucket.counts["queued"] == 2
    bucket.answered(0.01)  # the service is back: the probe answered, the line goes on
    bucket.settle()
    assert await asyncio.gather(*line[1:]) == [True, True]
    assert bucket.counts["admitted"] == 4 and bucket.counts["pending"] == 2


async def test_a_service_that_speaks_first_is_counted_answered() -> None:
    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hi")  # as a gRPC server sends its SETTINGS at once in plaintext
        await writer.drain()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(greet, HOST, 0)
    link = Link("cache", HOST, server.sockets[0].getsockname()[1], rng=random.Random(1))
    await link.start(HOST, 0)
    try:
        link.add(parse_fault("gate", "cache", "admit", {"rate": 100, "burst": 10, "pending": 1}))
        reader, writer = await connect(link)
        assert await read_exactly(reader, 2) == b"hi"
        await until(link, lambda: counts(link, "gate")["pending"] == 0)  # its place is free
        assert link.stats.totals.get("answered") == 1
        await close(writer)
    finally:
        await link.stop()
        server.close()
        await server.wait_closed()


def test_a_gate_tells_how_long_a_newcomer_would_wait() -> None:
    clock = Clock()
    bucket = TokenBucket(Holding(clock, 1.0, lambda: None), rate=4, burst=2)
    assert bucket.wait_s("a") == 0  # two tokens in the bucket
    bucket.tokens = 0.5
    assert bucket.wait_s("a") == 0.125  # half a token owed at 4 a second
    waves = Waves(Holding(clock, 1.5, lambda: None), groups=4, every_s=1.0, keeps_up_s=0)
    peers = {Waves.group_of(f"127.0.0.1:{port}", 4): f"127.0.0.1:{port}" for port in range(40)}
    clock.now += 0.25
    assert [waves.wait_s(peers[group]) for group in range(4)] == [0, 0.75, 1.75, 2.75]
    bounded = TokenBucket(Holding(clock, 1.0, lambda: None), rate=1000, burst=1000, max_pending=2)
    bounded.counts["pending"] = 2
    for _ in range(5):  # four answers a second
        bounded.answered(0.01)
        clock.now += 0.25
    # A place frees when the service answers, however fast it did: not told, so held.
    assert bounded.wait_s("a") == 0


async def test_a_client_that_gives_up_while_held_is_not_handed_to_the_service(
    proxied: tuple[Link, Upstream],
) -> None:
    link, upstream = proxied
    link.clock = Clock()  # never moves: the one held waits until the gate is removed
    link.add(parse_fault("gate", "cache", "admit", {"rate": 1, "burst": 1, "max_wait_ms": 60_000}))
    assert await passes(link)
    _, writer = await connect(link)
    writer.write(b"hello")  # its handshake, then it gives up (FIN) before its turn
    await until(link, lambda: counts(link, "gate")["queued"] == 1)
    await close(writer)
    await until(link, lambda: link.stats.totals.get("left") == 1)  # it left the line
    assert counts(link, "gate") | {"admitted": 1, "held": 1, "queued": 0, "pending": 0} == counts(
        link, "gate"
    )
    link.remove("gate")
    assert link.stats.totals.get("passed") == 1
    assert bytes(upstream.received) == b"x"  # the service never saw the one that left


async def test_removing_a_gate_lets_what_it_holds_pass(proxied: tuple[Link, Upstream]) -> None:
    link, _ = proxied
    link.clock = Clock()
    link.add(parse_fault("gate", "cache", "admit", {"rate": 1, "burst": 1, "max_wait_ms": 60_000}))
    assert await passes(link)
    held = asyncio.create_task(passes(link))
    await until(link, lambda: counts(link, "gate")["queued"] == 1)
    link.remove("gate")
    assert await held


async def test_stage_admits_one_more_group_each_period(proxied: tuple[Link, Upstream]) -> None:
    link, _ = proxied
    clock = link.clock = Clock()
    link.add(parse_fault("waves", "cache", "stage", {"groups": 4, "every_ms": 1000, "hold_ms": 0}))
    for wave in range(1, 5):
        for _ in range(6):
            mine: list[str] = []
            passed = await passes(link, mine)
            assert passed == (Waves.group_of(mine[0], 4) < wave), (wave, mine)
        clock.now += 1.0
    assert counts(link, "waves")["admitted"] + counts(link, "waves")["refused"] == 24


def test_adaptive_admit_rises_while_answers_keep_up_and_falls_when_one_is_slow() -> None:
    clock = Clock()
    gate = AdaptiveBucket(
        Holding(clock, 0.0, lambda: None), rate=8, burst=1, keeps_up_s=0.05, floor=4
    )
    assert gate.passes("a") and not gate.passes("a")  # the burst, then a wait: demand
    clock.now += 1.0
    gate.answered(0.01)
    assert gate.passes("a") and gate.rate == 10  # x1.25: every answer was quick
    clock.now += 1.0  # a period with no connection waiting: no demand, no change
    assert gate.passes("a") and gate.rate == 10
    gate.answered(0.25)
    clock.now += 1.0
    assert gate.passes("a") and gate.rate == 7  # x0.7: one answer was slow
    for _ in range(3):
        gate.answered(1.0)
        clock.now += 1.0
        gate.passes("a")
    assert gate.rate == 4  # never below the floor


def test_an_outage_neither_raises_nor_sinks_the_adaptive_rate_nor_widens_the_waves() -> None:
    clock = Clock()
    bucket = AdaptiveBucket(
        Holding(clock, 0.0, lambda: None), rate=8, burst=1, keeps_up_s=0.05, floor=4
    )
    waves = Waves(Holding(clock, 0.0, lambda: None), groups=3, every_s=1.0, keeps_up_s=0.05)
    for _ in range(3):  # the service is down: what is let through fails to connect
        assert bucket.passes("a") and not bucket.passes("a")  # demand, but no answer
        bucket.settle()
        waves.settle()
        clock.now += 1.0
        waves.passes("")
    bucket.passes("a")
    assert bucket.rate == 8 and waves.open_groups == 1
    waves.answered(0.01)  # back: its answers come quickly
    waves.settle()
    clock.now += 1.0
    waves.passes("")
    assert waves.open_groups == 2
    waves.withdraw()  # let through, then refused by a later gate: says nothing of the service
    clock.now += 1.0  # so this wave widens, as one in which nobody was let through would
    waves.passes("")
    assert waves.open_groups == 3


def test_adaptive_admit_is_the_admit_toxic_with_answer_within_ms() -> None:
    fixed = parse_fault("", "cache", "admit", {"rate": 5}).toxic.gate(Clock(), lambda: None)
    adaptive = parse_fault("", "cache", "admit", {"rate": 5, "answer_within_ms": 20}).toxic.gate(
        Clock(), lambda: None
    )
    assert type(fixed).__name__ == "TokenBucket" and isinstance(adaptive, AdaptiveBucket)
    assert adaptive.keeps_up_s == 0.02 and adaptive.floor == 1


def test_stage_widens_only_while_the_service_keeps_up() -> None:
    clock = Clock()
    gate = Waves(Holding(clock, 0.0, lambda: None), groups=3, every_s=1.0, keeps_up_s=0.05)
    gate.answered(0.01)
    clock.now += 1.0
    gate.passes("")
    assert gate.open_groups == 2
    gate.answered(0.2)  # a slow answer in the second wave
    clock.now += 1.0
    gate.passes("")
    assert gate.open_groups == 2  # held back a period
    clock.now += 1.0
    gate.passes("")
    assert gate.open_groups == 3


def test_a_wave_keeps_up_when_nine_in_ten_that_reached_the_service_were_answered_in_time() -> None:
    clock = Clock()
    gate = Waves(Holding(clock, 0.0, lambda: None), groups=3, every_s=1.0, keeps_up_s=0.05)

    def wave(in_time: int, slow: int, unanswered: int) -> int:
        for seconds in [0.01] * in_time + [0.2] * slow:
            gate.answered(seconds)
            gate.settle()
        for _ in range(unanswered):
            gate.settle()  # its client gave up first
        clock.now += 1.0
        gate.passes("")
        return gate.open_groups

    assert wave(in_time=90, slow=5, unanswered=5) == 2  # 90 of 100
    assert wave(in_time=89, slow=5, unanswered=6) == 2  # 89 of 100: held back a period
    assert wave(in_time=0, slow=0, unanswered=0) == 3  # nobody let through


async def test_stage_holds_later_groups_until_their_wave(proxied: tuple[Link, Upstream]) -> None:
    link, _ = proxied
    clock = link.clock = Clock()
    link.add(parse_fault("waves", "cache", "stage", {"groups": 2, "every_ms": 62.5}))
    clients = [asyncio.create_task(passes(link)) for _ in range(8)]
    await until(
        link,
        lambda: counts(link, "waves")["admitted"] + counts(link, "waves")["queued"] == 8,
    )
    held = counts(link, "waves")["queued"]
    clock.now += 1 / 16
    assert await asyncio.gather(*clients) == [True] * 8
    assert counts(link, "waves")["held"] == held


async def test_age_closes_idle_connections_at_their_age_and_busy_ones_after_grace(
    proxied: tuple[Link, Upstream],
) -> None:
    link, _ = proxied
    link.add(parse_fault("", "cache", "age", {"age_ms": 100, "spread": 0, "grace_ms": 800}))
    loop = asyncio.get_running_loop()
    started = loop.time()
    idle_reader, idle_writer = await connect(link)
    busy_reader, busy_writer = await connect(link)

    async def busy() -> float:
        with contextlib.suppress(ConnectionError):
            async with asyncio.timeout(5):
                while True:
                    busy_writer.write(b"b")
                    if not await busy_reader.read(1):
                        break
                    await asyncio.sleep(0.02)
        return loop.time() - started

    busy_closed = asyncio.create_task(busy())
    async with asyncio.timeout(5):
        assert await idle_reader.read(1) == b""  # FIN at its age
    idle_at = loop.time() - started
    busy_at = await busy_closed
    # Loose bounds: a loaded machine delays both; the busy one is kept (up to its grace).
    assert 0.1 <= idle_at < busy_at - 0.2 and busy_at < 3.0, (idle_at, busy_at)
    for writer in (idle_writer, busy_writer):
        await close(writer)


def test_age_is_drawn_within_its_spread() -> None:
    rng = random.Random(3)
    assert {Age(age_ms=1000, spread=0).age_s(rng) for _ in range(100)} == {1.0}
    ages = [Age(age_ms=1000, spread=0.1).age_s(rng) for _ in range(1000)]
    assert 0.9 <= min(ages) < 0.91 and 1.09 < max(ages) <= 1.1


async def test_a_gates_counts_are_listed_with_its_fault(proxied: tuple[Link, Upstream]) -> None:
    link, _ = proxied
    link.clock = Clock()
    installed = link.add(
        parse_fault("gate", "cache", "admit", {"rate": 1, "burst": 1, "max_wait_ms": 0})
    )
    assert await passes(link) and not await passes(link)
    listed = fault_doc(fault_message(installed))
    assert listed["counts"] == {
        "admitted": 1,
        "held": 0,
        "refused": 1,
        "expired": 0,
        "queued": 0,
        "pending": 0,
    }
    assert "counts" not in fault_doc(fault_message(link.add(parse_fault("", "cache", "age", {}))))


async def test_age_applied_once_closes_the_connections_open_now(
    proxied: tuple[Link, Upstream],
) -> None:
    link, _ = proxied
    reader, writer = await connect(link)
    await until(link, lambda: len(link.connections) == 1)
    await link.apply_once(parse_fault("", "cache", "age", {"age_ms": 50, "spread": 1}, once=True))
    async with asyncio.timeout(5):
        assert await reader.read(1) == b""
    assert link.faults == {}
    await close(writer)


async def test_stop_with_a_connection_held_leaves_no_task_behind() -> None:
    before_tasks = asyncio.all_tasks()
    upstream = Upstream()
    upstream.server = await asyncio.start_server(upstream.handle, HOST, 0)
    link = Link("db", HOST, upstream.server.sockets[0].getsockname()[1], clock=Clock())
    await link.start(HOST, 0)
    link.add(parse_fault("gate", "db", "admit", {"rate": 1, "burst": 1, "max_wait_ms": 60_000}))
    assert await passes(link)
    held = asyncio.create_task(passes(link))
    await until(link, lambda: counts(link, "gate")["queued"] == 1)
    await link.stop()
    await held  # reset by the stop, or let through by its gate's removal and then closed
    upstream.server.close()
    await asyncio.gather(*upstream.handlers, return_exceptions=True)
    await upstream.server.wait_closed()
    assert asyncio.all_tasks() == before_tasks


# -- the link's own record of its connections (a reconnect storm seen from the server's side) --


async def test_the_link_counts_what_happened_to_each_connection(
    proxied: tuple[Link, Upstream],
) -> None:
    link, _ = proxied
    link.clock = Clock()
    assert await passes(link)  # accepted, passed, answered (its byte echoed)
    _, writer = await connect(link)  # passed, then left before the service answered
    await until(link, lambda: len(link.connections) == 1)
    await close(writer)
    await until(link, lambda: not link.connections)
    link.add(parse_fault("gate", "cache", "admit", {"rate": 1, "burst": 1, "max_wait_ms": 0}))
    assert await passes(link) and not await passes(link)  # one token: answered, then refused
    totals = link.stats.totals
    assert totals == {
        "accepted": 4,
        "passed": 3,
        "answered": 2,
        "abandoned": 1,
        "refused": 1,
        "left": 0,
    }
    assert sum(counts["accepted"] for _, counts in link.stats.bins) == 4


def test_link_stats_keep_each_tenth_of_a_second_apart() -> None:
    clock = Clock(now=100.5)
    stats = LinkStats(clock)
    stats.count("accepted")
    clock.now = 100.5625
    stats.count("accepted")
    clock.now = 103.0
    stats.count("passed")
    bins = [(ms, c["accepted"], c["passed"]) for ms, c in stats.bins]
    assert bins == [(100_500, 2, 0), (103_000, 0, 1)]
    assert stats.totals["accepted"] == 2 and stats.totals["passed"] == 1
