"""An exact, bounded record of event times (DB arrivals, cache->DB attempts).

Timelines are built from these records rather than from Prometheus scrapes: every event is kept
with its wall-clock time in nanoseconds, in a ring that holds the newest `capacity` events, and
each event has a sequence number so readers page through it without gaps or repeats.
"""

from __future__ import annotations

import time
from array import array

import grpc

from herdlab.grpcutil import Context
from protos import admin_pb2

RECORD_PAGE = 100_000
MAX_SEQ = 2**63 - 1  # the largest sequence number an int64 field holds


class EventRecord:
    def __init__(self, capacity: int = 1_000_000) -> None:
        if capacity < 1:
            raise ValueError("record capacity must be >= 1")
        self.capacity = capacity
        self._times = array("q", bytes(8 * capacity))
        self.total = 0  # events recorded ever; the newest has sequence number `total`

    def add(self, t_ns: int | None = None) -> None:
        self._times[self.total % self.capacity] = time.time_ns() if t_ns is None else t_ns
        self.total += 1

    @property
    def oldest_seq(self) -> int:
        """Sequence number of the oldest event still held (1 when nothing was overwritten)."""
        return max(1, self.total - self.capacity + 1)

    def page(self, after_seq: int, limit: int) -> tuple[int, list[int]]:
        """Events with sequence numbers > after_seq, at most `limit`: (first_seq, times)."""
        first = max(min(after_seq + 1, MAX_SEQ), self.oldest_seq)
        last = min(self.total, first + limit - 1)
        return first, [self._times[(seq - 1) % self.capacity] for seq in range(first, last + 1)]


async def serve_page(
    record: EventRecord, request: admin_pb2.RecordRequest, context: Context
) -> admin_pb2.Record:
    """Answers a `GetArrivals`/`GetAttempts` call with one page of `record`."""
    if request.after_seq < 0 or request.limit < 0:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "after_seq and limit must be >= 0")
    limit = min(request.limit or RECORD_PAGE, RECORD_PAGE)
    first, times = record.page(request.after_seq, limit)
    return admin_pb2.Record(
        first_seq=first, times_ns=times, total=record.total, oldest_seq=record.oldest_seq
    )
