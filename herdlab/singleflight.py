"""Per-key single-flight on asyncio: concurrent calls for a key cost one call of the function.

    @single_flight(key=lambda sku: sku)
    async def stock(sku: str) -> int: ...

`single_flight` makes any async function single-flight per key: the callers that arrive while a
call for their key runs wait for it and get its value (or its exception). It is the cache's
coalescer (`SingleFlight`, one per decorated function unless `group` is given). Across processes
the Redis lease of the cache's shared store (`herdlab.lease`) can be put behind it with `lease=`:
one call per key across every process sharing the Redis.

Contract of `SingleFlight` (after Go's golang.org/x/sync/singleflight):
- `do(key, fn)` runs `fn()` once per key at a time; callers that arrive while it runs wait for
  it and get `(value, True)`; the caller that started it gets `(value, False)`.
- The fetch belongs to the key, not to the caller that started it: it runs in its own task, and
  a cancelled caller (its deadline passed, its client went away) stops waiting without cancelling
  the fetch for the others. Nobody waiting is not a reason to abandon the fetch either: it
  finishes (bounded by the retry policy) and its result is still stored by `fn`.
- Every waiter gets the same value or the same exception.
- The entry is removed when the fetch ends, before any waiter resumes, so a caller arriving after
  a failure starts a new fetch: nothing failed is remembered. The map is empty when nothing is in
  flight.

Single-threaded by design: `_calls` is touched only from the event loop's thread.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, cast

V = TypeVar("V")
R = TypeVar("R")
P = ParamSpec("P")


@dataclass
class _Call(Generic[V]):
    task: asyncio.Task[V]
    waiters: int = 0


class SingleFlight(Generic[V]):
    def __init__(self) -> None:
        self._calls: dict[str, _Call[V]] = {}
        self.waiters = 0  # callers currently waiting on a fetch someone else started

    def in_flight(self) -> int:
        """Keys with a fetch under way."""
        return len(self._calls)

    def running(self, key: str) -> bool:
        """Whether `key` has a fetch under way."""
        return key in self._calls

    async def do(self, key: str, fn: Callable[[], Awaitable[V]]) -> tuple[V, bool]:
        call = self._calls.get(key)
        shared = call is not None
        if call is None:
            call = _Call(asyncio.get_running_loop().create_task(self._run(key, fn)))
            call.task.add_done_callback(_consume_exception)
            self._calls[key] = call
        else:
            call.waiters += 1
            self.waiters += 1
        try:
            # shield: cancelling this caller must not cancel the fetch the others wait for.
            return await asyncio.shield(call.task), shared
        finally:
            if shared:
                call.waiters -= 1
                self.waiters -= 1

    async def _run(self, key: str, fn: Callable[[], Awaitable[V]]) -> V:
        try:
            return await fn()
        finally:
            # Deleted only if the entry is still this fetch's: a finished fetch never removes a
            # newer one. This runs before the task's result reaches any waiter.
            call = self._calls.get(key)
            if call is not None and call.task is asyncio.current_task():
                del self._calls[key]


def _consume_exception(task: asyncio.Task[V]) -> None:
    """Marks a failed fetch's exception as retrieved when every waiter had gone away, so asyncio
    does not log 'exception was never retrieved' for an error nobody was left to receive."""
    if not task.cancelled():
        task.exception()


class Lease(Protocol[V]):
    """A single-flight across processes (`herdlab.lease.RedisLease`): `run(key, fn)` runs `fn`
    once per key across them and returns its value and whether it ran here."""

    async def run(self, key: str, fn: Callable[[], Awaitable[V]]) -> tuple[V, bool]: ...


def _default_key(*args: Any, **kwargs: Any) -> str:
    return repr((args, sorted(kwargs.items())))


def single_flight(
    key: Callable[..., str] | None = None,
    *,
    group: SingleFlight[Any] | None = None,
    lease: Lease[Any] | None = None,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Makes an async function single-flight per key (see the module docstring).

    `key(*args, **kwargs)` names the call's key (default: the arguments' repr); `group` shares
    one `SingleFlight` between functions (default: one per function, as `fn.flight`); `lease`
    adds the cross-process lease behind the process's own flight, so a process makes one lease
    attempt per key however many of its callers wait.
    """
    name = key if key is not None else _default_key

    def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        flight: SingleFlight[Any] = group if group is not None else SingleFlight()

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            def call() -> Awaitable[R]:
                return fn(*args, **kwargs)

            k = name(*args, **kwargs)
            if lease is None:
                value, _ = await flight.do(k, call)
                return cast(R, value)

            async def shared() -> R:
                result, _ = await lease.run(k, call)
                return cast(R, result)

            value, _ = await flight.do(k, shared)
            return cast(R, value)

        wrapper.flight = flight  # type: ignore[attr-defined]
        return wrapper

    return decorate
