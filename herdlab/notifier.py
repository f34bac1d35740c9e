"""One pub/sub connection per replica, handing each publication to the waiters of its channel.

Contract:
- `listen(channel)` subscribes (if no one here listens to that channel yet), returns once Redis
  has confirmed the subscription, and yields a future that gets the channel's next publication.
  A publication made after the confirmation reaches it; one made before does not, so a listener
  reads what it waits for after `listen` returns (the lease's waiters do: `lease.py`).
- Every subscription of the replica shares the one connection, read by one task: waiting costs
  no connection per key and no polling.
- The last listener of a channel leaving unsubscribes it (best effort, within the timeout).
- A broken connection fails every listener's future and every pending subscription at once
  with `SharedUnavailable` (the lease's error for Redis failing: its waiter falls back), so no
  one waits on a subscription that cannot deliver; the next `listen` opens a new connection.
  Opening and subscribing each wait at most the timeout.

It is the lease's `Subscriptions` (`herdlab.lease`), made and closed by the store that owns the
lease (`cache_service.shared`, `herdlab.lease.RedisLease`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError


class SharedUnavailable(Exception):
    """Redis did not answer in time or refused: the caller takes its local path (the one error
    of the lease, its store and this pub/sub for Redis failing)."""


class Notifier:
    """Every subscription of this replica on one pub/sub connection, read by one task (see the
    module docstring)."""

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
