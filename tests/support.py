"""Helpers for the integration tests: gRPC clients of a running lab stack, waiting on the
services' own state (never on the clock), and reading /metrics by value; and a trial's
observations made by hand, for the measures' own tests."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

from cache_service.settings import CacheSettings
from chaos.engine.herd import HerdResult
from chaos.engine.herd_settings import HerdSettings
from chaos.engine.observations import DbCounters, Observations, Outage
from chaos.lab.admin import Admin
from chaos.lab.backends.local import StackInfo
from db_service.settings import DbSettings
from herdlab.scrape import read
from protos import admin_pb2, cache_pb2, db_pb2, db_pb2_grpc

T = TypeVar("T")

# Generous: waiting ends as soon as the state is reached; this only bounds a broken run.
WAIT_S = 20.0
POLL_S = 0.01


async def eventually(
    probe: Callable[[], Awaitable[T]],
    check: Callable[[T], bool],
    what: str,
    timeout_s: float = WAIT_S,
) -> T:
    """Polls `probe()` until `check` holds for its value; fails naming `what` and the last value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        value = await probe()
        if check(value):
            return value
        if loop.time() > deadline:
            raise AssertionError(f"not reached within {timeout_s:g}s: {what}; last: {value}")
        await asyncio.sleep(POLL_S)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page, by (name, sorted labels)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for sample in read("", url, timeout_s=10).samples
    }


class StackClients(Admin):
    """The controller's admin clients of one running stack (`chaos.lab.admin.Admin`) plus the data
    plane's stubs and raw admin calls the tests need. `async with StackClients(info) as lab:`."""

    def __init__(self, info: StackInfo) -> None:
        super().__init__(info.services["db"].grpc, info.services["cache"].grpc)
        self.info = info
        self.db = db_pb2_grpc.DbStub(self.db_channel)

    # -- state ----------------------------------------------------------------------------------

    async def until_db(
        self, check: Callable[[admin_pb2.DbState], bool], what: str
    ) -> admin_pb2.DbState:
        return await eventually(self.db_state, check, what)

    async def metrics(self, service: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return await asyncio.to_thread(scrape, self.info.services[service].metrics)

    async def metric(self, service: str, name: str, **labels: str) -> float:
        samples = await self.metrics(service)
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    async def until_metric(
        self, service: str, name: str, check: Callable[[float], bool], **labels: str
    ) -> float:
        return await eventually(
            lambda: self.metric(service, name, **labels), check, f"{service} {name}{labels}"
        )

    # -- control --------------------------------------------------------------------------------

    async def faults(self, **faults: float) -> admin_pb2.DbState:
        """SetFaults as a raw call: a refused value raises the service's own AioRpcError."""
        state: admin_pb2.DbState = await self.db_admin.SetFaults(
            admin_pb2.Faults(**faults), timeout=10
        )
        return state

    async def arrivals(self, page: int) -> tuple[list[int], admin_pb2.Record]:
        """The DB's whole arrival record, read `page` timestamps at a time; checks the paging."""
        times: list[int] = []
        after = 0
        while True:
            record: admin_pb2.Record = await self.db_admin.GetArrivals(
                admin_pb2.RecordRequest(after_seq=after, limit=page), timeout=10
            )
            if not record.times_ns:
                return times, record
            assert record.first_seq == after + 1, (record.first_seq, after)
            assert len(record.times_ns) <= page
            times += record.times_ns
            after = record.first_seq + len(record.times_ns) - 1

    # -- data plane -----------------------------------------------------------------------------

    async def cache_get(self, key: str, timeout_s: float = WAIT_S) -> cache_pb2.CacheGetResponse:
        reply: cache_pb2.CacheGetResponse = await self.cache.Get(
            cache_pb2.CacheGetRequest(key=key), timeout=timeout_s
        )
        return reply

    async def db_get(self, key: str, timeout_s: float | None = WAIT_S) -> db_pb2.DbGetResponse:
        reply: db_pb2.DbGetResponse = await self.db.Get(
            db_pb2.DbGetRequest(key=key), timeout=timeout_s
        )
        return reply


class DbGate:
    """Holds the DB's only slot (the DB runs with concurrency 1) with a direct query whose latency
    is an hour, so every query behind it waits in the DB's queue until `open()` cancels it.

    This orders events without timing: whatever the test sends while the gate is shut is
    certainly still in flight when it looks, however slow the machine."""

    def __init__(self, lab: StackClients) -> None:
        self.lab = lab
        self._call: asyncio.Task[db_pb2.DbGetResponse] | None = None
        self.arrivals_before = 0

    async def shut(self, latency_after_ms: float = 0.0) -> None:
        before = await self.lab.db_state()
        assert before.in_flight == 0 and before.queued == 0, before
        assert before.capacity.concurrency == 1, "the gate needs a DB with concurrency 1"
        await self.lab.faults(latency_ms=3_600_000)
        self._call = asyncio.create_task(self.lab.db_get("gate", timeout_s=None))
        await self.lab.until_db(
            lambda s: s.in_flight == 1 and s.arrivals == before.arrivals + 1, "gate holds the slot"
        )
        # Queries admitted from now on (after the gate) take this latency.
        await self.lab.faults(latency_ms=latency_after_ms)
        self.arrivals_before = before.arrivals + 1

    async def open(self) -> None:
        assert self._call is not None
        self._call.cancel()
        await asyncio.gather(self._call, return_exceptions=True)
        self._call = None

    async def arrivals_since(self) -> int:
        """DB arrivals since the gate shut, the gate's own query excluded."""
        return (await self.lab.db_state()).arrivals - self.arrivals_before


def chaos_run(path: Path, out_json: Path, state_dir: Path) -> subprocess.CompletedProcess[str]:
    """`chaos run PATH --json OUT_JSON` as a process of its own, its stacks' state in
    `state_dir`."""
    return subprocess.run(
        [sys.executable, "-m", "chaos", "run", str(path), "--json", str(out_json)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HERDLAB_STATE_DIR": str(state_dir)},
    )


def observations(db_arrivals: list[int], outages: Sequence[Outage] = ()) -> Observations:
    """A trial that saw only these DB arrivals (ns) and outages: no herd, default settings."""
    return Observations(
        variant={},
        db=DbSettings(),
        cache=CacheSettings(),
        herd=HerdSettings(),
        herd_result=HerdResult(0, [], 0, 0.0, Counter(), 0, 0.0),
        t0_ns=0,
        end_ns=0,
        db_arrivals=db_arrivals,
        cache_attempts=[],
        db_counters=DbCounters(),
        db_capacity_per_s=200.0,
        outages=list(outages),
        journal=[],
        setup={},
        cache_peak_rss_bytes=0,
    )
