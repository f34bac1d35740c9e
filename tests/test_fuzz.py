"""Fuzzed input over real gRPC against a real stack: the services never crash, every bad value
is answered INVALID_ARGUMENT with a message, and a rejected call changes nothing.

Inputs: keys of every length around the 256-byte limit (empty included), any Unicode, control
characters; Expire requests with random key lists; absurd and expired deadlines (zero, negative,
a nanosecond, ten thousand years); random admin values (NaN, infinities, negative latency, error
rates outside [0, 1], zero and negative capacity, negative record positions); and raw bytes that
are not a valid request at all (corrupt wire format, key strings that are not UTF-8).

The example budget is fixed and the examples are derandomized (no example database either), so
CI runs the same 700 inputs every time: 680 generated (the budgets below) and 20 explicit
`@example`s (`pytest tests/test_fuzz.py --hypothesis-show-statistics` shows the counts).
After every input both services must still answer their health check with SERVING from the same
process (same pid, same start time).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from chaos.lab.backends.local import LocalStack, StackInfo
from db_service.settings import MAX_LATENCY_S
from herdlab.grpcutil import channel_options
from herdlab.record import RECORD_PAGE
from herdlab.values import MAX_KEY_BYTES, key_error, value_for
from protos import admin_pb2, admin_pb2_grpc, cache_pb2, cache_pb2_grpc, db_pb2, db_pb2_grpc

T = TypeVar("T")

DB_ARGS = ["--latency", "0ms", "--spread", "0ms", "--concurrency", "64", "--queue", "1000"]
CACHE_ARGS = ["--policy", "none", "--attempt-timeout", "10s", "--retry-total", "10s", "--ttl", "1h"]
DEFAULT_FAULTS = admin_pb2.Faults(latency_ms=0.0, spread_ms=0.0, error_rate=0.0)
DEFAULT_CAPACITY = admin_pb2.Capacity(concurrency=64, queue=1000)
CALL_TIMEOUT_S = 10.0
WAIT_S = 20.0
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)

# Generated examples per test: 680 in all, plus 20 explicit @examples.
KEY_EXAMPLES = 150
EXPIRE_EXAMPLES = 100
DEADLINE_EXAMPLES = 80
ADMIN_EXAMPLES = 150
RECORD_EXAMPLES = 50
RAW_EXAMPLES = 150


def budget(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


# -- strategies -----------------------------------------------------------------------------

UTF8 = st.characters(codec="utf-8")  # any code point that can be sent (no lone surrogates)
CONTROL = st.characters(codec="utf-8", categories=["Cc"])
keys = st.one_of(
    st.text(UTF8, max_size=300),  # up to 1,200 bytes
    st.text(st.one_of(UTF8, CONTROL), max_size=20),
    st.integers(MAX_KEY_BYTES - 2, MAX_KEY_BYTES + 2).map(lambda n: "k" * n),
    st.integers(MAX_KEY_BYTES // 2 - 1, MAX_KEY_BYTES // 2 + 1).map(lambda n: "é" * n),
)
doubles = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-10.0, 10.0),
    st.sampled_from([0.0, -0.0, 1.0, 1.0 + 1e-12, MAX_LATENCY_S * 1000, MAX_LATENCY_S * 1000 + 1]),
)
int32s = st.one_of(st.integers(*INT32), st.integers(-2, 2), st.sampled_from([1_000_000, 1_000_001]))


def optional(strategy: st.SearchStrategy[T]) -> st.SearchStrategy[T | None]:
    return st.one_of(st.none(), strategy)


# -- the stack's clients and its liveness ---------------------------------------------------


@dataclass
class Clients:
    db: db_pb2_grpc.DbStub
    db_admin: admin_pb2_grpc.DbAdminStub
    cache: cache_pb2_grpc.CacheStub
    cache_admin: admin_pb2_grpc.CacheAdminStub
    channels: dict[str, grpc.Channel]
    processes: dict[str, psutil.Process]

    def check_alive(self) -> None:
        """Both services SERVING, from the processes that were started (no crash, no restart)."""
        for name, channel in self.channels.items():
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
            process = self.processes[name]
            assert process.is_running() and process.status() != psutil.STATUS_ZOMBIE, name

    def db_state(self) -> admin_pb2.DbState:
        state: admin_pb2.DbState = self.db_admin.GetState(admin_pb2.Empty(), timeout=CALL_TIMEOUT_S)
        return state

    def cache_state(self) -> admin_pb2.CacheState:
        state: admin_pb2.CacheState = self.cache_admin.GetState(
            admin_pb2.Empty(), timeout=CALL_TIMEOUT_S
        )
        return state


@pytest.fixture(scope="module")
def clients(lab_stack: tuple[LocalStack, StackInfo]) -> Iterator[Clients]:
    _, info = lab_stack
    db, cache = info.services["db"], info.services["cache"]
    channels = {
        "db": grpc.insecure_channel(db.grpc, options=channel_options()),
        "cache": grpc.insecure_channel(cache.grpc, options=channel_options()),
    }
    processes = {name: psutil.Process(s.pid) for name, s in info.services.items() if s.pid}
    try:
        yield Clients(
            db=db_pb2_grpc.DbStub(channels["db"]),
            db_admin=admin_pb2_grpc.DbAdminStub(channels["db"]),
            cache=cache_pb2_grpc.CacheStub(channels["cache"]),
            cache_admin=admin_pb2_grpc.CacheAdminStub(channels["cache"]),
            channels=channels,
            processes=processes,
        )
    finally:
        for channel in channels.values():
            channel.close()


def until(probe: Callable[[], T], check: Callable[[T], bool], what: str) -> T:
    """Polls `probe()` until `check` holds (bounded); fails naming `what` and the last value."""
    deadline = time.monotonic() + WAIT_S
    while True:
        value = probe()
        if check(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {WAIT_S:g}s: {what}; last: {value}")
        time.sleep(0.005)


def code_of(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str, Any]:
    """(code, details, reply) of one blocking call."""
    try:
        return grpc.StatusCode.OK, "", call()
    except grpc.RpcError as exc:
        assert isinstance(exc, grpc.Call)
        return exc.code(), exc.details() or "", None


def assert_rejected(code: grpc.StatusCode, details: str) -> None:
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    assert details.strip(), "a rejection must say why"


# -- keys -----------------------------------------------------------------------------------


@budget(KEY_EXAMPLES)
@given(key=keys)
@example(key="")
@example(key="k" * (MAX_KEY_BYTES + 1))
@example(key="é" * (MAX_KEY_BYTES // 2 + 1))
@example(key="\x00")
@example(key="\U0010ffff" * (MAX_KEY_BYTES // 4))
def test_any_key_gets_its_value_or_invalid_argument(clients: Clients, key: str) -> None:
    for name, call in (
        ("db", lambda: clients.db.Get(db_pb2.DbGetRequest(key=key), timeout=CALL_TIMEOUT_S)),
        (
            "cache",
            lambda: clients.cache.Get(cache_pb2.CacheGetRequest(key=key), timeout=CALL_TIMEOUT_S),
        ),
    ):
        code, details, reply = code_of(call)
        if key_error(key):
            assert_rejected(code, details)
        else:
            assert code == grpc.StatusCode.OK, (name, code, details)
            assert (reply.key, reply.value) == (key, value_for(key, reply.version)), name
    clients.check_alive()


# -- expire ---------------------------------------------------------------------------------

PRESENT = ["present-a", "present-b", "present-c"]


@budget(EXPIRE_EXAMPLES)
@given(
    listed=st.lists(st.one_of(keys, st.sampled_from(PRESENT)), max_size=8),
    everything=st.booleans(),
)
@example(listed=[], everything=False)
@example(listed=["present-a"], everything=True)
@example(listed=["present-a", ""], everything=False)
@example(listed=["present-b"] * 100_001, everything=False)
def test_expire_applies_wholly_or_not_at_all(
    clients: Clients, listed: list[str], everything: bool
) -> None:
    clients.cache.Expire(cache_pb2.ExpireRequest(all=True), timeout=CALL_TIMEOUT_S)
    for key in PRESENT:
        clients.cache.Get(cache_pb2.CacheGetRequest(key=key), timeout=CALL_TIMEOUT_S)
    assert clients.cache_state().keys == len(PRESENT)

    code, details, reply = code_of(
        lambda: clients.cache.Expire(
            cache_pb2.ExpireRequest(keys=listed, all=everything), timeout=CALL_TIMEOUT_S
        )
    )
    valid = (everything != bool(listed)) and not any(key_error(k) for k in listed)
    valid = valid and len(listed) <= 100_000
    if valid:
        assert code == grpc.StatusCode.OK, (code, details)
        gone = set(PRESENT) if everything else set(PRESENT) & set(listed)
        assert reply.expired == len(gone)
        assert clients.cache_state().keys == len(PRESENT) - len(gone)
    else:
        assert_rejected(code, details)
        assert clients.cache_state().keys == len(PRESENT), "a rejected Expire changed the store"
        for key in PRESENT:
            hit = clients.cache.Get(cache_pb2.CacheGetRequest(key=key), timeout=CALL_TIMEOUT_S)
            assert hit.source == cache_pb2.HIT, f"{key} was expired by a rejected call"
    clients.check_alive()


# -- deadlines ------------------------------------------------------------------------------

deadlines = st.one_of(
    st.just(0.0),
    st.floats(-1e6, 0.0),
    st.floats(1e-9, 1e-2),
    st.floats(1e6, 3.2e11),  # 11 days to ten thousand years
)


@budget(DEADLINE_EXAMPLES)
@given(timeout=deadlines, n=st.integers(0, 2**32))
@example(timeout=0.0, n=0)
@example(timeout=-1.0, n=1)
@example(timeout=1e-9, n=2)
@example(timeout=3.2e11, n=3)
def test_absurd_and_expired_deadlines_leave_nothing_behind(
    clients: Clients, timeout: float, n: int
) -> None:
    """A call with any deadline ends with a value or DEADLINE_EXCEEDED, and afterwards the DB
    holds no slot or queue place and the cache no fetch (nothing leaks from an abandoned call)."""
    key = f"deadline-{n}"  # a new key each time, so the cache has to fetch it
    for call in (
        lambda: clients.db.Get(db_pb2.DbGetRequest(key=key), timeout=timeout),
        lambda: clients.cache.Get(cache_pb2.CacheGetRequest(key=key + "-c"), timeout=timeout),
    ):
        code, details, reply = code_of(call)
        assert code in (grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED), (code, details)
        if reply is not None:
            assert reply.value == value_for(reply.key, reply.version)
    until(clients.db_state, lambda s: s.in_flight == 0 and s.queued == 0, "DB idle")
    until(clients.cache_state, lambda s: s.in_flight_keys == 0, "no fetch in flight")
    clients.check_alive()


# -- admin values ---------------------------------------------------------------------------


def faults_ok(latency: float | None, spread: float | None, error_rate: float | None) -> bool:
    return all(v is None or 0.0 <= v <= MAX_LATENCY_S * 1000 for v in (latency, spread)) and (
        error_rate is None or 0.0 <= error_rate <= 1.0
    )


def capacity_ok(concurrency: int | None, queue: int | None) -> bool:
    return (concurrency is None or 1 <= concurrency <= 1_000_000) and (
        queue is None or 0 <= queue <= 1_000_000
    )


def settings_of(state: admin_pb2.DbState) -> tuple[Any, ...]:
    """What an admin call sets, comparable (NaN never is, but it is never accepted either)."""
    f, c = state.faults, state.capacity
    return (f.latency_ms, f.spread_ms, f.error_rate, c.concurrency, c.queue, state.capacity_per_s)


@budget(ADMIN_EXAMPLES)
@given(
    latency=optional(doubles),
    spread=optional(doubles),
    error_rate=optional(doubles),
    concurrency=optional(int32s),
    queue=optional(int32s),
)
@example(latency=-1.0, spread=None, error_rate=None, concurrency=None, queue=None)
@example(latency=None, spread=None, error_rate=math.nan, concurrency=None, queue=None)
@example(latency=math.inf, spread=None, error_rate=None, concurrency=None, queue=None)
@example(latency=5.0, spread=None, error_rate=1.5, concurrency=0, queue=None)
@example(latency=None, spread=None, error_rate=None, concurrency=-3, queue=-1)
def test_admin_values_are_applied_wholly_or_rejected_with_nothing_changed(
    clients: Clients,
    latency: float | None,
    spread: float | None,
    error_rate: float | None,
    concurrency: int | None,
    queue: int | None,
) -> None:
    try:
        set_and_check(clients, latency, spread, error_rate, concurrency, queue)
    finally:
        clients.db_admin.SetFaults(DEFAULT_FAULTS, timeout=CALL_TIMEOUT_S)
        clients.db_admin.SetCapacity(DEFAULT_CAPACITY, timeout=CALL_TIMEOUT_S)
    clients.check_alive()


def set_and_check(
    clients: Clients,
    latency: float | None,
    spread: float | None,
    error_rate: float | None,
    concurrency: int | None,
    queue: int | None,
) -> None:
    before = settings_of(clients.db_state())
    code, details, reply = code_of(
        lambda: clients.db_admin.SetFaults(
            admin_pb2.Faults(latency_ms=latency, spread_ms=spread, error_rate=error_rate),
            timeout=CALL_TIMEOUT_S,
        )
    )
    if faults_ok(latency, spread, error_rate):
        assert code == grpc.StatusCode.OK, (code, details)
        applied = reply.faults
        for sent, got in ((latency, applied.latency_ms), (spread, applied.spread_ms)):
            assert sent is None or got == sent
        assert error_rate is None or applied.error_rate == error_rate
    else:
        assert_rejected(code, details)
        assert settings_of(clients.db_state()) == before, "a rejected SetFaults changed the DB"

    before = settings_of(clients.db_state())
    code, details, reply = code_of(
        lambda: clients.db_admin.SetCapacity(
            admin_pb2.Capacity(concurrency=concurrency, queue=queue), timeout=CALL_TIMEOUT_S
        )
    )
    if capacity_ok(concurrency, queue):
        assert code == grpc.StatusCode.OK, (code, details)
        assert concurrency is None or reply.capacity.concurrency == concurrency
        assert queue is None or reply.capacity.queue == queue
    else:
        assert_rejected(code, details)
        assert settings_of(clients.db_state()) == before, "a rejected SetCapacity changed the DB"


@budget(RECORD_EXAMPLES)
@given(after_seq=st.integers(*INT64), limit=int32s, service=st.sampled_from(["db", "cache"]))
def test_record_pages_for_any_position(
    clients: Clients, after_seq: int, limit: int, service: str
) -> None:
    request = admin_pb2.RecordRequest(after_seq=after_seq, limit=limit)
    stub = clients.db_admin.GetArrivals if service == "db" else clients.cache_admin.GetAttempts
    code, details, page = code_of(lambda: stub(request, timeout=CALL_TIMEOUT_S))
    if after_seq < 0 or limit < 0:
        assert_rejected(code, details)
    else:
        assert code == grpc.StatusCode.OK, (code, details)
        assert len(page.times_ns) <= min(limit or RECORD_PAGE, RECORD_PAGE)
    clients.check_alive()


# -- bytes that are not a request -----------------------------------------------------------

RAW_METHODS = {
    "db": ["/herdlab.v1.Db/Get", "/herdlab.v1.DbAdmin/GetState", "/herdlab.v1.DbAdmin/GetArrivals"],
    "cache": [
        "/herdlab.v1.Cache/Get",
        "/herdlab.v1.Cache/Expire",
        "/herdlab.v1.CacheAdmin/GetState",
        "/herdlab.v1.CacheAdmin/GetAttempts",
    ],
}


def string_field(payload: bytes) -> bytes:
    """Field 1 (every lab request's key or first field), length-delimited, holding `payload`."""
    size, varint = len(payload), bytearray()
    while True:
        byte, size = size & 0x7F, size >> 7
        varint.append(byte | (0x80 if size else 0))
        if not size:
            return b"\x0a" + bytes(varint) + payload


@budget(RAW_EXAMPLES)
@given(
    raw=st.one_of(st.binary(max_size=64), st.binary(max_size=64).map(string_field)),
    target=st.sampled_from([(s, m) for s, methods in RAW_METHODS.items() for m in methods]),
)
@example(raw=string_field(b"\xff\xfe"), target=("cache", "/herdlab.v1.Cache/Get"))
@example(raw=b"\x0a\x05ab", target=("db", "/herdlab.v1.Db/Get"))
def test_bytes_that_are_not_a_request_get_invalid_argument(
    clients: Clients, raw: bytes, target: tuple[str, str]
) -> None:
    """Any bytes: a parsed request is served (or refused as a bad value), bytes that do not parse
    are INVALID_ARGUMENT naming the problem; never UNKNOWN or INTERNAL."""
    service, method = target
    call = clients.channels[service].unary_unary(
        method, request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    code, details, _ = code_of(lambda: call(raw, timeout=CALL_TIMEOUT_S))
    if code != grpc.StatusCode.OK:
        assert_rejected(code, details)
    clients.check_alive()
