"""`LoadShedder`: a `grpc.aio` server interceptor that keeps a server within its capacity.

    server = grpc.aio.server(interceptors=[LoadShedder(limit=8, queue=32, discipline="codel")])

Every unary-unary and unary-stream call of the server (or of the methods named) takes a slot of
a `Capacity` (`herdlab.server.capacity`, the DB's own model, built on the limiter the `limit`
guard shares, `herdlab.capacity`) before its handler runs, and gives it back when the handler
ends (a stream: when its last message is sent):

- the limit is a number of slots, or adaptive: a limit algorithm of the guards (`"aimd"`,
  `"vegas,max=200"`: the `limit` guard's grammar after its `:`), sampled with each call's time
  (a call whose caller went away mid-way is a drop);
- a call that finds every slot taken waits in a bounded queue served by a discipline
  (`herdlab.queueing`: fifo, codel, lifo); past the queue's bound, or shed by codel, it is
  answered RESOURCE_EXHAUSTED at once, with a pushback hint;
- deadline-aware: a call waits no longer than its own deadline less `min_service_s` (the least a
  call takes), and a call whose time left is shorter than that when its slot comes is dropped
  with DEADLINE_EXCEEDED before the handler runs: no slot is spent on an answer nobody can use;
- the pushback hint is gRFC A6's `grpc-retry-pushback-ms` trailing metadata, which
  `herdlab.client` (and gRPC's own retries) honour: how long the queue ahead would take to drain
  (`pushback_s` when given, else the calls queued and in flight over the limit, times the
  smoothed service time, `min_service_s` until a call was served), jittered by x uniform(0.5,
  1.5) so that the callers refused together do not all come back together.

grpc's `ServerInterceptor` is the extension point; no library offers an adaptive limit with
queue disciplines for grpc.aio servers, so the interceptor is written here around the lab's own
capacity model and limit algorithms.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any, NoReturn, cast

import grpc

from herdlab.guards import parse_guard_set
from herdlab.guards.limit import ConcurrencyLimit
from herdlab.guards.limit_algorithms import LimitAlgorithm
from herdlab.queueing import Discipline, Shed
from herdlab.queueing import discipline as make_discipline
from herdlab.retry import PUSHBACK_KEY
from herdlab.server.capacity import Capacity, Rejected

Context = grpc.aio.ServicerContext[Any, Any]
# A handler's behaviour on an aio server: sync or async, or an async generator for a stream.
Behavior = Callable[[Any, Context], Any]
# The smoothing of the service time the pushback hint is estimated from (an EWMA's weight).
SMOOTHING = 0.1
# Outcomes counted in `LoadShedder.counts`.
OUTCOMES = ("served", "queue_full", "shed", "deadline")


def limit_algorithm(limit: int | str | LimitAlgorithm) -> int | LimitAlgorithm:
    """A number of slots as it is; a text in the `limit` guard's grammar after its `:`
    (`20`: n=20, `aimd`, `vegas,max=200`, `n=8`) as its algorithm. ValueError, one line, for a
    bad text."""
    if not isinstance(limit, str):
        return limit
    text = limit.strip()
    spec = f"limit:n={text}" if text.isdigit() else f"limit:{text}"
    guard = parse_guard_set(spec).guards[0]
    assert isinstance(guard, ConcurrencyLimit)
    return guard.algorithm


class LoadShedder(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """See the module docstring. `methods`: the full method names (`/pkg.Service/Method`) it
    guards (None: every method). `counts` says how calls ended here by outcome."""

    def __init__(
        self,
        limit: int | str | LimitAlgorithm = 20,
        *,
        queue: int = 100,
        discipline: str | Discipline = "fifo",
        min_service_s: float = 0.0,
        pushback: bool = True,
        pushback_s: float | None = None,
        methods: Collection[str] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if queue < 0:
            raise ValueError(f"queue must be >= 0, got {queue}")
        if not min_service_s >= 0:
            raise ValueError(f"min_service_s must be >= 0, got {min_service_s}")
        if pushback_s is not None and not pushback_s >= 0:
            raise ValueError(f"pushback_s must be >= 0, got {pushback_s}")
        chosen = make_discipline(discipline) if isinstance(discipline, str) else discipline
        self.capacity = Capacity(limit_algorithm(limit), queue, chosen)
        self.min_service_s = min_service_s
        self.pushback = pushback
        self.pushback_s = pushback_s
        self.methods = None if methods is None else frozenset(methods)
        self.counts = dict.fromkeys(OUTCOMES, 0)
        self._service_s = 0.0  # smoothed time a served call holds its slot
        self._rng = rng if rng is not None else random.Random()

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None or (
            self.methods is not None and handler_call_details.method not in self.methods
        ):
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(cast(Behavior, handler.unary_unary)),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(cast(Behavior, handler.unary_stream)),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # client-streaming and bidi calls pass unlimited

    def hint_s(self) -> float:
        """The pushback to give a refused call now (before jitter)."""
        if self.pushback_s is not None:
            return self.pushback_s
        capacity = self.capacity
        ahead = capacity.queued + capacity.in_flight
        # Before any call was served, the least a call takes stands for the service time.
        service_s = self._service_s if self._service_s > 0 else self.min_service_s
        return service_s * ahead / max(1, capacity.concurrency)

    async def _refuse(
        self, context: Context, outcome: str, code: grpc.StatusCode, why: str
    ) -> NoReturn:
        self.counts[outcome] += 1
        trailing: tuple[tuple[str, str], ...] = ()
        if self.pushback and code is grpc.StatusCode.RESOURCE_EXHAUSTED:
            hint_ms = round(self.hint_s() * self._rng.uniform(0.5, 1.5) * 1000)
            trailing = ((PUSHBACK_KEY, str(hint_ms)),)
        await context.abort(code, why, trailing_metadata=trailing)

    async def _admit(self, context: Context) -> int:
        """Takes a slot for the call (returns the calls in flight then) or answers it."""
        capacity = self.capacity
        remaining = context.time_remaining()
        if remaining is not None and remaining < self.min_service_s:
            await self._refuse(
                context,
                "deadline",
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"{remaining * 1000:.0f}ms left, a call takes {self.min_service_s * 1000:.0f}ms",
            )
        try:
            if remaining is None:
                waited = await capacity.acquire()
            else:
                async with asyncio.timeout(max(0.0, remaining - self.min_service_s)):
                    waited = await capacity.acquire()
        except Rejected as exc:
            await self._refuse(
                context, "queue_full", grpc.StatusCode.RESOURCE_EXHAUSTED, f"overloaded: {exc}"
            )
        except Shed as exc:
            await self._refuse(
                context, "shed", grpc.StatusCode.RESOURCE_EXHAUSTED, f"overloaded: {exc}"
            )
        except TimeoutError:
            await self._refuse(
                context,
                "deadline",
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"no slot free before the caller's deadline ({capacity.concurrency} slots)",
            )
        left = context.time_remaining()
        if waited and left is not None and left < self.min_service_s:
            capacity.release()
            await self._refuse(
                context,
                "deadline",
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"dropped at dequeue: {left * 1000:.0f}ms left, a call takes "
                f"{self.min_service_s * 1000:.0f}ms",
            )
        return capacity.in_flight

    def _done(self, in_flight: int, started: float, completed: bool, dropped: bool) -> None:
        rtt_s = time.monotonic() - started
        if completed:
            self.counts["served"] += 1
            self._service_s += SMOOTHING * (rtt_s - self._service_s)
        if completed or dropped:
            self.capacity.sample(rtt_s, in_flight, dropped)
        self.capacity.release()

    def _unary(self, behavior: Behavior) -> Callable[[Any, Context], Awaitable[Any]]:
        async def limited(request: Any, context: Context) -> Any:
            in_flight = await self._admit(context)
            started = time.monotonic()
            completed = dropped = False
            try:
                answer = behavior(request, context)
                reply = await answer if inspect.isawaitable(answer) else answer
                completed = True
                return reply
            except BaseException as exc:
                dropped = _caller_gone(exc)
                raise
            finally:
                self._done(in_flight, started, completed, dropped)

        return limited

    def _stream(self, behavior: Behavior) -> Callable[[Any, Context], AsyncIterator[Any]]:
        async def limited(request: Any, context: Context) -> AsyncIterator[Any]:
            in_flight = await self._admit(context)
            started = time.monotonic()
            completed = dropped = False
            try:
                answer = behavior(request, context)
                if hasattr(answer, "__aiter__"):
                    async for message in answer:
                        yield message
                elif inspect.isawaitable(answer):
                    await answer  # a handler that writes with context.write
                completed = True
            except BaseException as exc:
                dropped = _caller_gone(exc)
                raise
            finally:
                self._done(in_flight, started, completed, dropped)

        return limited


def _caller_gone(exc: BaseException) -> bool:
    """The handler was cancelled: its caller's deadline passed or it went away (a drop)."""
    return isinstance(exc, asyncio.CancelledError)
