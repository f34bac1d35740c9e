"""Fuzzed input to every surface that takes outside input: over real gRPC against a real stack
(the services and the wire proxy), and in-process for the texts a user writes. Nothing crashes,
every bad value is answered INVALID_ARGUMENT (or, for a text, one ValueError line), and a
rejected call changes nothing.

Over gRPC: keys of every length around the 256-byte limit (empty included), any Unicode, control
characters; Expire requests with random key lists; absurd and expired deadlines (zero, negative,
a nanosecond, ten thousand years); random admin values (NaN, infinities, negative latency, error
rates outside [0, 1], zero and negative capacity, negative record positions); raw bytes that are
not a valid request at all (corrupt wire format, key strings that are not UTF-8); random wire
faults (links, kinds, streams, attributes, toxicities, durations) and raw bytes to the proxy's
`WireAdmin`. After every input the services answer their health check with SERVING from the same
process (same pid, same start time), and the proxy serves its admin plane and a read through it.

In-process: the shipped experiment files mutated (values of other types and out of bounds,
unknown keys and tables, Unicode, huge numbers, deep nesting, bytes that are not UTF-8) are read
or rejected with one `ExperimentError` line naming the file, and reading starts no process; guard
specs, durations and rates are parsed or rejected with one ValueError line.

The examples are derandomized (no example database either), so a run tries the same inputs every
time. CI's default run uses the small budgets below: 2,080 generated and 35 explicit `@example`s
(`pytest tests/test_fuzz.py --hypothesis-show-statistics` shows the counts). The fuzz mode,
`make fuzz`, sets HERDLAB_FUZZ_EXAMPLES=10000: that many generated inputs per test.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from chaos.engine.herd import parse_rate
from chaos.engine.spec import ExperimentError, load
from chaos.lab.backends.local import LocalStack, StackInfo
from chaos.lab.ports import HOST, free_port
from chaos.wire.proxy import LINK_NAMES, STREAMS
from chaos.wire.toxics import TOXICS
from db_service.settings import MAX_LATENCY_S
from herdlab.config import parse_duration
from herdlab.grpcutil import channel_options, wait_serving
from herdlab.guards import registry as guards
from herdlab.guards.guard_set import parse_guard_set
from herdlab.record import RECORD_PAGE
from herdlab.values import MAX_KEY_BYTES, key_error, value_for
from protos import (
    admin_pb2,
    admin_pb2_grpc,
    cache_pb2,
    cache_pb2_grpc,
    db_pb2,
    db_pb2_grpc,
    wire_pb2,
    wire_pb2_grpc,
)

T = TypeVar("T")

DB_ARGS = ["--latency", "0ms", "--spread", "0ms", "--concurrency", "64", "--queue", "1000"]
CACHE_ARGS = ["--policy", "none", "--attempt-timeout", "10s", "--retry-total", "10s", "--ttl", "1h"]
DEFAULT_FAULTS = admin_pb2.Faults(latency_ms=0.0, spread_ms=0.0, error_rate=0.0)
DEFAULT_CAPACITY = admin_pb2.Capacity(concurrency=64, queue=1000)
CALL_TIMEOUT_S = 10.0
WAIT_S = 20.0
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)

# Generated examples per test in CI's default run; HERDLAB_FUZZ_EXAMPLES (the fuzz mode,
# `make fuzz`) sets one budget for every test instead.
KEY_EXAMPLES = 150
EXPIRE_EXAMPLES = 100
DEADLINE_EXAMPLES = 80
ADMIN_EXAMPLES = 150
RECORD_EXAMPLES = 50
RAW_EXAMPLES = 150
WIRE_EXAMPLES = 150
EXPERIMENT_EXAMPLES = 200
TEXT_EXAMPLES = 300
FUZZ_EXAMPLES = os.environ.get("HERDLAB_FUZZ_EXAMPLES", "")


def budget(examples: int) -> settings:
    return settings(
        max_examples=int(FUZZ_EXAMPLES) if FUZZ_EXAMPLES else examples,
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
@example(latency=63.7, spread=2.225e-311, error_rate=None, concurrency=None, queue=None)
@example(latency=None, spread=-5e-324, error_rate=None, concurrency=None, queue=None)
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
@example(after_seq=INT64[1], limit=0, service="db")
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


# -- the wire proxy's admin plane -----------------------------------------------------------

ATTRIBUTE_NAMES = sorted({f.name for kind in TOXICS.names() for f in fields(TOXICS.get(kind))})


@dataclass
class Wire:
    admin: wire_pb2_grpc.WireAdminStub
    admin_channel: grpc.Channel
    db_link: str
    process: subprocess.Popen[bytes]

    def check_alive(self) -> None:
        """The proxy's admin plane SERVING from the same process, and a DB read through its link
        on a new connection (a fault acting on the connections open then cannot hold it)."""
        assert self.process.poll() is None, "the wire proxy exited"
        reply = health_pb2_grpc.HealthStub(self.admin_channel).Check(
            health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with grpc.insecure_channel(self.db_link, options=channel_options()) as channel:
            got = db_pb2_grpc.DbStub(channel).Get(
                db_pb2.DbGetRequest(key="through-the-wire"), timeout=CALL_TIMEOUT_S
            )
        assert got.value == value_for(got.key, got.version)


@pytest.fixture(scope="module")
def wire(lab_stack: tuple[LocalStack, StackInfo]) -> Iterator[Wire]:
    """A real proxy process (`python -m chaos.wire`) with a link in front of each service."""
    _, info = lab_stack
    admin, links = free_port(), {name: free_port() for name in LINK_NAMES}
    argv = [sys.executable, "-m", "chaos.wire", "--host", HOST, "--port", str(admin)]
    for name, port in links.items():
        argv += ["--link", f"{name}:{port}:{info.services[name].grpc}"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    target = f"{HOST}:{admin}"
    try:
        assert wait_serving(target, WAIT_S, alive=lambda: process.poll() is None), "no proxy"
        with grpc.insecure_channel(target, options=channel_options()) as channel:
            yield Wire(
                wire_pb2_grpc.WireAdminStub(channel), channel, f"{HOST}:{links['db']}", process
            )
    finally:
        process.terminate()
        assert process.wait(WAIT_S) == 0


texts = st.text(UTF8, max_size=20)


@budget(WIRE_EXAMPLES)
@given(
    name=st.one_of(st.just(""), texts),
    link=st.one_of(st.sampled_from([*LINK_NAMES, ""]), texts),
    kind=st.one_of(st.sampled_from(TOXICS.names()), texts),
    stream=st.one_of(st.sampled_from(["", *STREAMS]), texts),
    toxicity=optional(st.one_of(st.floats(0.0, 1.0), doubles)),
    attributes=st.dictionaries(
        st.one_of(st.sampled_from(ATTRIBUTE_NAMES), texts),
        st.one_of(st.floats(0.0, 1000.0), doubles),
        max_size=3,
    ),
    for_ms=st.one_of(st.just(0.0), st.floats(0.0, 1e4), doubles),
    once=st.booleans(),
)
@example(
    name="",
    link="db",
    kind="latency",
    stream="",
    toxicity=math.nan,
    attributes={},
    for_ms=0.0,
    once=False,
)
@example(
    name="x",
    link="db",
    kind="latency",
    stream="both",
    toxicity=None,
    attributes={"latency_ms": math.inf},
    for_ms=-1.0,
    once=False,
)
@example(
    name="",
    link="cache",
    kind="reset",
    stream="",
    toxicity=None,
    attributes={},
    for_ms=0.0,
    once=True,
)
def test_wire_faults_are_added_or_invalid_argument(
    wire: Wire,
    name: str,
    link: str,
    kind: str,
    stream: str,
    toxicity: float | None,
    attributes: dict[str, float],
    for_ms: float,
    once: bool,
) -> None:
    """Any fault: put in force, or INVALID_ARGUMENT with a message and nothing in force; the
    proxy keeps serving its admin plane and its links."""
    fault = wire_pb2.Fault(
        name=name,
        link=link,
        kind=kind,
        stream=stream,
        toxicity=toxicity,
        attributes=attributes,
        for_ms=for_ms,
        once=once,
    )
    try:
        code, details, _ = code_of(lambda: wire.admin.AddFault(fault, timeout=CALL_TIMEOUT_S))
        event(f"AddFault: {code.name}")
        if code != grpc.StatusCode.OK:
            assert_rejected(code, details)
            listed = wire.admin.ListFaults(wire_pb2.WireEmpty(), timeout=CALL_TIMEOUT_S)
            assert not listed.faults, "a rejected AddFault put a fault in force"
    finally:
        wire.admin.ClearFaults(wire_pb2.WireEmpty(), timeout=CALL_TIMEOUT_S)
    wire.check_alive()


@budget(RAW_EXAMPLES)
@given(
    raw=st.one_of(st.binary(max_size=64), st.binary(max_size=64).map(string_field)),
    method=st.sampled_from(["AddFault", "RemoveFault", "ListFaults", "GetLinks"]),
)
def test_bytes_that_are_not_a_wire_request_get_invalid_argument(
    wire: Wire, raw: bytes, method: str
) -> None:
    call = wire.admin_channel.unary_unary(
        f"/herdlab.v1.WireAdmin/{method}",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    try:
        code, details, _ = code_of(lambda: call(raw, timeout=CALL_TIMEOUT_S))
        if code != grpc.StatusCode.OK:
            assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), code
            assert details.strip(), "a rejection must say why"
    finally:
        wire.admin.ClearFaults(wire_pb2.WireEmpty(), timeout=CALL_TIMEOUT_S)
    wire.check_alive()


# -- experiment files (parsed in-process: nothing is started) -------------------------------

SHIPPED = sorted((Path(__file__).parents[1] / "chaos" / "scenarios").glob("*/experiment.toml"))
SHIPPED_LINES = [path.read_text(encoding="utf-8").splitlines() for path in SHIPPED]
ASSIGNMENT = re.compile(r"^(\s*[A-Za-z0-9_.\"-]+\s*=\s*)")

toml_values = st.one_of(
    st.integers().map(str),
    st.floats().map(repr),
    st.sampled_from(
        ["1e400", "-1e400", "inf", "-inf", "nan", "9" * 400, "-0", "0x7fffffff", "1979-05-27"]
    ),
    st.text(UTF8, max_size=30).map(lambda t: json.dumps(t, ensure_ascii=False)),
    st.booleans().map(lambda b: str(b).lower()),
    st.lists(st.integers(-5, 10**20).map(str), max_size=5).map(lambda xs: f"[{', '.join(xs)}]"),
    st.integers(1, 3000).map(lambda n: "[" * n + "]" * n),
    st.integers(1, 3000).map(lambda n: "{a = " * n + "1" + "}" * n),
)
toml_keys = st.one_of(
    st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True),
    st.text(UTF8, min_size=1, max_size=10).map(lambda t: json.dumps(t, ensure_ascii=False)),
    st.integers(1, 300).map(lambda n: ".".join(["a"] * n)),
)
mutations = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 10**4), toml_values),
    st.tuples(st.just("key"), st.integers(0, 10**4), st.tuples(toml_keys, toml_values)),
    st.tuples(st.just("table"), st.integers(0, 10**4), toml_keys),
    st.tuples(st.just("text"), st.integers(0, 10**4), st.text(UTF8, max_size=30)),
    st.tuples(st.just("drop"), st.integers(0, 10**4), st.none()),
)


def mutate(lines: list[str], changes: list[tuple[str, int, Any]]) -> str:
    """A shipped experiment's lines with `changes` made: a value replaced, a key, a table or
    any text inserted, a line dropped."""
    out = list(lines)
    for what, at, value in changes:
        if what == "set":
            assigned = [(i, m.group(1)) for i, m in enumerate(map(ASSIGNMENT.match, out)) if m]
            if assigned:
                i, head = assigned[at % len(assigned)]
                out[i] = head + value
        elif what == "key":
            out.insert(at % (len(out) + 1), f"{value[0]} = {value[1]}")
        elif what == "table":
            out.insert(at % (len(out) + 1), f"[{value}]")
        elif what == "text":
            out.insert(at % (len(out) + 1), value)
        elif out:
            del out[at % len(out)]
    return "\n".join(out)


@pytest.fixture(scope="module")
def experiment_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-experiment") / "experiment.toml"


@budget(EXPERIMENT_EXAMPLES)
@given(
    shipped=st.integers(0, len(SHIPPED) - 1),
    changes=st.lists(mutations, min_size=1, max_size=4),
    raw=optional(st.tuples(st.integers(0, 10**5), st.binary(min_size=1, max_size=16))),
)
@example(shipped=0, changes=[("key", 10**4, ("nested", "[" * 500 + "]" * 500))], raw=None)
@example(shipped=0, changes=[("set", 0, "{a = " * 3000 + "1" + "}" * 3000)], raw=None)
@example(shipped=0, changes=[("text", 0, "x")], raw=(0, b"\xff\xfe"))
@example(shipped=0, changes=[("table", 0, '"\\n"')], raw=None)
@example(shipped=1, changes=[("set", 46, "9" * 400)], raw=None)
def test_any_experiment_file_is_read_or_rejected_in_one_line(
    experiment_file: Path,
    shipped: int,
    changes: list[tuple[str, int, Any]],
    raw: tuple[int, bytes] | None,
) -> None:
    """A mutated shipped experiment (types, bounds, unknown keys, Unicode, huge numbers, deep
    nesting, bytes that are not UTF-8) is an Experiment or one ExperimentError line naming the
    file; reading it starts no process."""
    data = mutate(SHIPPED_LINES[shipped], changes).encode("utf-8")
    if raw is not None:
        at = raw[0] % (len(data) + 1)
        data = data[:at] + raw[1] + data[at:]
    experiment_file.write_bytes(data)
    before = psutil.Process().children()
    try:
        load(experiment_file)
        event("read")
    except ExperimentError as exc:
        event("rejected")
        assert_one_line(str(exc))
        assert str(exc).startswith(f"{experiment_file}: "), str(exc)
    assert psutil.Process().children() == before, "reading an experiment started a process"


# -- guard specs, durations, rates ----------------------------------------------------------


def assert_one_line(message: str) -> None:
    assert message.strip() and "\n" not in message, repr(message)


NUMBERS = ["0", "1", "-1", "20", "1.5", "1e400", "nan", "inf", "9" * 40, ".", "e", "_", " "]


def parsed(parse: Callable[[str], T], text: str) -> T | None:
    """`parse(text)`, or None once its ValueError is found to be one line."""
    try:
        return parse(text)
    except ValueError as exc:
        assert_one_line(str(exc))
        return None


def spelled(words: list[str]) -> st.SearchStrategy[str]:
    """Text made of `words` and any characters, in any order."""
    return st.lists(st.one_of(st.sampled_from(words), st.text(UTF8, max_size=3))).map("".join)


@budget(TEXT_EXAMPLES)
@given(
    text=spelled(
        [
            *guards.names(),
            "none",
            "recommended",
            "+",
            ":",
            ",",
            "=",
            "n",
            "k",
            "window",
            "aimd",
            *NUMBERS,
        ]
    )
)
@example(text="limit:n=1e400")
@example(text="throttle:k=nan,window=30s")
def test_any_guard_spec_is_a_guard_set_or_one_line(text: str) -> None:
    parsed(parse_guard_set, text)


@budget(TEXT_EXAMPLES)
@given(text=spelled(["ns", "us", "ms", "s", "m", "h", "d", "-", "+", *NUMBERS]))
@example(text="1e400s")
@example(text="9" * 400 + "h")
def test_any_duration_is_seconds_or_one_line(text: str) -> None:
    seconds = parsed(parse_duration, text)
    if seconds is not None:
        assert math.isfinite(seconds) and seconds >= 0, (text, seconds)


@budget(TEXT_EXAMPLES)
@given(text=spelled(["/s", "/m", "-", "+", *NUMBERS]))
@example(text="nan/s")
@example(text="1e400")
def test_any_rate_is_a_rate_or_one_line(text: str) -> None:
    rate = parsed(parse_rate, text)
    if rate is not None:
        assert 0 < rate <= 100_000, (text, rate)
