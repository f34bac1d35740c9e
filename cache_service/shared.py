"""The shared store: values in Redis, and one lease per key so R replicas make one DB query.

`cache-service --store redis://HOST:PORT/N` keeps every value in Redis with its version, its
expiry as wall-clock time and its recompute time (`delta`, how long the fetch that made it took),
as one string under `herdlab:v:<key>`, set with `PX` = the time to its expiry plus the time an
expired value is kept (`keep_s`, the freshness policy's stale window): the freshness policy
(`freshness.py`: stale serving, stale-if-error, XFetch) reads these fields as it reads the local
store's.

A miss goes through a lease (after Facebook's memcache leases, NSDI 2013):

- `SET herdlab:lease:<key> <token> NX PX <lease timeout>`, and a read of the value in the same
  Lua script (a value stored by a holder that finished a moment before is taken, not fetched
  again): who gets the lease fetches from the DB. While
  its fetch runs it renews the lease (compare-and-`PEXPIRE`, every third of the timeout), so a
  slow DB does not hand the key to a second fetcher, but a holder that died (SIGKILL, a pause,
  a lost network) stops renewing and its lease is gone one timeout later.
- The holder ends in one Lua script: it stores the value, publishes it on
  `herdlab:ch:<key>` and deletes the lease if it still holds its token (compare-and-delete). A
  failed fetch publishes a failure notice (the error's text) and deletes the lease the same way.
- Who did not get the lease subscribes to the key's channel, then reads the value and the
  lease's remaining time in one round trip (a value stored before the subscription took effect
  is seen by that read, so no publication is missed), and waits for the publication without
  polling, at most the lease's remaining time; then it reads both again: a lease its live holder
  renewed is waited on again (`wait_limit_s` in all, the fetch budget plus one lease timeout),
  a lease that ran out unpublished means its holder is gone: the waiter tries the lease again
  and, taking it, fetches itself (a takeover). Rounds are bounded (`MAX_ROUNDS`); a caller's own
  deadline bounds its wait as well (the server's single-flight is in front: a replica has one
  flight per key, whatever its callers do, and a caller that leaves does not end the flight).

One pub/sub connection per replica carries every subscription (`Notifier`); a reader task hands
each publication to the waiters of its channel. redis-py's `Lock` is not used: it polls for the
lock, publishes nothing, and has no expiry unless one is given.

Redis down, slow or paused: every Redis call has its own timeout (`--redis-timeout`) and redis-py
makes no retries. When a call fails or times out the replica falls back to its local path: the
fetch goes straight to the DB under the local single-flight, as without a shared store
(`herdlab_cache_shared_fallbacks_total{op}` counts each), and the value is then offered to Redis
with the same short timeout. Answers keep coming, one DB query per key per replica at worst;
nothing waits on Redis longer than its timeout, and a waiter whose subscription broke stops
waiting at once and falls back too.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from cache_service.store import Entry
from herdlab.metrics import (
    CACHE_LEASE_TAKEOVERS,
    CACHE_LEASE_WAIT_SECONDS,
    CACHE_LEASE_WAITING,
    CACHE_LEASE_WAITS,
    CACHE_LEASES,
    CACHE_SHARED_FALLBACKS,
)

NAMESPACE = "herdlab"
# Lease rounds a flight makes at most: the first try, then a takeover after each holder that
# died or failed to publish. With the lease timeout this bounds how long a flight can wait.
MAX_ROUNDS = 4
# Re-checks of one lease a waiter makes at most (each after the lease's remaining time, so a
# holder renewing it is waited on; `wait_limit_s` bounds them in time as well).
MAX_CHECKS = 1000
MAX_CONNECTIONS = 256

# Takes the lease if free and reads the value, in one step: a value stored by a holder that
# finished just before is seen, and not fetched again. KEYS: lease key, value key; ARGV: token,
# timeout in ms. Returns {1 if taken else 0, the value or false}.
_ACQUIRE = """
local taken = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
return {taken and 1 or 0, redis.call('GET', KEYS[2])}
"""
# Stores the value, publishes it, and deletes the lease if this holder still has it.
# KEYS: value key, lease key; ARGV: encoded entry, time kept in ms, channel, token.
_FINISH = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('PUBLISH', ARGV[3], 'V' .. ARGV[1])
if redis.call('GET', KEYS[2]) == ARGV[4] then
  redis.call('DEL', KEYS[2])
end
return 1
"""
# Publishes a failure and deletes the lease if this holder still has it.
# KEYS: lease key; ARGV: channel, token, message.
_ABANDON = """
redis.call('PUBLISH', ARGV[1], 'F' .. ARGV[3])
if redis.call('GET', KEYS[1]) == ARGV[2] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
# Extends the lease if this holder still has it. KEYS: lease key; ARGV: token, timeout in ms.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


class SharedUnavailable(Exception):
    """Redis did not answer in time or refused: the caller takes its local path."""


class LeaseFailed(Exception):
    """The lease holder's fetch failed; its notice (the error's text) is the message."""


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


class SharedMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.leases = Counter(
            CACHE_LEASES,
            "Leases this replica took (it fetched for every replica).",
            registry=registry,
        )
        self.waits = Counter(
            CACHE_LEASE_WAITS,
            "Waits on a lease another replica held, by how they ended (value, failed, expired).",
            ["result"],
            registry=registry,
        )
        self.wait_seconds = Histogram(
            CACHE_LEASE_WAIT_SECONDS,
            "Time waited on another replica's lease.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.waiting = Gauge(
            CACHE_LEASE_WAITING,
            "Flights of this replica waiting now on a lease another replica holds.",
            registry=registry,
        )
        self.takeovers = Counter(
            CACHE_LEASE_TAKEOVERS,
            "Leases taken after the previous holder's lease ran out unpublished (it died).",
            registry=registry,
        )
        self.fallbacks = Counter(
            CACHE_SHARED_FALLBACKS,
            "Redis calls that failed or timed out, by operation; each sent the replica down its "
            "local path.",
            ["op"],
            registry=registry,
        )


class Notifier:
    """Every subscription of this replica on one pub/sub connection, read by one task.

    `listen(channel)` subscribes (if no one here listens to it yet), returns once Redis has
    confirmed the subscription, and yields a future that gets the channel's next publication.
    A broken connection fails every listener's future at once; the next `listen` opens a new one.
    """

    def __init__(self, client: Redis, timeout_s: float) -> None:
        self.client = client
        self.timeout_s = timeout_s
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._listeners: dict[str, list[asyncio.Future[bytes]]] = {}
        self._confirmed: dict[str, asyncio.Future[None]] = {}

    @contextlib.asynccontextmanager
    async def listen(self, channel: str) -> AsyncIterator[asyncio.Future[bytes]]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        self._listeners.setdefault(channel, []).append(future)
        try:
            pubsub = await self._open()
            confirmed = self._confirmed.get(channel)
            if confirmed is None:
                confirmed = self._confirmed[channel] = loop.create_future()
                await asyncio.wait_for(pubsub.subscribe(channel), self.timeout_s)
            await asyncio.wait_for(asyncio.shield(confirmed), self.timeout_s)
            yield future
        finally:
            listeners = self._listeners.get(channel, [])
            listeners.remove(future)
            if not listeners:
                self._listeners.pop(channel, None)
                self._confirmed.pop(channel, None)
                if self._pubsub is not None:
                    with contextlib.suppress(RedisError, TimeoutError, OSError):
                        await asyncio.wait_for(self._pubsub.unsubscribe(channel), self.timeout_s)

    async def _open(self) -> PubSub:
        if self._pubsub is None:
            pubsub = self.client.pubsub()
            try:
                await asyncio.wait_for(pubsub.connect(), self.timeout_s)  # type: ignore[no-untyped-call]
            except BaseException:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
                raise
            self._pubsub = pubsub
            self._reader = asyncio.get_running_loop().create_task(self._read(pubsub))
        return self._pubsub

    async def _read(self, pubsub: PubSub) -> None:
        try:
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is not None:
                    self._dispatch(message)
        except (RedisError, OSError, RuntimeError) as exc:
            self._fail(pubsub, exc)

    def _dispatch(self, message: dict[str, Any]) -> None:
        channel = message["channel"]
        name = channel.decode() if isinstance(channel, bytes) else str(channel)
        if message["type"] == "subscribe":
            confirmed = self._confirmed.get(name)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)
        elif message["type"] == "message":
            for future in self._listeners.get(name, []):
                if not future.done():
                    future.set_result(message["data"])

    def _fail(self, pubsub: PubSub, exc: BaseException) -> None:
        """The connection broke: every listener and pending subscription learns it now."""
        if self._pubsub is pubsub:
            self._pubsub = None
            self._reader = None
        error = SharedUnavailable(f"redis pub/sub: {type(exc).__name__}: {exc}")
        pending: list[asyncio.Future[Any]] = [*self._confirmed.values()]
        for futures in self._listeners.values():
            pending += futures
        for future in pending:
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved: a listener that left needs no warning
        self._confirmed.clear()
        asyncio.get_running_loop().create_task(pubsub.aclose())  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        self._pubsub = self._reader = None


Fetch = Callable[[], Awaitable[tuple[str, int]]]


class SharedStore:
    """Values and leases in Redis for every replica of the cache (see the module docstring)."""

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
        self.lease_timeout_s = lease_timeout_s
        self.timeout_s = timeout_s
        self.wait_limit_s = wait_limit_s
        self.clock = clock
        self.metrics = SharedMetrics(registry)
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
        self._acquire = self.client.register_script(_ACQUIRE)
        self._finish = self.client.register_script(_FINISH)
        self._abandon = self.client.register_script(_ABANDON)
        self._renew = self.client.register_script(_RENEW)

    @staticmethod
    def value_key(key: str) -> str:
        return f"{NAMESPACE}:v:{key}"

    @staticmethod
    def lease_key(key: str) -> str:
        return f"{NAMESPACE}:lease:{key}"

    @staticmethod
    def channel(key: str) -> str:
        return f"{NAMESPACE}:ch:{key}"

    async def _call(self, op: str, call: Awaitable[Any]) -> Any:
        """One Redis call within the timeout; SharedUnavailable (and counted) otherwise."""
        try:
            return await asyncio.wait_for(call, self.timeout_s)
        except (RedisError, TimeoutError, OSError) as exc:
            self.metrics.fallbacks.labels(op).inc()
            raise SharedUnavailable(f"redis {op}: {type(exc).__name__}: {exc}") from exc

    async def get(self, key: str) -> Entry | None:
        """The entry Redis keeps for `key` (fresh or within the kept window), or None."""
        raw = await self._call("get", self.client.get(self.value_key(key)))
        return None if raw is None else decode(raw.decode())

    def fresh(self, entry: Entry | None) -> bool:
        return entry is not None and entry.expires_at > self.clock()

    def _entry(self, value: str, version: int, delta_s: float, ttl_s: float | None) -> Entry:
        return Entry(
            value, version, self.clock() + (self.ttl_s if ttl_s is None else ttl_s), delta_s
        )

    def _kept_ms(self, entry: Entry) -> int:
        """Redis's PX for `entry`: until its expiry plus the stale window."""
        return max(1, round((entry.expires_at - self.clock() + self.keep_s) * 1000))

    async def put(
        self, key: str, value: str, version: int, *, delta_s: float, ttl_s: float | None = None
    ) -> Entry:
        """Stores a value fetched without a lease (the local path); best effort."""
        entry = self._entry(value, version, delta_s, ttl_s)
        with contextlib.suppress(SharedUnavailable):
            await self._call(
                "put", self.client.set(self.value_key(key), encode(entry), px=self._kept_ms(entry))
            )
        return entry

    async def expire(self, keys: Iterable[str]) -> int:
        names = [self.value_key(k) for k in keys]
        return int(await self._call("expire", self.client.delete(*names))) if names else 0

    async def expire_all(self) -> int:
        """Drops every value of the lab in this Redis database (SCAN, bounded batches)."""
        dropped = 0
        cursor = 0
        while True:
            cursor, names = await self._call(
                "expire",
                self.client.scan(cursor, match=f"{NAMESPACE}:v:*", count=1000),
            )
            if names:
                dropped += int(await self._call("expire", self.client.delete(*names)))
            if cursor == 0:
                return dropped

    async def fill(self, key: str, fetch: Fetch, ttl_s: float | None = None) -> tuple[Entry, bool]:
        """The key's value after a miss: fetched under the lease, or published by the replica
        that holds it. Returns (entry, fetched here). LeaseFailed when the holder's fetch
        failed; SharedUnavailable when Redis failed (the caller takes its local path); the
        fetch's own exception when this replica's fetch failed."""
        expired = False
        timeout_ms = max(1, round(self.lease_timeout_s * 1000))
        for _ in range(MAX_ROUNDS):
            token = secrets.token_hex(8)
            taken, raw = await self._call(
                "lease",
                self._acquire(
                    keys=[self.lease_key(key), self.value_key(key)], args=[token, timeout_ms]
                ),
            )
            found = None if raw is None else decode(raw.decode())
            if taken:
                if found is not None and self.fresh(found):
                    # Filled by a holder that finished just before: hand the lease back.
                    await self._publish(key, token, found)
                    return found, False
                self.metrics.leases.inc()
                if expired:
                    self.metrics.takeovers.inc()
                return await self._hold(key, token, fetch, ttl_s), True
            if found is not None and self.fresh(found):
                return found, False
            entry, expired = await self._wait(key)
            if entry is not None:
                return entry, False
        raise SharedUnavailable(f"no lease on {key!r} in {MAX_ROUNDS} rounds")

    async def _wait(self, key: str) -> tuple[Entry | None, bool]:
        """Waits on another replica's lease: (its value, False), or (None, True) when the lease
        ran out unpublished, or (None, False) when it was gone before the wait began. A lease
        its holder renewed is waited on again, `wait_limit_s` in all."""
        started = time.perf_counter()
        self.metrics.waiting.inc()
        try:
            async with self.notifier.listen(self.channel(key)) as published:
                for check in range(MAX_CHECKS):
                    entry, left_ms = await self._peek(key)
                    if entry is not None:
                        self.metrics.waits.labels("value").inc()
                        return entry, False
                    if left_ms < 0:
                        if check == 0:
                            return None, False
                        self.metrics.waits.labels("expired").inc()
                        return None, True
                    left_s = self.wait_limit_s - (time.perf_counter() - started)
                    if left_s <= 0:
                        break
                    with contextlib.suppress(TimeoutError):
                        message = await asyncio.wait_for(
                            asyncio.shield(published), min(left_ms / 1000, left_s)
                        )
                        return self._published(message), False
        except SharedUnavailable:
            self.metrics.fallbacks.labels("wait").inc()
            raise
        except (RedisError, TimeoutError, OSError) as exc:
            self.metrics.fallbacks.labels("wait").inc()
            raise SharedUnavailable(f"redis wait: {type(exc).__name__}: {exc}") from exc
        finally:
            self.metrics.waiting.dec()
            self.metrics.wait_seconds.observe(time.perf_counter() - started)
        self.metrics.waits.labels("limit").inc()
        raise SharedUnavailable(f"waited {self.wait_limit_s:g}s on the lease of {key!r}")

    async def _peek(self, key: str) -> tuple[Entry | None, int]:
        """The key's fresh entry (or None) and its lease's remaining ms (< 0: no lease), in one
        round trip."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self.value_key(key))
        pipe.pttl(self.lease_key(key))
        raw, left_ms = await self._call("wait", pipe.execute())
        entry = None if raw is None else decode(raw.decode())
        return (entry if self.fresh(entry) else None), int(left_ms)

    def _published(self, message: bytes) -> Entry:
        text = message.decode()
        if text.startswith("F"):
            self.metrics.waits.labels("failed").inc()
            raise LeaseFailed(text[1:])
        self.metrics.waits.labels("value").inc()
        return decode(text[1:])

    async def _hold(self, key: str, token: str, fetch: Fetch, ttl_s: float | None) -> Entry:
        """Fetches under the lease, renewing it, then publishes the value or the failure."""
        renewer = asyncio.get_running_loop().create_task(self._keep(key, token))
        started = time.perf_counter()
        try:
            value, version = await fetch()
        except Exception as exc:
            renewer.cancel()
            with contextlib.suppress(SharedUnavailable):
                await self._call(
                    "release",
                    self._abandon(
                        keys=[self.lease_key(key)],
                        args=[self.channel(key), token, f"{type(exc).__name__}: {exc}"[:500]],
                    ),
                )
            raise
        renewer.cancel()
        entry = self._entry(value, version, time.perf_counter() - started, ttl_s)
        await self._publish(key, token, entry)
        return entry

    async def _publish(self, key: str, token: str, entry: Entry) -> None:
        """Stores `entry`, publishes it to the waiters and ends the lease `token` (best effort:
        a waiter that misses it re-checks when the lease runs out)."""
        with contextlib.suppress(SharedUnavailable):
            await self._call(
                "release",
                self._finish(
                    keys=[self.value_key(key), self.lease_key(key)],
                    args=[encode(entry), self._kept_ms(entry), self.channel(key), token],
                ),
            )

    async def _keep(self, key: str, token: str) -> None:
        """Renews the lease every third of its timeout while the fetch runs; stops when the
        lease is no longer this holder's."""
        period = self.lease_timeout_s / 3
        timeout_ms = max(1, round(self.lease_timeout_s * 1000))
        while True:
            await asyncio.sleep(period)
            with contextlib.suppress(SharedUnavailable):
                renewed = await self._call(
                    "renew", self._renew(keys=[self.lease_key(key)], args=[token, timeout_ms])
                )
                if not renewed:
                    return

    async def close(self) -> None:
        await self.notifier.close()
        await self.client.aclose(close_connection_pool=True)
