"""Single-flight across processes: one lease per key in Redis, so R replicas make one DB query.

`herdlab.singleflight` makes concurrent calls for a key cost one call inside one process; the
lease does the same across every process that shares a Redis (after Facebook's memcache leases,
NSDI 2013). The process's own single-flight stays in front: a process has one flight per key,
whatever its callers do, and a caller that leaves does not end the flight. The cache's shared
store (`cache_service.shared`) keeps its values under it; `RedisLease` puts it behind any async
function (`herdlab.singleflight.single_flight(lease=...)`).

Contract of `Leases.fill(key, fetch)`, after a miss (`fetch` makes the entry the store keeps):
- `SET herdlab:lease:<key> <token> NX PX <lease timeout>`, and a read of the value in the same
  Lua script (a value stored by a holder that finished a moment before is taken, not fetched
  again): who gets the lease fetches from the DB and gets `(entry, True)`. While its fetch runs
  it renews the lease (compare-and-`PEXPIRE`, every third of the timeout), so a slow DB does not
  hand the key to a second fetcher, but a holder that died (SIGKILL, a pause, a lost network)
  stops renewing and its lease is gone one timeout later.
- The holder ends in one Lua script: it stores the value, publishes it on `herdlab:ch:<key>` and
  deletes the lease if it still holds its token (compare-and-delete). A failed fetch publishes a
  failure notice (the error's text) and deletes the lease the same way; the holder's caller gets
  the fetch's own exception, every waiter `LeaseFailed` with that text.
- Who did not get the lease subscribes to the key's channel (`notifier.py`), then reads the value
  and the lease's remaining time in one round trip (a value stored before the subscription took
  effect is seen by that read, so no publication is missed), and waits for the publication
  without polling, at most the lease's remaining time, and gets `(entry, False)`; then it reads
  both again: a lease its live holder renewed is waited on again (`wait_limit_s` in all, the
  fetch budget plus one lease timeout); a lease found gone whose publication has arrived is
  answered by that publication; a lease that ran out unpublished means its holder is
  gone: the waiter tries the lease again and, taking it, fetches itself (a takeover, counted).
- Bounds: rounds of a flight (`MAX_ROUNDS`: the first try, then a takeover after each holder that
  died or failed to publish), re-checks of one lease (`MAX_CHECKS`) and the time waited
  (`wait_limit_s`); past them `SharedUnavailable`. A caller's own deadline bounds its wait as well.
- Redis failing or slow: every call goes through the store's per-call timeout, which raises
  `SharedUnavailable` (counted by operation); a waiter whose subscription broke stops waiting at
  once and raises it too. The caller then takes its local path (`shared.py`). The holder's
  release and renewals are best effort: a waiter that misses the publication re-checks when the
  lease runs out.

redis-py's `Lock` is not used: it polls for the lock, publishes nothing, and has no expiry unless
one is given.

What the lease needs of the value store is the `Values` interface: the Redis client, the per-call
timeout wrapper, the value's key and its encoding, freshness and lifetime, and the metrics
(`cache_service.shared.SharedStore` and `RedisLease` are the two); of the pub/sub,
`Subscriptions` (`herdlab.notifier.Notifier`). `SharedUnavailable`, Redis failing, is the one
error of all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from redis.asyncio import Redis
from redis.exceptions import RedisError

from herdlab.metrics import (
    CACHE_LEASE_TAKEOVERS,
    CACHE_LEASE_WAIT_SECONDS,
    CACHE_LEASE_WAITING,
    CACHE_LEASE_WAITS,
    CACHE_LEASES,
    CACHE_SHARED_FALLBACKS,
)
from herdlab.notifier import Notifier, SharedUnavailable

__all__ = [
    "NAMESPACE",
    "Held",
    "LeaseFailed",
    "LeaseMetrics",
    "Leases",
    "RedisLease",
    "SharedUnavailable",
]

E = TypeVar("E")
T = TypeVar("T")

# The prefix of every key the cache's shared store keeps in Redis: values, leases, channels.
NAMESPACE = "herdlab"
# Lease rounds a flight makes at most: the first try, then a takeover after each holder that
# died or failed to publish. With the lease timeout this bounds how long a flight can wait.
MAX_ROUNDS = 4
# Re-checks of one lease a waiter makes at most (each after the lease's remaining time, so a
# holder renewing it is waited on; `wait_limit_s` bounds them in time as well).
MAX_CHECKS = 1000

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


class LeaseFailed(Exception):
    """The lease holder's fetch failed; its notice (the error's text) is the message."""


class LeaseMetrics:
    """What the lease counts: leases taken, waits by how they ended and their time, flights
    waiting now, takeovers, and Redis failures by operation (the store's calls included)."""

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


class Values(Protocol[E]):
    """What the lease needs of the value store, whose entries are `E`."""

    client: Redis

    @property
    def metrics(self) -> LeaseMetrics: ...

    def value_key(self, key: str) -> str: ...

    def encode(self, entry: E) -> str: ...

    def decode(self, raw: str) -> E: ...

    def fresh(self, entry: E | None) -> bool: ...

    def kept_ms(self, entry: E) -> int:
        """How long Redis keeps `entry`, in ms."""
        ...

    async def call(self, op: str, call: Awaitable[Any]) -> Any:
        """`call` awaited within the store's per-call timeout; when it fails or times out,
        counted under `op` and raised as SharedUnavailable."""
        ...


class Subscriptions(Protocol):
    """The replica's pub/sub (`notifier.Notifier`): `listen(channel)` returns once subscribed
    and yields a future of the channel's next publication; SharedUnavailable when it broke."""

    def listen(self, channel: str) -> AbstractAsyncContextManager[asyncio.Future[bytes]]: ...


class Leases(Generic[E]):
    """The lease of every key of one replica (see the module docstring); `namespace` prefixes
    the leases' keys and channels."""

    def __init__(
        self,
        values: Values[E],
        notifier: Subscriptions,
        *,
        lease_timeout_s: float,
        wait_limit_s: float,
        namespace: str = NAMESPACE,
    ) -> None:
        self.values = values
        self.namespace = namespace
        self.notifier = notifier
        self.lease_timeout_s = lease_timeout_s
        self.wait_limit_s = wait_limit_s
        self.metrics = values.metrics
        client = values.client
        self._acquire = client.register_script(_ACQUIRE)
        self._finish = client.register_script(_FINISH)
        self._abandon = client.register_script(_ABANDON)
        self._renew = client.register_script(_RENEW)

    def lease_key(self, key: str) -> str:
        return f"{self.namespace}:lease:{key}"

    def channel(self, key: str) -> str:
        return f"{self.namespace}:ch:{key}"

    async def fill(self, key: str, fetch: Callable[[], Awaitable[E]]) -> tuple[E, bool]:
        """The key's value after a miss: fetched under the lease, or published by the replica
        that holds it. Returns (entry, fetched here). LeaseFailed when the holder's fetch
        failed; SharedUnavailable when Redis failed (the caller takes its local path); the
        fetch's own exception when this replica's fetch failed."""
        expired = False
        timeout_ms = max(1, round(self.lease_timeout_s * 1000))
        for _ in range(MAX_ROUNDS):
            token = secrets.token_hex(8)
            taken, raw = await self.values.call(
                "lease",
                self._acquire(
                    keys=[self.lease_key(key), self.values.value_key(key)], args=[token, timeout_ms]
                ),
            )
            found = None if raw is None else self.values.decode(raw.decode())
            if taken:
                if found is not None and self.values.fresh(found):
                    # Filled by a holder that finished just before: hand the lease back.
                    await self._publish(key, token, found)
                    return found, False
                self.metrics.leases.inc()
                if expired:
                    self.metrics.takeovers.inc()
                return await self._hold(key, token, fetch), True
            if found is not None and self.values.fresh(found):
                return found, False
            entry, expired = await self._wait(key)
            if entry is not None:
                return entry, False
        raise SharedUnavailable(f"no lease on {key!r} in {MAX_ROUNDS} rounds")

    async def _wait(self, key: str) -> tuple[E | None, bool]:
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
                        if published.done():
                            # The holder ended between the subscription and the read: its
                            # publication (a failure leaves no value to read) is the answer.
                            return self._published(published.result()), False
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

    async def _peek(self, key: str) -> tuple[E | None, int]:
        """The key's fresh entry (or None) and its lease's remaining ms (< 0: no lease), in one
        round trip."""
        pipe = self.values.client.pipeline(transaction=False)
        pipe.get(self.values.value_key(key))
        pipe.pttl(self.lease_key(key))
        raw, left_ms = await self.values.call("wait", pipe.execute())
        entry = None if raw is None else self.values.decode(raw.decode())
        return (entry if self.values.fresh(entry) else None), int(left_ms)

    def _published(self, message: bytes) -> E:
        text = message.decode()
        if text.startswith("F"):
            self.metrics.waits.labels("failed").inc()
            raise LeaseFailed(text[1:])
        self.metrics.waits.labels("value").inc()
        return self.values.decode(text[1:])

    async def _hold(self, key: str, token: str, fetch: Callable[[], Awaitable[E]]) -> E:
        """Fetches under the lease, renewing it, then publishes the value or the failure."""
        renewer = asyncio.get_running_loop().create_task(self._keep(key, token))
        try:
            entry = await fetch()
        except Exception as exc:
            renewer.cancel()
            with contextlib.suppress(SharedUnavailable):
                await self.values.call(
                    "release",
                    self._abandon(
                        keys=[self.lease_key(key)],
                        args=[self.channel(key), token, f"{type(exc).__name__}: {exc}"[:500]],
                    ),
                )
            raise
        renewer.cancel()
        await self._publish(key, token, entry)
        return entry

    async def _publish(self, key: str, token: str, entry: E) -> None:
        """Stores `entry`, publishes it to the waiters and ends the lease `token` (best effort:
        a waiter that misses it re-checks when the lease runs out)."""
        with contextlib.suppress(SharedUnavailable):
            await self.values.call(
                "release",
                self._finish(
                    keys=[self.values.value_key(key), self.lease_key(key)],
                    args=[
                        self.values.encode(entry),
                        self.values.kept_ms(entry),
                        self.channel(key),
                        token,
                    ],
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
                renewed = await self.values.call(
                    "renew", self._renew(keys=[self.lease_key(key)], args=[token, timeout_ms])
                )
                if not renewed:
                    return


@dataclass(frozen=True)
class Held(Generic[T]):
    """A function's result as `RedisLease` keeps it: the value and when it stops being fresh
    (wall-clock seconds)."""

    value: T
    fresh_until: float


class RedisLease(Generic[T]):
    """The lease behind any async function: `run(key, fn)` runs `fn` once per key across every
    process sharing the Redis, and hands its value to the others (JSON: `fn`'s values must be
    JSON-serialisable). A value is kept `keep_s` after it was made, so a process arriving just
    after the holder finished takes it rather than calling again; every Redis call waits at most
    `timeout_s`, and when Redis fails `run` calls `fn` itself (one call per key per process, as
    without the lease). The lease's metrics go to `registry` (a registry of its own by default).
    """

    def __init__(
        self,
        client: Redis,
        *,
        namespace: str = "herdlab:sf",
        lease_timeout_s: float = 5.0,
        wait_limit_s: float = 30.0,
        keep_s: float = 1.0,
        timeout_s: float = 1.0,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        for label, value in (
            ("lease_timeout_s", lease_timeout_s),
            ("wait_limit_s", wait_limit_s),
            ("keep_s", keep_s),
            ("timeout_s", timeout_s),
        ):
            if not value > 0:
                raise ValueError(f"{label} must be > 0, got {value}")
        self.client = client
        self.namespace = namespace
        self.keep_s = keep_s
        self.timeout_s = timeout_s
        self.clock = clock
        self.metrics = LeaseMetrics(registry if registry is not None else CollectorRegistry())
        self.notifier = Notifier(client, timeout_s)
        self.leases: Leases[Held[T]] = Leases(
            self,
            self.notifier,
            lease_timeout_s=lease_timeout_s,
            wait_limit_s=wait_limit_s,
            namespace=namespace,
        )

    def value_key(self, key: str) -> str:
        return f"{self.namespace}:v:{key}"

    def encode(self, entry: Held[T]) -> str:
        return json.dumps([entry.fresh_until, entry.value])

    def decode(self, raw: str) -> Held[T]:
        fresh_until, value = json.loads(raw)
        return Held(value, float(fresh_until))

    def fresh(self, entry: Held[T] | None) -> bool:
        return entry is not None and entry.fresh_until > self.clock()

    def kept_ms(self, entry: Held[T]) -> int:
        return max(1, round((entry.fresh_until - self.clock()) * 1000))

    async def call(self, op: str, call: Awaitable[Any]) -> Any:
        """One Redis call within the timeout; SharedUnavailable (and counted) otherwise."""
        try:
            return await asyncio.wait_for(call, self.timeout_s)
        except (RedisError, TimeoutError, OSError) as exc:
            self.metrics.fallbacks.labels(op).inc()
            raise SharedUnavailable(f"redis {op}: {type(exc).__name__}: {exc}") from exc

    async def run(self, key: str, fn: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """`fn`'s value for `key` and whether it ran here. The holder's own exception when `fn`
        failed here, `LeaseFailed` when it failed in the process holding the lease."""

        async def held() -> Held[T]:
            return Held(await fn(), self.clock() + self.keep_s)

        try:
            entry, here = await self.leases.fill(key, held)
        except SharedUnavailable:
            return await fn(), True
        return entry.value, here

    async def close(self) -> None:
        await self.notifier.close()
