"""The exact event record: sequence numbers, paging without gaps or repeats, ring overwrite."""

from __future__ import annotations

from typing import Any, NoReturn, cast

import grpc
import pytest

from herdlab.grpcutil import Context
from herdlab.record import RECORD_PAGE, EventRecord, serve_page
from protos import admin_pb2


def filled(capacity: int, n: int) -> EventRecord:
    record = EventRecord(capacity)
    for t in range(1, n + 1):
        record.add(t * 10)
    return record


def test_empty_record() -> None:
    record = EventRecord(4)
    assert record.total == 0 and record.oldest_seq == 1
    assert record.page(0, 10) == (1, [])


def test_sequence_numbers_start_at_one_and_page_without_gaps() -> None:
    record = filled(capacity=100, n=7)
    assert record.total == 7 and record.oldest_seq == 1
    assert record.page(0, 100) == (1, [10, 20, 30, 40, 50, 60, 70])
    assert record.page(0, 3) == (1, [10, 20, 30])
    assert record.page(3, 3) == (4, [40, 50, 60])
    assert record.page(6, 3) == (7, [70])
    assert record.page(7, 3) == (8, [])
    assert record.page(100, 3) == (101, [])


def test_paging_through_returns_every_event_exactly_once() -> None:
    record = filled(capacity=1_000, n=997)
    seen: list[int] = []
    after = 0
    while True:
        first, times = record.page(after, 64)
        if not times:
            break
        assert first == after + 1
        seen += times
        after = first + len(times) - 1
    assert seen == [t * 10 for t in range(1, 998)]


def test_ring_keeps_the_newest_events() -> None:
    record = filled(capacity=5, n=12)
    assert record.total == 12
    assert record.oldest_seq == 8
    assert record.page(0, 100) == (8, [80, 90, 100, 110, 120])
    assert record.page(9, 2) == (10, [100, 110])
    record.add(130)
    assert record.oldest_seq == 9 and record.page(0, 100) == (9, [90, 100, 110, 120, 130])


def test_ring_at_exactly_its_capacity() -> None:
    record = filled(capacity=5, n=5)
    assert record.oldest_seq == 1 and record.page(0, 100) == (1, [10, 20, 30, 40, 50])


def test_default_times_are_wall_clock_ns() -> None:
    import time

    before = time.time_ns()
    record = EventRecord(2)
    record.add()
    after = time.time_ns()
    _, (t,) = record.page(0, 1)
    assert before <= t <= after


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="record capacity must be >= 1"):
        EventRecord(0)


class Aborted(Exception):
    pass


class FakeContext:
    async def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        raise Aborted(code, details)


def context() -> Context:
    return cast(Context, FakeContext())


async def test_serve_page_answers_one_page_with_totals() -> None:
    record = filled(capacity=5, n=12)
    reply = await serve_page(record, admin_pb2.RecordRequest(after_seq=8, limit=2), context())
    assert (reply.first_seq, list(reply.times_ns)) == (9, [90, 100])
    assert (reply.total, reply.oldest_seq) == (12, 8)


async def test_serve_page_limit_zero_means_the_server_page() -> None:
    record = filled(capacity=RECORD_PAGE + 10, n=RECORD_PAGE + 5)
    reply = await serve_page(record, admin_pb2.RecordRequest(), context())
    assert reply.first_seq == 1 and len(reply.times_ns) == RECORD_PAGE
    reply = await serve_page(record, admin_pb2.RecordRequest(limit=10**9), context())
    assert len(reply.times_ns) == RECORD_PAGE


@pytest.mark.parametrize("request_args", [{"after_seq": -1}, {"limit": -5}])
async def test_serve_page_rejects_negative_arguments(request_args: dict[str, Any]) -> None:
    with pytest.raises(Aborted) as info:
        await serve_page(EventRecord(2), admin_pb2.RecordRequest(**request_args), context())
    assert info.value.args == (grpc.StatusCode.INVALID_ARGUMENT, "after_seq and limit must be >= 0")
