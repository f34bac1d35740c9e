"""The cache service: herd -> Get -> store (HIT) | coalescer -> DB client (retry policy) -> DB.

A `Get` is answered from the store when the key is fresh (HIT). Otherwise, with coalescing on,
the first caller starts the key's fetch (MISS) and the callers arriving while it runs wait for it
(COALESCED); with coalescing off every caller fetches for itself (MISS), which is the stampede.
A fetched value is stored; a failed fetch stores nothing and every caller waiting on it gets the
same typed error: the code of the DB's last answer, with a message naming the attempts made.

With a shared store (`--store redis://...`, `shared.py`) the values live in Redis for every
replica. A replica's single-flight is then in front of everything Redis does for a key: its
concurrent callers share one read of the value and, on a miss, one lease (so a replica makes one
Redis round trip per key, not one per caller). The caller whose flight read a fresh value gets
HIT; the one whose flight fetched under the lease gets MISS; everyone else (waiting on this
replica's flight or on another replica's lease) gets COALESCED. Without a shared store the local
hit path is as before: one dict lookup, nothing awaited.
"""

from __future__ import annotations

import time

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from cache_service.coalescer import Coalescer
from cache_service.dbclient import DbClient
from cache_service.shared import LeaseFailed, SharedEntry, SharedStore, SharedUnavailable
from cache_service.store import TtlStore
from herdlab.grpcutil import Context
from herdlab.guards import GuardRejected
from herdlab.metrics import PREFIX
from herdlab.record import serve_page
from herdlab.retry import RetryExhausted
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
_SOURCES = {"hit": cache_pb2.HIT, "miss": cache_pb2.MISS, "coalesced": cache_pb2.COALESCED}


class CacheMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        p = f"{PREFIX}_cache"
        self.requests = Counter(
            f"{p}_requests",
            "Get requests finished, by source (hit, miss, coalesced, none) and result "
            "(ok, error, invalid).",
            ["source", "result"],
            registry=registry,
        )
        self.latency = Histogram(
            f"{p}_request_latency_seconds",
            "Time to answer a Get, by source.",
            ["source"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.in_flight_keys = Gauge(
            f"{p}_in_flight_keys", "Keys with a DB fetch under way.", registry=registry
        )
        self.waiters = Gauge(
            f"{p}_coalesced_waiters",
            "Callers waiting on a fetch another caller started.",
            registry=registry,
        )
        self.keys = Gauge(f"{p}_keys", "Entries in the store.", registry=registry)
        self.expired = Counter(
            f"{p}_expired_keys", "Keys dropped by Expire calls.", registry=registry
        )
        self.coalescing = Gauge(
            f"{p}_coalescing_enabled", "1 when concurrent misses are coalesced.", registry=registry
        )


class Cache:
    """The cache's state, shared by its data-plane and admin servicers."""

    def __init__(
        self,
        store: TtlStore,
        db: DbClient,
        coalescing: bool,
        registry: CollectorRegistry,
        shared: SharedStore | None = None,
    ) -> None:
        self.store = store
        self.db = db
        self.shared = shared
        self.coalescer: Coalescer[db_pb2.DbGetResponse] = Coalescer()
        self.flights: Coalescer[tuple[SharedEntry, str]] = Coalescer()  # with a shared store
        self.metrics = CacheMetrics(registry)
        self.metrics.in_flight_keys.set_function(
            lambda: self.coalescer.in_flight() + self.flights.in_flight()
        )
        self.metrics.waiters.set_function(lambda: self.coalescer.waiters + self.flights.waiters)
        self.metrics.keys.set_function(lambda: len(self.store))
        self.set_coalescing(coalescing)

    def set_coalescing(self, enabled: bool) -> None:
        self.coalescing = enabled
        self.metrics.coalescing.set(1 if enabled else 0)

    def state(self) -> admin_pb2.CacheState:
        return admin_pb2.CacheState(
            coalescing=self.coalescing,
            policy=self.db.policy.name,
            keys=len(self.store),
            in_flight_keys=self.coalescer.in_flight() + self.flights.in_flight(),
            db_attempts=self.db.record.total,
            ttl_s=self.store.ttl_s,
        )

    async def _fill(self, key: str) -> db_pb2.DbGetResponse:
        reply = await self.db.get(key)
        self.store.put(key, reply.value, reply.version)
        return reply

    async def get(self, key: str, context: Context) -> cache_pb2.CacheGetResponse:
        started = time.perf_counter()
        problem = key_error(key)
        if problem:
            self.metrics.requests.labels("none", "invalid").inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        if self.shared is not None:
            return await self._get_shared(self.shared, key, context, started)
        entry = self.store.get(key)
        if entry is not None:
            self._count("hit", "ok", started)
            return cache_pb2.CacheGetResponse(
                key=key, value=entry.value, version=entry.version, source=cache_pb2.HIT
            )
        source = "miss"
        try:
            if self.coalescing:
                reply, shared = await self.coalescer.do(key, lambda: self._fill(key))
                source = "coalesced" if shared else "miss"
            else:
                reply = await self._fill(key)
        except RetryExhausted as exc:
            self._count(source, "error", started)
            await context.abort(*_typed_error(exc.last, exc.attempts))
        except grpc.aio.AioRpcError as exc:
            self._count(source, "error", started)
            await context.abort(*_typed_error(exc, 1))
        self._count(source, "ok", started)
        return cache_pb2.CacheGetResponse(
            key=key,
            value=reply.value,
            version=reply.version,
            source=cache_pb2.COALESCED if source == "coalesced" else cache_pb2.MISS,
        )

    async def _flight(self, shared: SharedStore, key: str) -> tuple[SharedEntry, str]:
        """One replica's flight for `key` on the shared store: (entry, source of its starter)."""
        try:
            entry = await shared.get(key)
            if entry is not None and shared.fresh(entry):
                return entry, "hit"
            filled, fetched = await shared.fill(key, lambda: self._fetch(key))
            return filled, "miss" if fetched else "coalesced"
        except SharedUnavailable:
            # Redis failed or is too slow: straight to the DB, as a replica without Redis.
            started = time.perf_counter()
            reply = await self.db.get(key)
            delta = time.perf_counter() - started
            return await shared.put(key, reply.value, reply.version, delta), "miss"

    async def _fetch(self, key: str) -> tuple[str, int]:
        reply = await self.db.get(key)
        return reply.value, reply.version

    async def _get_shared(
        self, shared: SharedStore, key: str, context: Context, started: float
    ) -> cache_pb2.CacheGetResponse:
        source = "miss"
        try:
            if self.coalescing:
                (entry, source), joined = await self.flights.do(
                    key, lambda: self._flight(shared, key)
                )
                if joined and source != "hit":
                    source = "coalesced"
            else:
                entry, source = await self._flight(shared, key)
        except RetryExhausted as exc:
            self._count(source, "error", started)
            await context.abort(*_typed_error(exc.last, exc.attempts))
        except grpc.aio.AioRpcError as exc:
            self._count(source, "error", started)
            await context.abort(*_typed_error(exc, 1))
        except LeaseFailed as exc:
            self._count("coalesced", "error", started)
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, f"the lease holder's fetch failed: {exc}"
            )
        self._count(source, "ok", started)
        return cache_pb2.CacheGetResponse(
            key=key, value=entry.value, version=entry.version, source=_SOURCES[source]
        )

    def _count(self, source: str, result: str, started: float) -> None:
        self.metrics.requests.labels(source, result).inc()
        self.metrics.latency.labels(source).observe(time.perf_counter() - started)


def _typed_error(error: BaseException, attempts: int) -> tuple[grpc.StatusCode, str]:
    """The code and message a cache client gets for a fetch that failed with `error`."""
    if isinstance(error, grpc.aio.AioRpcError):
        code, details = error.code(), f"{error.code().name}: {error.details() or ''}"
    elif isinstance(error, GuardRejected):
        # Shed here, not by the DB: an open breaker says the DB is unavailable; a spent budget,
        # a throttle or a full limit say this cache is out of room for the DB; a wait for the
        # limit that used up the fetch's budget is its deadline.
        code = {
            "breaker": grpc.StatusCode.UNAVAILABLE,
            "deadline": grpc.StatusCode.DEADLINE_EXCEEDED,
        }.get(error.guard, grpc.StatusCode.RESOURCE_EXHAUSTED)
        return code, f"refused by the cache's guard {error} (after {attempts} attempt(s))"
    else:
        code, details = grpc.StatusCode.UNAVAILABLE, f"{type(error).__name__}: {error}"
    if code not in _PASSED_THROUGH:
        code = grpc.StatusCode.UNAVAILABLE
    return code, f"db {details} (after {attempts} attempt(s))"


class CacheServicer(cache_pb2_grpc.CacheServicer):
    def __init__(self, cache: Cache) -> None:
        self.cache = cache

    async def Get(
        self, request: cache_pb2.CacheGetRequest, context: Context
    ) -> cache_pb2.CacheGetResponse:
        return await self.cache.get(request.key, context)

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
        return self.cache.state()

    async def GetState(self, request: admin_pb2.Empty, context: Context) -> admin_pb2.CacheState:
        return self.cache.state()

    async def GetAttempts(
        self, request: admin_pb2.RecordRequest, context: Context
    ) -> admin_pb2.Record:
        return await serve_page(self.cache.db.record, request, context)
