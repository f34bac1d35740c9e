"""The cache service: herd -> Get -> store (HIT, STALE) | coalescer -> DB client -> DB.

A `Get` is answered from the store when the key is fresh (HIT). Otherwise, with coalescing on,
the first caller starts the key's fetch (MISS) and the callers arriving while it runs wait for it
(COALESCED); with coalescing off every caller fetches for itself (MISS), which is the stampede.
A fetched value is stored; a failed fetch stores nothing and every caller waiting on it gets the
same typed error: the code of the DB's last answer, with a message naming the attempts made.

The freshness policy (`freshness.py`) changes three things. A fresh HIT may draw an early
refresh (XFetch); a value expired within stale-while-revalidate is served as STALE at once; in
both cases one background refresh per key runs (through the coalescer, so a caller that misses
meanwhile waits for it rather than fetching again). A fetch that fails while a value expired
within stale-if-error is kept serves that value as STALE instead of the error. A background
refresh that fails keeps the old value and stores nothing. Each STALE answer carries its age.

With a shared store (`--store redis://...`, `shared.py`) the values live in Redis for every
replica and the same rules apply to them (Redis keeps each value's expiry, as wall-clock time,
and its `delta`, and keeps an expired value for the stale window). The store is reached at two
points only: the read (`_read`: one Redis GET per key at a time on a replica, whatever the
number of callers) and the fill (`_fill`: under the key's lease, so the replicas make one DB
query per key, background refreshes included). A caller whose replica waited on another
replica's lease gets COALESCED. Without a shared store the hit path is as it was: one dict
lookup, nothing awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable
from dataclasses import replace

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from cache_service.dbclient import DbClient
from cache_service.freshness import Freshness
from cache_service.shared import SharedStore
from cache_service.store import Entry, TtlStore
from herdlab import logs
from herdlab.client import CallFailed, rejection_code
from herdlab.grpcutil import Context
from herdlab.guards import GuardRejected
from herdlab.lease import LeaseFailed, SharedUnavailable
from herdlab.metrics import (
    CACHE_COALESCED_WAITERS,
    CACHE_COALESCING_ENABLED,
    CACHE_EXPIRED_KEYS,
    CACHE_IN_FLIGHT_KEYS,
    CACHE_KEYS,
    CACHE_REFRESHES,
    CACHE_REQUEST_LATENCY,
    CACHE_REQUESTS,
    CACHE_STALE_AGE,
    LoopCounter,
    LoopHistogram,
)
from herdlab.record import serve_page
from herdlab.singleflight import SingleFlight
from herdlab.values import key_error
from protos import admin_pb2, admin_pb2_grpc, cache_pb2, cache_pb2_grpc, db_pb2

# Codes a cache client may see for a failed fetch; anything else from the DB becomes UNAVAILABLE.
_PASSED_THROUGH = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)
_MAX_EXPIRE_KEYS = 100_000
# Ages of stale values served, in seconds: from just expired to the longest bound worth a lab run.
STALE_AGE_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600)


# Every (source, result) a Get can end with, and the sources with a latency: exported at 0 from
# the start, so a fresh /metrics shows each one.
SOURCE_RESULTS = (
    ("hit", "ok"),
    ("miss", "ok"),
    ("miss", "error"),
    ("coalesced", "ok"),
    ("coalesced", "error"),
    ("stale", "ok"),
    ("none", "invalid"),
)
LATENCY_SOURCES = ("hit", "miss", "coalesced", "stale")


class CacheMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        # Updated on every Get, on the event loop only: kept without a lock (herdlab.metrics).
        self.requests = LoopCounter(
            CACHE_REQUESTS,
            "Get requests finished, by source (hit, miss, coalesced, stale, none) and result "
            "(ok, error, invalid).",
            ["source", "result"],
            SOURCE_RESULTS,
            registry,
        )
        self.latency = LoopHistogram(
            CACHE_REQUEST_LATENCY,
            "Time to answer a Get, by source.",
            ["source"],
            [(source,) for source in LATENCY_SOURCES],
            (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry,
        )
        self.counted = {pair: self.requests.labels(*pair) for pair in SOURCE_RESULTS}
        self.timed = {source: self.latency.labels(source) for source in LATENCY_SOURCES}
        self.in_flight_keys = Gauge(
            CACHE_IN_FLIGHT_KEYS, "Keys with a DB fetch under way.", registry=registry
        )
        self.waiters = Gauge(
            CACHE_COALESCED_WAITERS,
            "Callers waiting on a fetch another caller started.",
            registry=registry,
        )
        self.keys = Gauge(CACHE_KEYS, "Entries in the store.", registry=registry)
        self.expired = Counter(
            CACHE_EXPIRED_KEYS, "Keys dropped by Expire calls.", registry=registry
        )
        self.coalescing = Gauge(
            CACHE_COALESCING_ENABLED, "1 when concurrent misses are coalesced.", registry=registry
        )
        self.refreshes = Counter(
            CACHE_REFRESHES,
            "Background refreshes started, by trigger: early (XFetch drew a refresh of a fresh "
            "value), stale (an expired value was served under stale-while-revalidate).",
            ["trigger"],
            registry=registry,
        )
        self.stale_age = Histogram(
            CACHE_STALE_AGE,
            "How long ago each value served as STALE expired, by reason (revalidate: "
            "stale-while-revalidate, error: stale-if-error).",
            ["reason"],
            buckets=STALE_AGE_BUCKETS,
            registry=registry,
        )
        for trigger in ("early", "stale"):
            self.refreshes.labels(trigger)
        for reason in ("revalidate", "error"):
            self.stale_age.labels(reason)


class Cache:
    """The cache's state, shared by its data-plane and admin servicers."""

    def __init__(
        self,
        store: TtlStore,
        db: DbClient,
        coalescing: bool,
        registry: CollectorRegistry,
        freshness: Freshness | None = None,
        rng: random.Random | None = None,
        shared: SharedStore | None = None,
    ) -> None:
        self.store = store
        self.db = db
        self.shared = shared
        # A fill's reply and whether this replica fetched it (False: another replica's lease).
        self.coalescer: SingleFlight[tuple[db_pb2.DbGetResponse, bool]] = SingleFlight()
        self.reads: SingleFlight[Entry | None] = SingleFlight()  # shared store: its reads, per key
        self.rng = rng or random.Random()  # XFetch's draws and TTL jitter
        # key -> its background refresh (at most one per key, each bounded by the retry policy).
        self._refreshing: dict[str, asyncio.Task[None]] = {}
        self.stale_served = 0
        self.max_stale_age_s = 0.0
        self.early_refreshes = 0
        self.stale_refreshes = 0
        self.metrics = CacheMetrics(registry)
        self.metrics.in_flight_keys.set_function(self.coalescer.in_flight)
        self.metrics.waiters.set_function(lambda: self.coalescer.waiters)
        self.metrics.keys.set_function(lambda: len(self.store))
        self.set_coalescing(coalescing)
        self.set_freshness(freshness or Freshness())

    def set_coalescing(self, enabled: bool) -> None:
        self.coalescing = enabled
        self.metrics.coalescing.set(1 if enabled else 0)

    def set_freshness(self, freshness: Freshness) -> None:
        """Applies `freshness` from now on (values already stored keep their expiry); the store
        keeps expired entries for the new stale window."""
        self.freshness = freshness
        self.store.keep_s = freshness.stale_window_s
        if self.shared is not None:
            self.shared.keep_s = freshness.stale_window_s

    async def close(self) -> None:
        """Cancels the background refreshes still running (at shutdown)."""
        tasks = list(self._refreshing.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def state(self) -> admin_pb2.CacheState:
        return admin_pb2.CacheState(
            coalescing=self.coalescing,
            policy=self.db.policy.name,
            keys=len(self.store),
            in_flight_keys=self.coalescer.in_flight(),
            db_attempts=self.db.record.total,
            ttl_s=self.store.ttl_s,
            freshness=admin_pb2.Freshness(
                stale_while_revalidate_s=self.freshness.stale_while_revalidate_s,
                stale_if_error_s=self.freshness.stale_if_error_s,
                beta=self.freshness.beta,
                ttl_jitter_pct=self.freshness.ttl_jitter_pct,
            ),
            stale_served=self.stale_served,
            max_stale_age_s=self.max_stale_age_s,
            early_refreshes=self.early_refreshes,
            stale_refreshes=self.stale_refreshes,
        )

    async def _fill(self, key: str) -> tuple[db_pb2.DbGetResponse, bool]:
        ttl_s = self.freshness.ttl_s(self.store.ttl_s, self.rng)
        if self.shared is not None:
            return await self._fill_shared(self.shared, key, ttl_s)
        started = time.perf_counter()
        reply = await self.db.get(key)
        self.store.put(
            key,
            reply.value,
            reply.version,
            ttl_s=ttl_s,
            delta_s=time.perf_counter() - started,
            hit=_hit_reply(key, reply.value, reply.version),
        )
        return reply, True

    async def _fill_shared(
        self, shared: SharedStore, key: str, ttl_s: float
    ) -> tuple[db_pb2.DbGetResponse, bool]:
        try:
            entry, here = await shared.fill(key, lambda: self._fetch(key), ttl_s)
        except SharedUnavailable:
            # Redis failed or is too slow: straight to the DB, as a replica without Redis.
            started = time.perf_counter()
            reply = await self.db.get(key)
            delta_s = time.perf_counter() - started
            await shared.put(key, reply.value, reply.version, delta_s=delta_s, ttl_s=ttl_s)
            return reply, True
        return db_pb2.DbGetResponse(key=key, value=entry.value, version=entry.version), here

    async def _fetch(self, key: str) -> tuple[str, int]:
        reply = await self.db.get(key)
        return reply.value, reply.version

    async def _read(self, shared: SharedStore, key: str) -> Entry | None:
        """The shared store's entry for `key` (None also when Redis failed: a miss)."""
        try:
            entry, _ = await self.reads.do(key, lambda: shared.get(key))
        except SharedUnavailable:
            return None
        return entry

    def _refresh(self, key: str, trigger: str) -> None:
        """Starts `key`'s background refresh, counted under `trigger` (early, stale), unless
        one, or a caller's fetch, is under way."""
        if key in self._refreshing or self.coalescer.running(key):
            return
        self._refreshing[key] = asyncio.get_running_loop().create_task(self._background(key))
        self.metrics.refreshes.labels(trigger).inc()
        if trigger == "early":
            self.early_refreshes += 1
        else:
            self.stale_refreshes += 1

    async def _background(self, key: str) -> None:
        try:
            if self.coalescing:
                await self.coalescer.do(key, lambda: self._fill(key))
            else:
                await self._fill(key)
        except (grpc.aio.AioRpcError, LeaseFailed):
            pass  # the old value stays; the next caller past its bounds fetches again
        finally:
            del self._refreshing[key]

    def _stale(
        self, key: str, entry: Entry, age_s: float, reason: str, started: float
    ) -> cache_pb2.CacheGetResponse:
        self.stale_served += 1
        self.max_stale_age_s = max(self.max_stale_age_s, age_s)
        self.metrics.stale_age.labels(reason).observe(age_s)
        self._count("stale", "ok", started)
        return cache_pb2.CacheGetResponse(
            key=key,
            value=entry.value,
            version=entry.version,
            source=cache_pb2.STALE,
            stale_age_s=age_s,
        )

    def answer(
        self, key: str, context: Context
    ) -> cache_pb2.CacheGetResponse | Awaitable[cache_pb2.CacheGetResponse]:
        """A Get's answer: a fresh hit in the local store at once, with nothing awaited (the
        hit path); anything else as the awaitable of `get`."""
        started = time.perf_counter()
        if self.shared is None and not key_error(key):
            now = self.store.clock()
            entry = self.store.get(key, now)
            if entry is not None and now < entry.expires_at:
                return self._fresh(key, entry, now, started)
        return self.get(key, context)

    async def get(self, key: str, context: Context) -> cache_pb2.CacheGetResponse:
        started = time.perf_counter()
        problem = key_error(key)
        if problem:
            self.metrics.counted["none", "invalid"].inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        shared = self.shared
        if shared is None:
            now = self.store.clock()
            entry = self.store.get(key, now)
        else:
            entry = await self._read(shared, key)
            now = shared.clock()
        seen = entry
        if entry is not None:
            if now < entry.expires_at:
                return self._fresh(key, entry, now, started)
            age = now - entry.expires_at
            if self.freshness.while_revalidating(age):
                self._refresh(key, "stale")
                return self._stale(key, entry, age, "revalidate", started)
        source = "miss"
        failure: tuple[grpc.StatusCode, str] | None = None
        try:
            if self.coalescing:
                (reply, here), joined = await self.coalescer.do(key, lambda: self._fill(key))
            else:
                (reply, here), joined = await self._fill(key), False
            source = "miss" if here and not joined else "coalesced"
        except CallFailed as exc:
            failure = _typed_error(exc.cause, exc.attempts)
        except grpc.aio.AioRpcError as exc:
            failure = _typed_error(exc, 1)
        except LeaseFailed as exc:
            source = "coalesced"
            failure = grpc.StatusCode.UNAVAILABLE, f"the lease holder's fetch failed: {exc}"
        if failure is not None:
            if shared is None:
                entry = self.store.get(key)
                now = self.store.clock()
            else:
                entry = await self._read(shared, key) or seen
                now = shared.clock()
            if entry is not None:
                age = now - entry.expires_at
                if age < 0:  # refreshed meanwhile by a background refresh
                    return self._hit(key, entry, started)
                if self.freshness.if_error(age):
                    return self._stale(key, entry, age, "error", started)
            self._count(source, "error", started)
            await context.abort(*failure)
        self._count(source, "ok", started)
        return cache_pb2.CacheGetResponse(
            key=key,
            value=reply.value,
            version=reply.version,
            source=cache_pb2.COALESCED if source == "coalesced" else cache_pb2.MISS,
        )

    def _fresh(
        self, key: str, entry: Entry, now: float, started: float
    ) -> cache_pb2.CacheGetResponse:
        """A hit on a fresh `entry`, which may draw its early refresh (XFetch)."""
        if self.freshness.early(now, entry.expires_at, entry.delta_s, self.rng):
            self._refresh(key, "early")
        return self._hit(key, entry, started)

    def _hit(self, key: str, entry: Entry, started: float) -> cache_pb2.CacheGetResponse:
        self._count("hit", "ok", started)
        reply: cache_pb2.CacheGetResponse | None = entry.hit
        return reply if reply is not None else _hit_reply(key, entry.value, entry.version)

    def _count(self, source: str, result: str, started: float) -> None:
        self.metrics.counted[source, result].inc()
        self.metrics.timed[source].observe(time.perf_counter() - started)


def _hit_reply(key: str, value: str, version: int) -> cache_pb2.CacheGetResponse:
    """The answer to a hit. One message serves every hit on a stored value: gRPC only reads it
    (to serialise it), and nothing in the cache changes a reply once made."""
    return cache_pb2.CacheGetResponse(key=key, value=value, version=version, source=cache_pb2.HIT)


def _typed_error(error: BaseException, attempts: int) -> tuple[grpc.StatusCode, str]:
    """The code and message a cache client gets for a fetch that failed with `error`."""
    if isinstance(error, grpc.aio.AioRpcError):
        code, details = error.code(), f"{error.code().name}: {error.details() or ''}"
    elif isinstance(error, GuardRejected):
        # Shed here, not by the DB: the code the library gives a refusal (`rejection_code`).
        code = rejection_code(error)
        return code, f"refused by the cache's guard {error} (after {attempts} attempt(s))"
    else:
        code, details = grpc.StatusCode.UNAVAILABLE, f"{type(error).__name__}: {error}"
    if code not in _PASSED_THROUGH:
        code = grpc.StatusCode.UNAVAILABLE
    return code, f"db {details} (after {attempts} attempt(s))"


class CacheServicer(cache_pb2_grpc.CacheServicer):
    """The data plane, mounted by `herdlab.grpcutil.Service`: its `Get` answers a hit without a
    coroutine of its own, which the generated `add_CacheServicer_to_server` would not await."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache

    def Get(
        self, request: cache_pb2.CacheGetRequest, context: Context
    ) -> cache_pb2.CacheGetResponse | Awaitable[cache_pb2.CacheGetResponse]:
        return self.cache.answer(request.key, context)  # awaited if need be: grpcutil.Service

    async def Expire(
        self, request: cache_pb2.ExpireRequest, context: Context
    ) -> cache_pb2.ExpireResponse:
        if request.all and request.keys:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "give either keys or all, not both"
            )
        if not request.all and not request.keys:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "give keys to expire, or all")
        if len(request.keys) > _MAX_EXPIRE_KEYS:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{len(request.keys)} keys in one Expire; the limit is {_MAX_EXPIRE_KEYS}",
            )
        for key in request.keys:
            problem = key_error(key)
            if problem:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{problem}: {key[:64]!r}")
        store, shared = self.cache.store, self.cache.shared
        expired = store.expire_all() if request.all else store.expire(request.keys)
        if shared is not None:
            try:
                keys = list(request.keys)
                expired += await (shared.expire_all() if request.all else shared.expire(keys))
            except SharedUnavailable as exc:
                await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        self.cache.metrics.expired.inc(expired)
        return cache_pb2.ExpireResponse(expired=expired)


class CacheAdminServicer(admin_pb2_grpc.CacheAdminServicer):
    def __init__(self, cache: Cache) -> None:
        self.cache = cache

    async def SetCoalescing(
        self, request: admin_pb2.Coalescing, context: Context
    ) -> admin_pb2.CacheState:
        self.cache.set_coalescing(request.enabled)
        logs.event("admin_change", rpc="SetCoalescing", coalescing=request.enabled)
        return self.cache.state()

    async def SetFreshness(
        self, request: admin_pb2.Freshness, context: Context
    ) -> admin_pb2.CacheState:
        changes: dict[str, float] = {}
        for field in ("stale_while_revalidate_s", "stale_if_error_s", "beta", "ttl_jitter_pct"):
            if request.HasField(field):
                changes[field] = getattr(request, field)
        freshness = replace(self.cache.freshness, **changes)
        problems = freshness.problems()
        if problems:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "; ".join(problems))
        self.cache.set_freshness(freshness)
        logs.event("admin_change", rpc="SetFreshness", **changes)
        return self.cache.state()

    async def GetState(self, request: admin_pb2.Empty, context: Context) -> admin_pb2.CacheState:
        return self.cache.state()

    async def GetAttempts(
        self, request: admin_pb2.RecordRequest, context: Context
    ) -> admin_pb2.Record:
        return await serve_page(self.cache.db.record, request, context)
