"""The deliberately slow database: the ground truth of what reached the backend.

Every request that reaches `Get` is recorded (time and count) before anything else happens, so
the DB's own record is what scenarios call `db_queries`. Then, in order:

1. an invalid key is answered INVALID_ARGUMENT;
2. the query takes a capacity slot or waits in the bounded queue; past the queue it is answered
   RESOURCE_EXHAUSTED at once. While it waits, the queue discipline (`herdlab.queueing`:
   fifo, codel, lifo) decides when its turn comes, and codel may shed it: RESOURCE_EXHAUSTED,
   counted as dropped at stage `codel`;
3. a query whose caller is gone when its slot comes (deadline passed or call cancelled) is
   dropped and counted (stage `queue`), never served;
4. a query that waited for its slot and whose caller's remaining deadline is shorter than the
   base latency (the least a query takes) is dropped too (stage `deadline`, DEADLINE_EXCEEDED):
   Fail at Scale's check at dequeue, so no slot is spent on an answer nobody can use;
5. with probability `error_rate` the query fails with UNAVAILABLE (injected fault);
6. otherwise it takes `latency + uniform(0, spread)` and returns the key's deterministic value.
   A caller that leaves during that time is counted as dropped too (stage `work`).

Slot time (seconds slots were held, whatever the outcome) is kept by the capacity model and
exported, for the lab's slot-time amplification (slot-seconds / (keys x service time)).

Per key, the queries in the DB at once (from a valid arrival to its answer, whatever the
outcome) are counted exactly, and the largest such count is kept (`max_in_flight_per_key`,
started again by `ResetPeaks`): how many queries one key's stampede put on the DB together.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from db_service.settings import DbSettings
from herdlab import logs
from herdlab.grpcutil import Context
from herdlab.metrics import (
    DB_ARRIVALS,
    DB_CAPACITY_CONCURRENCY,
    DB_CAPACITY_PER_SECOND,
    DB_CAPACITY_QUEUE,
    DB_CODEL_INTERVAL,
    DB_CODEL_TARGET,
    DB_DROPPED,
    DB_IN_FLIGHT,
    DB_INJECTED_ERROR_RATIO,
    DB_LATENCY,
    DB_LATENCY_BASE,
    DB_QUEUE_DEPTH,
    DB_QUEUE_DISCIPLINE,
    DB_QUEUE_STANDING,
    DB_REQUESTS,
    DB_SLOT_SECONDS,
)
from herdlab.queueing import Shed
from herdlab.record import EventRecord, serve_page
from herdlab.server.capacity import Capacity, Rejected
from herdlab.settings import fields
from herdlab.values import key_error, value_for
from protos import admin_pb2, admin_pb2_grpc, db_pb2, db_pb2_grpc


class _ScrapedCounter(Collector):
    """A counter whose value is read when scraped (prometheus-client's `Counter` has no
    `set_function`); the function must never decrease."""

    def __init__(self, name: str, documentation: str, value: Callable[[], float]) -> None:
        self._name = name
        self._documentation = documentation
        self._value = value

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self._name, self._documentation, value=self._value())


# Every label value the DB exports, at 0 from the start: a fresh /metrics shows each one, and the
# first event of a kind is an increase Prometheus can see.
OUTCOMES = ("ok", "rejected", "dropped", "error", "invalid")
DROP_STAGES = ("queue", "work", "deadline", "codel")


class DbMetrics:
    def __init__(self, registry: CollectorRegistry, slot_seconds: Callable[[], float]) -> None:
        self.arrivals = Counter(
            DB_ARRIVALS, "Requests that reached the DB handler.", registry=registry
        )
        self.requests = Counter(
            DB_REQUESTS,
            "Requests finished, by outcome (ok, rejected, dropped, error, invalid).",
            ["outcome"],
            registry=registry,
        )
        self.dropped = Counter(
            DB_DROPPED,
            "Requests dropped without an answer, by stage: queue and work (caller gone while "
            "queued or served), deadline (caller's time left shorter than the base latency when "
            "its slot came), codel (shed by the codel discipline).",
            ["stage"],
            registry=registry,
        )
        # Every child made once, at 0; a request then costs a dict lookup, not `.labels()`.
        self.outcome = {outcome: self.requests.labels(outcome) for outcome in OUTCOMES}
        self.drop_stage = {stage: self.dropped.labels(stage) for stage in DROP_STAGES}
        self.in_flight = Gauge(DB_IN_FLIGHT, "Queries holding a slot.", registry=registry)
        self.queue_depth = Gauge(DB_QUEUE_DEPTH, "Queries waiting for a slot.", registry=registry)
        self.queue_standing = Gauge(
            DB_QUEUE_STANDING,
            "1 while the queue has been non-empty for the codel interval (codel: new waiters get "
            "the target; lifo: newest first).",
            registry=registry,
        )
        registry.register(
            _ScrapedCounter(
                DB_SLOT_SECONDS,
                "Seconds concurrency slots were held, from taking to releasing, any outcome.",
                slot_seconds,
            )
        )
        self.latency = Histogram(
            DB_LATENCY,
            "Time from arrival to a successful answer.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.capacity_concurrency = Gauge(
            DB_CAPACITY_CONCURRENCY, "Configured concurrency limit.", registry=registry
        )
        self.capacity_queue = Gauge(
            DB_CAPACITY_QUEUE, "Configured wait-queue bound.", registry=registry
        )
        self.capacity_per_second = Gauge(
            DB_CAPACITY_PER_SECOND,
            "Queries per second the DB can serve (concurrency / mean latency).",
            registry=registry,
        )
        self.queue_discipline = Info(
            DB_QUEUE_DISCIPLINE, "Queue discipline in force.", registry=registry
        )
        self.codel_target = Gauge(DB_CODEL_TARGET, "Configured CoDel target.", registry=registry)
        self.codel_interval = Gauge(
            DB_CODEL_INTERVAL, "Configured CoDel interval.", registry=registry
        )
        self.latency_base = Gauge(DB_LATENCY_BASE, "Configured base latency.", registry=registry)
        self.error_rate = Gauge(
            DB_INJECTED_ERROR_RATIO, "Configured injected error rate.", registry=registry
        )


class Db:
    """The DB's state, shared by its data-plane and admin servicers."""

    def __init__(self, config: DbSettings, registry: CollectorRegistry) -> None:
        self.config = config
        self.capacity = Capacity(config.concurrency, config.queue, config.discipline())
        self.rng = random.Random(config.seed)
        self.record = EventRecord(config.record_size)
        self.metrics = DbMetrics(registry, lambda: self.capacity.slot_seconds)
        self.completed = 0
        self.rejected = 0
        self.dropped = 0
        self.dropped_by_stage: dict[str, int] = {}
        self.failed = 0
        # key -> its queries in the DB now (keys with none are removed: bounded by in-flight).
        self.in_flight_by_key: dict[str, int] = {}
        self.max_in_flight_per_key = 0
        # setting (seconds) -> (its seconds, the ms an admin call gave for it): see `ms`.
        self.given_ms: dict[str, tuple[float, float]] = {}
        # Gauges read the live state when scraped: nothing to keep in step on the request path.
        m = self.metrics
        m.in_flight.set_function(lambda: self.capacity.in_flight)
        m.queue_depth.set_function(lambda: self.capacity.queued)
        m.queue_standing.set_function(lambda: self.capacity.standing)
        m.codel_target.set_function(lambda: self.config.codel_target_s)
        m.codel_interval.set_function(lambda: self.config.codel_interval_s)
        m.queue_discipline.info({"discipline": config.queue_discipline})
        m.capacity_concurrency.set_function(lambda: self.config.concurrency)
        m.capacity_queue.set_function(lambda: self.config.queue)
        m.capacity_per_second.set_function(lambda: self.config.capacity_per_s)
        m.latency_base.set_function(lambda: self.config.latency_s)
        m.error_rate.set_function(lambda: self.config.error_rate)

    def apply(self, config: DbSettings, given_ms: Mapping[str, float] | None = None) -> None:
        """Puts `config` in force; `given_ms` holds the admin call's values in ms, by setting."""
        self.config = config
        self.given_ms.update({s: (getattr(config, s), ms) for s, ms in (given_ms or {}).items()})
        self.capacity.resize(config.concurrency, config.queue)
        self.capacity.set_discipline(config.discipline())
        self.metrics.queue_discipline.info({"discipline": config.queue_discipline})

    def ms(self, setting: str) -> float:
        """A duration setting in ms: exactly the value an admin call gave while the setting is
        still what that value became. The DB keeps seconds, and ms / 1000 * 1000 is not always
        the float that was sent (63.7 comes back as 63.699999999999996, a subnormal loses bits):
        a reply or a GetState that differs from the request would say the DB changed it."""
        seconds = float(getattr(self.config, setting))
        given = self.given_ms.get(setting)
        return given[1] if given is not None and given[0] == seconds else seconds * 1000

    def state(self) -> admin_pb2.DbState:
        c = self.config
        return admin_pb2.DbState(
            faults=admin_pb2.Faults(
                latency_ms=self.ms("latency_s"),
                spread_ms=self.ms("spread_s"),
                error_rate=c.error_rate,
            ),
            capacity=admin_pb2.Capacity(
                concurrency=c.concurrency,
                queue=c.queue,
                discipline=c.queue_discipline,
                codel_target_ms=self.ms("codel_target_s"),
                codel_interval_ms=self.ms("codel_interval_s"),
            ),
            arrivals=self.record.total,
            completed=self.completed,
            rejected=self.rejected,
            dropped=self.dropped,
            failed=self.failed,
            in_flight=self.capacity.in_flight,
            queued=self.capacity.queued,
            capacity_per_s=c.capacity_per_s,
            slot_seconds=self.capacity.slot_seconds,
            standing=self.capacity.standing,
            dropped_by_stage=self.dropped_by_stage,
            max_in_flight_per_key=self.max_in_flight_per_key,
        )

    def reset_peaks(self) -> None:
        """Starts the per-key peak again from the queries in the DB now."""
        self.max_in_flight_per_key = max(self.in_flight_by_key.values(), default=0)

    def _drop(self, stage: str) -> None:
        self.dropped += 1
        self.dropped_by_stage[stage] = self.dropped_by_stage.get(stage, 0) + 1
        self.metrics.drop_stage[stage].inc()
        self.metrics.outcome["dropped"].inc()

    async def get(self, key: str, context: Context) -> db_pb2.DbGetResponse:
        started = time.perf_counter()
        self.record.add()
        self.metrics.arrivals.inc()
        problem = key_error(key)
        if problem:
            self.metrics.outcome["invalid"].inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        count = self.in_flight_by_key.get(key, 0) + 1
        self.in_flight_by_key[key] = count
        self.max_in_flight_per_key = max(self.max_in_flight_per_key, count)
        try:
            return await self._serve(key, context, started)
        finally:
            count = self.in_flight_by_key[key] - 1
            if count:
                self.in_flight_by_key[key] = count
            else:
                del self.in_flight_by_key[key]

    async def _serve(self, key: str, context: Context, started: float) -> db_pb2.DbGetResponse:
        try:
            waited = await self.capacity.acquire()
        except Rejected as exc:
            self.rejected += 1
            self.metrics.outcome["rejected"].inc()
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"db overloaded: {exc}")
        except Shed as exc:
            self._drop(exc.by)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"db overloaded: {exc}")
        except asyncio.CancelledError:
            self._drop("queue")
            raise
        try:
            remaining = context.time_remaining()
            if context.cancelled() or (remaining is not None and remaining <= 0):
                self._drop("queue")
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "caller gone before service")
            if waited and remaining is not None and remaining < self.config.latency_s:
                self._drop("deadline")
                await context.abort(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"dropped at dequeue: {remaining * 1000:.0f}ms left, a query takes "
                    f"{self.config.latency_s * 1000:.0f}ms",
                )
            if self.config.error_rate and self.rng.random() < self.config.error_rate:
                self.failed += 1
                self.metrics.outcome["error"].inc()
                await context.abort(grpc.StatusCode.UNAVAILABLE, "injected fault")
            delay = self.config.latency_s + self.rng.uniform(0.0, self.config.spread_s)
            try:
                await asyncio.sleep(delay)
            except asyncio.CancelledError:
                self._drop("work")
                raise
            self.completed += 1
            self.metrics.outcome["ok"].inc()
            self.metrics.latency.observe(time.perf_counter() - started)
            return db_pb2.DbGetResponse(
                key=key, value=value_for(key, self.config.version), version=self.config.version
            )
        finally:
            self.capacity.release()


class DbServicer(db_pb2_grpc.DbServicer):
    def __init__(self, db: Db) -> None:
        self.db = db

    async def Get(self, request: db_pb2.DbGetRequest, context: Context) -> db_pb2.DbGetResponse:
        return await self.db.get(request.key, context)


def _given_ms(
    request: admin_pb2.Faults | admin_pb2.Capacity, fields: Mapping[str, str]
) -> dict[str, float]:
    """The ms values `request` sets, by setting: `fields` maps each field to its setting."""
    return {s: float(getattr(request, f)) for f, s in fields.items() if request.HasField(f)}


def _out_of_bounds_ms(given_ms: Mapping[str, float]) -> list[str]:
    """The bounds of each duration, checked on the ms given: its seconds may round into range
    (-5e-324 ms is -0.0 s)."""
    specs = dict(fields(DbSettings))
    found = []
    for setting, ms in given_ms.items():
        spec = specs[setting]
        assert spec.lo is not None and spec.hi is not None  # every duration has bounds
        if not spec.lo * 1000 <= ms <= spec.hi * 1000:
            found.append(
                f"{spec.label} must be in [{spec.lo * 1000:g}, {spec.hi * 1000:g}] ms, got {ms!r}"
            )
    return found


# Fields `SetFaults` can set for a while (`for_ms`), by their name in `Faults`: the setting each is.
TIMED_FAULTS = {"latency_ms": "latency_s", "spread_ms": "spread_s", "error_rate": "error_rate"}
MAX_FAULT_FOR_MS = 86_400_000.0


class DbAdminServicer(admin_pb2_grpc.DbAdminServicer):
    """The DB's admin plane. A fault set with `for_ms` is put back by the DB itself at its
    deadline (a timer per field, on the DB's event loop), so it ends on time even if whoever set
    it is gone; setting a field again replaces its pending revert."""

    def __init__(self, db: Db) -> None:
        self.db = db
        self._reverts: dict[str, tuple[float, asyncio.TimerHandle]] = {}  # field -> (at, timer)

    async def _apply(
        self, rpc: str, config: DbSettings, given_ms: Mapping[str, float], context: Context
    ) -> admin_pb2.DbState:
        problems = config.problems() or _out_of_bounds_ms(given_ms)
        if problems:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "; ".join(problems))
        before = self.db.config.described()
        self.db.apply(config, given_ms)
        changed = {k: v for k, v in config.described().items() if before[k] != v}
        if changed:  # a call that changed nothing (e.g. `chaos reset` of a clean stack) is quiet
            logs.event("admin_change", rpc=rpc, **changed)
        return self.db.state()

    async def SetFaults(self, request: admin_pb2.Faults, context: Context) -> admin_pb2.DbState:
        given = _given_ms(request, {"latency_ms": "latency_s", "spread_ms": "spread_s"})
        changes: dict[str, Any] = {setting: ms / 1000 for setting, ms in given.items()}
        if request.HasField("error_rate"):
            changes["error_rate"] = request.error_rate
        for_ms = request.for_ms if request.HasField("for_ms") else 0.0
        if not 0 <= for_ms <= MAX_FAULT_FOR_MS:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"for_ms must be in [0, {MAX_FAULT_FOR_MS:g}], got {for_ms:g}",
            )
        before = self.db.config
        before_ms = {setting: self.db.ms(setting) for setting in given}  # what a revert gives
        state = await self._apply("SetFaults", replace(before, **changes), given, context)
        fields = [f for f in TIMED_FAULTS if request.HasField(f)]
        for field in fields:
            pending = self._reverts.pop(field, None)
            if pending is not None:
                pending[1].cancel()
        if for_ms > 0:
            loop = asyncio.get_running_loop()
            at = time.time() + for_ms / 1000
            for field in fields:
                setting = TIMED_FAULTS[field]
                was = {setting: before_ms[setting]} if setting in before_ms else {}
                timer = loop.call_later(
                    for_ms / 1000, self._revert, field, setting, getattr(before, setting), was
                )
                self._reverts[field] = (at, timer)
            state.reverts_at_unix.update({f: at for f in fields})
        return state

    def _revert(
        self, field: str, setting: str, value: float, given_ms: Mapping[str, float]
    ) -> None:
        self._reverts.pop(field, None)
        changes: dict[str, Any] = {setting: value}
        before = self.db.config.described()
        config = replace(self.db.config, **changes)
        self.db.apply(config, given_ms)
        changed = {k: v for k, v in config.described().items() if before[k] != v}
        if changed:
            logs.event("admin_change", rpc="SetFaults", reverted=field, **changed)

    async def GetState(self, request: admin_pb2.Empty, context: Context) -> admin_pb2.DbState:
        state = self.db.state()
        state.reverts_at_unix.update({f: at for f, (at, _) in self._reverts.items()})
        return state

    async def SetCapacity(self, request: admin_pb2.Capacity, context: Context) -> admin_pb2.DbState:
        changes: dict[str, Any] = {}
        if request.HasField("concurrency"):
            changes["concurrency"] = request.concurrency
        if request.HasField("queue"):
            changes["queue"] = request.queue
        if request.HasField("discipline"):
            changes["queue_discipline"] = request.discipline
        given = _given_ms(
            request,
            {"codel_target_ms": "codel_target_s", "codel_interval_ms": "codel_interval_s"},
        )
        changes.update({setting: ms / 1000 for setting, ms in given.items()})
        return await self._apply("SetCapacity", replace(self.db.config, **changes), given, context)

    async def GetArrivals(
        self, request: admin_pb2.RecordRequest, context: Context
    ) -> admin_pb2.Record:
        return await serve_page(self.db.record, request, context)

    async def ResetPeaks(self, request: admin_pb2.Empty, context: Context) -> admin_pb2.DbState:
        self.db.reset_peaks()
        return self.db.state()
