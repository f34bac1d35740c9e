"""The client-side cures for any `grpc.aio` channel: a retry policy and guards on every call.

    cures = Cures(RetryPolicy("full", max_attempts=4), guards="recommended")
    channel = cures.insecure_channel("127.0.0.1:50051")   # or interceptors=cures.interceptors()
    reply = await StockStub(channel).Check(request, timeout=2.0)

Every unary-unary and unary-stream call of the channel then runs under `herdlab.retry`'s policy
(`RetryPolicy.call`, on tenacity) and `herdlab.guards`' guard set:

- One deadline for all attempts: the caller's `timeout` is the budget of the whole call, every
  attempt and every backoff sleep inside it (each attempt's own deadline is the policy's
  `attempt_timeout_s`, cut to what is left). Without a `timeout` the policy's `max_total_s` is.
- Server pushback (gRFC A6): a failure whose trailing metadata carries `grpc-retry-pushback-ms`
  is retried after exactly that many ms, and not at all when the value is negative or malformed.
- gRPC's own retries would multiply the policy's attempts (each of ours becoming up to 5 of
  gRPC's), so the channels made here switch them off (`grpc.enable_retries` 0, whatever the
  options given say); only a `grpc-native` policy hands the retries to gRPC, with its service
  config on the channel. A channel made elsewhere should use `channel_options`.
- Outcomes as the guards expect them: OK, OVERLOAD (UNAVAILABLE, RESOURCE_EXHAUSTED, an attempt's
  own DEADLINE_EXCEEDED) or IGNORE (anything else), by `RetryPolicy.call`.
- A stream (unary-stream) is retried only before its first message: the first message is awaited
  at most the attempt's deadline; once it has come, the stream is the caller's, and an error after
  it ends the call. For the guards, a stream's attempt ends with its first message. The stream's
  own gRPC deadline is the call's.
- A call the policy gives up on raises `CallFailed`, a `grpc.aio.AioRpcError` carrying the last
  attempt's code, details and metadata, and the attempts made; a call the guards refused (nothing
  sent) the code `rejection_code` gives, as Netflix's concurrency-limits answers a full limit
  locally. An error the policy does not retry (INVALID_ARGUMENT, NOT_FOUND, ...) is raised as
  the server sent it.
- Partitions: by default one guard set serves every method of the channel; `per_method=True`
  gives each method its own (a breaker opened by one slow method does not refuse the others), and
  `methods` gives a method (`/pkg.Service/Method`) or a whole service (`pkg.Service`) its own
  set spec.

The interceptors are grpc's own interface (`grpc.aio.UnaryUnaryClientInterceptor`,
`UnaryStreamClientInterceptor`): no library offers retry policies, guards and pushback together
for grpc.aio, so they are written here on top of the lab's policy and guards.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeAlias, cast

import grpc

from herdlab.guards import GuardRejected, GuardSet, parse_guard_set
from herdlab.retry import RetryExhausted, RetryPolicy

# What a continuation hands back: grpc.aio's call objects (untyped in grpc-stubs' terms).
Continuation: TypeAlias = Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]]
# What a stream's `read()` returns at its end (missing from grpc-stubs).
_EOF: Any = getattr(grpc.aio, "EOF")  # noqa: B009
# At most this many partitions per channel: a method name is the caller's text, so the map of
# per-method guard sets must not grow without bound.
MAX_PARTITIONS = 1000


def rejection_code(rejected: GuardRejected) -> grpc.StatusCode:
    """The code a call the guards refused ends with: an open breaker says the backend is
    unavailable; a wait for the limit that used up the call's budget is its deadline; a spent
    budget, a throttle or a full limit say this client is out of room (RESOURCE_EXHAUSTED)."""
    return {
        "breaker": grpc.StatusCode.UNAVAILABLE,
        "deadline": grpc.StatusCode.DEADLINE_EXCEEDED,
    }.get(rejected.guard, grpc.StatusCode.RESOURCE_EXHAUSTED)


class CallFailed(grpc.aio.AioRpcError):
    """A call the policy gave up on: the last attempt's status, with `attempts` (attempts made,
    refused ones included) and `cause` (the last attempt's `AioRpcError`, or the `GuardRejected`
    that refused it)."""

    def __init__(self, cause: BaseException, attempts: int) -> None:
        initial = trailing = grpc.aio.Metadata()
        if isinstance(cause, grpc.aio.AioRpcError):
            code, details = cause.code(), cause.details() or ""
            pairs: Any = cause.initial_metadata() or ()  # (key, value) pairs at runtime
            initial = grpc.aio.Metadata(*pairs)
            pairs = cause.trailing_metadata() or ()
            trailing = grpc.aio.Metadata(*pairs)
        elif isinstance(cause, GuardRejected):
            code, details = rejection_code(cause), f"refused by guard {cause}"
        else:
            code, details = grpc.StatusCode.UNKNOWN, f"{type(cause).__name__}: {cause}"
        message = f"{details} (after {attempts} attempt(s))"
        super().__init__(code, initial, trailing, message, None)
        self.cause = cause
        self.attempts = attempts


def channel_options(
    policy: RetryPolicy, options: Sequence[tuple[str, Any]] = ()
) -> list[tuple[str, Any]]:
    """`options` for a channel the cures run on: gRPC's retries off (`grpc.enable_retries` 0)
    unless the policy is grpc-native, whose service config it then carries. Any retry or service
    config option in `options` is replaced."""
    config = policy.grpc_service_config()
    ours: list[tuple[str, Any]] = [("grpc.enable_retries", 0 if config is None else 1)]
    if config is not None:
        ours.append(("grpc.service_config", config))
    replaced = {"grpc.enable_retries", "grpc.service_config"}
    return [*(o for o in options if o[0] not in replaced), *ours]


def _method(details: grpc.aio.ClientCallDetails) -> str:
    method = details.method
    return method.decode() if isinstance(method, bytes) else str(method)


def _details(details: grpc.aio.ClientCallDetails, timeout: float | None) -> Any:
    return grpc.aio.ClientCallDetails(
        details.method, timeout, details.metadata, details.credentials, details.wait_for_ready
    )


class Cures:
    """A retry policy and guard sets for every call of a channel (see the module docstring).

    `policy`: a `RetryPolicy` or a policy name (its defaults). `guards`: a guard set spec
    (`herdlab.guards` grammar: `none`, `recommended`, `limit:n=20+breaker`, ...) or a built
    `GuardSet` (partitions are then built from its spec). `on_send(method)`
    runs as each attempt is sent, `on_attempt(method, n, error_or_None)` after it, and
    `on_sleep(method, seconds)` before each backoff sleep. `clock` and `rng` are the guards'.
    """

    def __init__(
        self,
        policy: RetryPolicy | str = "full",
        guards: str | GuardSet = "none",
        *,
        per_method: bool = False,
        methods: Mapping[str, str] | None = None,
        pushback: bool = True,
        on_send: Callable[[str], None] | None = None,
        on_attempt: Callable[[str, int, BaseException | None], None] | None = None,
        on_sleep: Callable[[str, float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy if isinstance(policy, RetryPolicy) else RetryPolicy(name=policy)
        self.spec = guards if isinstance(guards, str) else guards.spec
        self.per_method = per_method
        self.methods = dict(methods or {})
        self.pushback = pushback
        self.on_send = on_send
        self.on_attempt = on_attempt
        self.on_sleep = on_sleep
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        for spec in (self.spec, *self.methods.values()):
            parse_guard_set(spec)  # a bad spec fails here, with its one-line ValueError
        self.guards = self._build(guards) if isinstance(guards, str) else guards
        self._partitions: dict[str, GuardSet] = {}
        self.sent = 0  # attempts sent, every method, every call

    def _build(self, spec: str) -> GuardSet:
        return parse_guard_set(spec, clock=self._clock, rng=self._rng)

    def partition(self, method: str) -> str:
        """The name of the partition `method` (`/pkg.Service/Method`) belongs to: its entry in
        `methods` (the method's, else its service's), the method itself with `per_method`, else
        `""` (the channel's one set)."""
        if method in self.methods:
            return method
        service = method.lstrip("/").rsplit("/", 1)[0]
        if service in self.methods:
            return service
        return method if self.per_method else ""

    def guards_for(self, method: str) -> GuardSet:
        """The guard set `method`'s calls go through."""
        name = self.partition(method)
        if not name:
            return self.guards
        found = self._partitions.get(name)
        if found is None:
            if len(self._partitions) >= MAX_PARTITIONS:
                return self.guards
            found = self._partitions[name] = self._build(self.methods.get(name, self.spec))
        return found

    def partitions(self) -> dict[str, GuardSet]:
        """Every guard set in use by partition name (`""`: the channel's one set)."""
        return {"": self.guards, **self._partitions}

    def interceptors(self) -> list[grpc.aio.ClientInterceptor]:
        """The interceptors to give a `grpc.aio` channel (`interceptors=`)."""
        return [cast(grpc.aio.ClientInterceptor, _UnaryUnary(self)), cast(Any, _UnaryStream(self))]

    def options(self, options: Sequence[tuple[str, Any]] = ()) -> list[tuple[str, Any]]:
        """`channel_options` for this policy."""
        return channel_options(self.policy, options)

    def insecure_channel(
        self, target: str, options: Sequence[tuple[str, Any]] = ()
    ) -> grpc.aio.Channel:
        """A plaintext channel with the cures on every call and gRPC's retries off."""
        return grpc.aio.insecure_channel(
            target, options=self.options(options), interceptors=self.interceptors()
        )

    def secure_channel(
        self,
        target: str,
        credentials: grpc.ChannelCredentials,
        options: Sequence[tuple[str, Any]] = (),
    ) -> grpc.aio.Channel:
        """`insecure_channel` over TLS with `credentials`."""
        return grpc.aio.secure_channel(
            target, credentials, options=self.options(options), interceptors=self.interceptors()
        )

    async def run(
        self,
        method: str,
        timeout_s: float | None,
        attempt: Callable[[float], Awaitable[Any]],
    ) -> Any:
        """`attempt(timeout_s)` under the policy and `method`'s guards within the call's
        `timeout_s`; raises `CallFailed` when the policy gives up, and an error it does not retry
        as it came."""

        async def sent(attempt_timeout_s: float) -> Any:
            self.sent += 1
            if self.on_send is not None:
                self.on_send(method)
            return await attempt(attempt_timeout_s)

        on_attempt = self.on_attempt
        on_sleep = self.on_sleep
        try:
            return await self.policy.call(
                sent,
                guards=self.guards_for(method),
                budget_s=timeout_s,
                pushback=self.pushback,
                on_attempt=(lambda n, e: on_attempt(method, n, e)) if on_attempt else None,
                on_sleep=(lambda s: on_sleep(method, s)) if on_sleep else None,
            )
        except RetryExhausted as exc:
            raise CallFailed(exc.last, exc.attempts) from exc


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    def __init__(self, cures: Cures) -> None:
        self.cures = cures

    async def intercept_unary_unary(
        self,
        continuation: Continuation,
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        async def attempt(timeout_s: float) -> Any:
            call = await continuation(_details(client_call_details, timeout_s), request)
            await call  # raises the attempt's AioRpcError
            return call  # done: awaiting it again gives the reply, its metadata stays readable

        method = _method(client_call_details)
        return await self.cures.run(method, client_call_details.timeout, attempt)


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[type-arg]
    def __init__(self, cures: Cures) -> None:
        self.cures = cures

    async def intercept_unary_stream(  # type: ignore[override]
        self,
        continuation: Continuation,
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        cures = self.cures
        timeout = client_call_details.timeout
        deadline = None if timeout is None else time.monotonic() + timeout

        async def attempt(timeout_s: float) -> tuple[Any, Any]:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            call = await continuation(_details(client_call_details, left), request)
            try:
                async with asyncio.timeout(timeout_s):
                    first = await call.read()
            except TimeoutError:
                call.cancel()
                raise grpc.aio.AioRpcError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    grpc.aio.Metadata(),
                    grpc.aio.Metadata(),
                    f"no first message within {timeout_s:.3g}s",
                    None,
                ) from None
            if first is _EOF:
                code = await call.code()
                if code is not grpc.StatusCode.OK:
                    raise grpc.aio.AioRpcError(
                        code,
                        await call.initial_metadata() or grpc.aio.Metadata(),
                        await call.trailing_metadata() or grpc.aio.Metadata(),
                        await call.details(),
                        None,
                    )
            return call, first

        method = _method(client_call_details)
        call, first = await cures.run(method, timeout, attempt)
        return _rest(call, first)


async def _rest(call: Any, first: Any) -> AsyncIterator[Any]:
    """The stream from its first message on; an error after it is the caller's."""
    message = first
    while message is not _EOF:
        yield message
        message = await call.read()
