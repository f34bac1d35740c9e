"""The shared store: every replica's values in Redis, each key filled under its lease.

`cache-service --store redis://HOST:PORT/N` keeps every value in Redis with its version, its
expiry as wall-clock time and its recompute time (`delta`, how long the fetch that made it took),
as one string under `herdlab:v:<key>`, set with `PX` = the time to its expiry plus the time an
expired value is kept (`keep_s`, the freshness policy's stale window): the freshness policy
(`freshness.py`: stale serving, stale-if-error, XFetch) reads these fields as it reads the local
store's.

A miss goes through the key's lease (`herdlab.lease`: one DB query per key across the replicas,
waiters woken by a publication on the replica's one pub/sub connection, `herdlab.notifier`);
`SharedStore.fill` composes it with this store, which gives the lease its Redis client, its
per-call timeout, the value's key and encoding and the metrics (`lease.Values`).

Redis down, slow or paused: every Redis call has its own timeout (`--redis-timeout`) and redis-py
makes no retries; a connection Redis dropped closes the pool's idle ones too (`_drop_idle`).
When a call fails or times out the replica falls back to its local path: the fetch goes straight
to the DB under the local single-flight, as without a shared store
(`herdlab_cache_shared_fallbacks_total{op}` counts each), and the value is then offered to Redis
with the same short timeout. Answers keep coming, one DB query per key per replica at worst;
nothing waits on Redis longer than its timeout, and a waiter whose subscription broke stops
waiting at once and falls back too.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from cache_service.store import Entry
from herdlab.lease import NAMESPACE, LeaseMetrics, Leases, SharedUnavailable
from herdlab.notifier import Notifier

# A fetch from the DB: the value and its version.
Fetch = Callable[[], Awaitable[tuple[str, int]]]

MAX_CONNECTIONS = 256


def encode(entry: Entry) -> str:
    """One entry as Redis keeps it: `version|expires_at|delta_s|value` (the value last, whole)."""
    return f"{entry.version}|{entry.expires_at!r}|{entry.delta_s!r}|{entry.value}"


def decode(raw: str) -> Entry:
    version, expires_at, delta, value = raw.split("|", 3)
    return Entry(value, int(version), float(expires_at), float(delta))


def parse_store(text: str) -> tuple[str, int, int] | None:
    """`local` -> None; `redis://HOST:PORT/N` -> (host, port, db); ValueError names the problem.
    The lab's own stacks give 127.0.0.1; compose gives its service name, as for the DB."""
    if text == "local":
        return None
    try:
        url = urlsplit(text)
        port = url.port
    except ValueError as exc:
        raise ValueError(f"store {text!r}: {exc}") from None
    path = url.path.lstrip("/") or "0"
    if url.scheme != "redis" or not url.hostname or port is None or not path.isdigit():
        raise ValueError(f"store must be local or redis://HOST:PORT/N, got {text!r}")
    if int(path) > 15:
        raise ValueError(f"store {text!r}: database must be in 0..15")
    return url.hostname, port, int(path)


class SharedStore:
    """Values in Redis for every replica of the cache, filled under their leases (see the module
    docstring); the lease's `Values` of `Entry`."""

    def __init__(
        self,
        host: str,
        port: int,
        db: int,
        *,
        ttl_s: float,
        lease_timeout_s: float,
        timeout_s: float,
        wait_limit_s: float,
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ttl_s = ttl_s
        self.keep_s = 0.0  # how long Redis keeps an expired value: the freshness's stale window
        self.timeout_s = timeout_s
        self.clock = clock
        self.metrics = LeaseMetrics(registry)
        # A call waits for a free connection at most its timeout too (a bounded pool).
        pool = BlockingConnectionPool(
            host=host,
            port=port,
            db=db,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            max_connections=MAX_CONNECTIONS,
            timeout=timeout_s,
        )
        self.client = Redis(connection_pool=pool)
        self.notifier = Notifier(self.client, timeout_s)
        self.leases: Leases[Entry] = Leases(
            self, self.notifier, lease_timeout_s=lease_timeout_s, wait_limit_s=wait_limit_s
        )

    encode = staticmethod(encode)
    decode = staticmethod(decode)

    @staticmethod
    def value_key(key: str) -> str:
        return f"{NAMESPACE}:v:{key}"

    async def call(self, op: str, call: Awaitable[Any]) -> Any:
        """One Redis call within the timeout; SharedUnavailable (and counted) otherwise."""
        try:
            return await asyncio.wait_for(call, self.timeout_s)
        except (RedisError, TimeoutError, OSError) as exc:
            self.metrics.fallbacks.labels(op).inc()
            if isinstance(exc, RedisConnectionError | ConnectionError):
                await self._drop_idle()
            raise SharedUnavailable(f"redis {op}: {type(exc).__name__}: {exc}") from exc

    async def _drop_idle(self) -> None:
        """Closes the pool's idle connections once Redis has dropped one: they are as dead as
        it was (a restarted redis-server knows none of them). Left in the pool, each would hold
        its half-closed socket (CLOSE_WAIT) until the pool reused it, and the pool hands out the
        last released first, so the ones a burst opened beyond the usual load would never be."""
        with contextlib.suppress(RedisError, OSError):
            await self.client.connection_pool.disconnect(inuse_connections=False)

    async def get(self, key: str) -> Entry | None:
        """The entry Redis keeps for `key` (fresh or within the kept window), or None."""
        raw = await self.call("get", self.client.get(self.value_key(key)))
        return None if raw is None else decode(raw.decode())

    def fresh(self, entry: Entry | None) -> bool:
        return entry is not None and entry.expires_at > self.clock()

    def entry(self, value: str, version: int, delta_s: float, ttl_s: float | None) -> Entry:
        return Entry(
            value, version, self.clock() + (self.ttl_s if ttl_s is None else ttl_s), delta_s
        )

    def kept_ms(self, entry: Entry) -> int:
        """Redis's PX for `entry`: until its expiry plus the stale window."""
        return max(1, round((entry.expires_at - self.clock() + self.keep_s) * 1000))

    async def put(
        self, key: str, value: str, version: int, *, delta_s: float, ttl_s: float | None = None
    ) -> Entry:
        """Stores a value fetched without a lease (the local path); best effort."""
        entry = self.entry(value, version, delta_s, ttl_s)
        with contextlib.suppress(SharedUnavailable):
            await self.call(
                "put", self.client.set(self.value_key(key), encode(entry), px=self.kept_ms(entry))
            )
        return entry

    async def expire(self, keys: Iterable[str]) -> int:
        names = [self.value_key(k) for k in keys]
        return int(await self.call("expire", self.client.delete(*names))) if names else 0

    async def expire_all(self) -> int:
        """Drops every value of the lab in this Redis database (SCAN, bounded batches)."""
        dropped = 0
        cursor = 0
        while True:
            cursor, names = await self.call(
                "expire",
                self.client.scan(cursor, match=f"{NAMESPACE}:v:*", count=1000),
            )
            if names:
                dropped += int(await self.call("expire", self.client.delete(*names)))
            if cursor == 0:
                return dropped

    async def fill(self, key: str, fetch: Fetch, ttl_s: float | None = None) -> tuple[Entry, bool]:
        """The key's value after a miss, under the key's lease (`Leases.fill`): (entry, fetched
        here); the entry expires `ttl_s` (None: the store's TTL) after the fetch."""

        async def fetched() -> Entry:
            started = time.perf_counter()
            value, version = await fetch()
            return self.entry(value, version, time.perf_counter() - started, ttl_s)

        return await self.leases.fill(key, fetched)

    async def close(self) -> None:
        await self.notifier.close()
        await self.client.aclose(close_connection_pool=True)
