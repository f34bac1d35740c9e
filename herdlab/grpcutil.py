"""gRPC plumbing shared by the lab's servers and clients.

Server side: how a lab server is built, what it advertises (grpc.health.v1 and reflection) and how
it stops (SIGTERM/SIGINT: health turns NOT_SERVING, new calls are refused, in-flight calls get
`grace_s` to finish, exit 0).

Client side: the channel options that keep measurements honest. gRPC's retries are off, so only
the lab's tenacity policies retry, except on a channel given a `service_config` (the grpc-native
policy, `herdlab.retry`): that channel alone turns gRPC's retries on. Each channel may get its own
TCP connection (`local_pool`), so M channels are M connections and M reconnects.

Malformed requests: bytes that do not parse as the method's request message (corrupt wire
format, a string field that is not UTF-8, which no Python client can send but any other can) are
answered INVALID_ARGUMENT naming the problem, like every other bad value; gRPC's own answer is
UNKNOWN.

Burst shedding: grpc core drops calls past `grpc.server.max_pending_requests` (default 1000) with
CANCELLED before any handler sees them. The lab raises that limit so a 10,000-client herd reaches
the handlers, where the services apply their own, visible capacity rules.

Calls waiting to be taken up: grpc.aio's serving loop takes one call at a time from grpc core, a
turn of the event loop each. When the loop is busy (a retry storm's thousands of callbacks) calls
wait in core, unseen by the service, and core cancels a call that waited longer than
`grpc.server_max_unrequested_time_in_server` (default 30 s) with CANCELLED: in a 10,000-key storm
by hand about half the herd got CANCELLED that no client asked for, and the cache counted none of
them. The lab lifts that bound to an hour (the longest deadline it lets a client give), so a
waiting call ends with its client's own deadline (DEADLINE_EXCEEDED) or is answered by the
service; `ServerCalls` exports how many calls core holds that the service has not taken up.

Connections: `ServerConnections` exports the connections the process's servers hold and have
accepted, and TLS handshakes completed, from channelz. `serve` raises the process's open-files
limit to its hard limit (`herdlab.limits`: each connection is a file) and logs both with
`listening`.

Registered methods: grpc core matches a registered method's path itself, and grpc.aio keeps one
task waiting for each registered method's next call, plus one for all other calls. Its serving
loop hands each call it receives to `asyncio.wait` over all of those tasks, so every registered
method adds callbacks to every request the server answers. With all of the cache's services
registered (data plane, admin, chaos log, health, reflection: 11 methods), a hit made 73 Python
and 103 C calls on the event loop; with only its data plane's 2, 46 and 49 (the bare server, 2
methods: 36 and 41; counted with `sys.setprofile`, grpcio 1.85). So only a data-plane
service (`Service.registered`) registers its methods; admin services, health and reflection are
found through their generic handlers, a dictionary lookup per call.

TLS: a server given a certificate and its key (`ServerTls`) serves its one port over TLS, health,
reflection and admin included (admin calls still carry their token). A client given a CA file
(`aio_channel`, `sync_channel`) verifies the server against it; without one it connects in
plaintext, the lab's default. The controller's clients take theirs from `HERDLAB_TLS_CA`
(`env_tls_ca`); the cache's channel to the DB has its own flag.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from herdlab import channelz, limits, logs
from herdlab.auth import is_admin_method, require_token
from herdlab.metrics import (
    SERVER_CALLS,
    SERVER_CALLS_WAITING,
    SERVER_CONNECTIONS_ACCEPTED,
    SERVER_CONNECTIONS_OPEN,
    SERVER_TLS_HANDSHAKES,
    TCP_LISTEN_DROPS,
    TCP_LISTEN_OVERFLOWS,
)

MAX_PENDING_REQUESTS = 100_000
# How long grpc core may hold a call the service has not taken up before cancelling it.
MAX_UNREQUESTED_S = 3600
# The CA every lab client verifies the services against when set (a PEM file): TLS on every link.
TLS_CA_ENV = "HERDLAB_TLS_CA"

# What a servicer method receives; the lab's servicers take and return protobuf messages.
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

SERVER_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.server.max_pending_requests", MAX_PENDING_REQUESTS),
    ("grpc.server.max_pending_requests_hard_limit", MAX_PENDING_REQUESTS),
    ("grpc.server_max_unrequested_time_in_server", MAX_UNREQUESTED_S),
    ("grpc.so_reuseport", 0),
]


@dataclass(frozen=True, kw_only=True)
class Reconnect:
    """A channel's connection backoff, in gRPC's terms (doc/connection-backoff.md): the first
    backoff, the largest, and the minimum time a connection attempt is given before it is
    abandoned. Defaults are gRPC's own: 1 s, 120 s, 20 s."""

    initial_backoff_ms: int = 1000
    max_backoff_ms: int = 120_000
    # Python reaches this through `grpc.min_reconnect_backoff_ms`, which gRPC core reads as the
    # minimum connect timeout, not as a floor on the backoff.
    min_connect_timeout_ms: int = 20_000


@dataclass(frozen=True, kw_only=True)
class Keepalive:
    """A client channel's keepalive (gRPC doc/keepalive.md, gRFC A8): after `time_ms` without
    activity the transport sends an HTTP/2 PING and closes the connection if no ACK comes within
    `timeout_ms`; calls on it fail UNAVAILABLE and the channel reconnects. Without it a
    half-open connection (a partition, a hung host) is noticed only by each call's deadline and
    the channel stays READY. `without_calls` pings an idle channel too. gRPC core also stops
    after 2 pings with no data sent (`grpc.http2.max_pings_without_data`); that cap is lifted,
    or an idle channel would stop probing. Servers must allow the rate (`PingPolicy`).

    Measured with grpcio 1.85 through the lab's partition: `grpc.keepalive_timeout_ms` alone
    does not end a connection whose pings go unanswered; core waits for the ping's ACK as long
    as `grpc.http2.ping_timeout_ms` (default 1 minute). Both are set to `timeout_ms`."""

    time_ms: int
    timeout_ms: int = 20_000
    without_calls: bool = True

    def options(self) -> list[tuple[str, Any]]:
        return [
            ("grpc.keepalive_time_ms", self.time_ms),
            ("grpc.keepalive_timeout_ms", self.timeout_ms),
            ("grpc.http2.ping_timeout_ms", self.timeout_ms),
            ("grpc.keepalive_permit_without_calls", int(self.without_calls)),
            ("grpc.http2.max_pings_without_data", 0),
        ]


@dataclass(frozen=True, kw_only=True)
class PingPolicy:
    """What a server accepts of its clients' pings. A ping sooner than `min_interval_ms` after
    the previous one (with no data in between) is a strike; past `max_strikes` the server sends
    GOAWAY "too_many_pings" and closes the connection. gRPC's defaults (5 minutes, 2 strikes, no
    pings without calls) answer a 1 s keepalive with GOAWAY; the lab's defaults accept pings
    every 500 ms, with or without calls."""

    min_interval_ms: int = 500
    max_strikes: int = 2
    permit_without_calls: bool = True

    def options(self) -> list[tuple[str, Any]]:
        return [
            # The C name is GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS; the string
            # gRPC core reads is this one (a key it does not know is silently ignored).
            ("grpc.http2.min_ping_interval_without_data_ms", self.min_interval_ms),
            ("grpc.http2.max_ping_strikes", self.max_strikes),
            ("grpc.keepalive_permit_without_calls", int(self.permit_without_calls)),
        ]


@dataclass(frozen=True, kw_only=True)
class MaxAge:
    """How long a server keeps a connection (gRFC A9): `age_ms` after it was opened the server
    sends GOAWAY, and `grace_ms` later closes it even with calls still running (None: gRPC's
    default, no limit on either). gRPC core draws each connection's age itself, uniformly within
    +-10% of `age_ms` (`kMaxConnectionAgeJitter`, src/core/ext/filters/channel_idle/), so
    connections opened together are not all closed together; the grace is not jittered."""

    age_ms: int | None = None
    grace_ms: int | None = None

    def options(self) -> list[tuple[str, Any]]:
        found: list[tuple[str, Any]] = []
        if self.age_ms is not None:
            found.append(("grpc.max_connection_age_ms", self.age_ms))
        if self.grace_ms is not None:
            found.append(("grpc.max_connection_age_grace_ms", self.grace_ms))
        return found


def channel_options(
    *,
    local_pool: bool = False,
    reconnect: Reconnect | None = None,
    service_config: str | None = None,
    keepalive: Keepalive | None = None,
    health_check: bool = False,
) -> list[tuple[str, Any]]:
    """Options for a lab client channel. `service_config` (JSON, from
    `RetryPolicy.grpc_service_config()`) is set on this channel with `grpc.enable_retries` 1;
    without it gRPC's retries stay off.

    `health_check`: the channel balances its target's addresses with `round_robin` and sends
    calls only to those whose grpc.health.v1 Watch (service "") says SERVING (gRPC's client-side
    health checking, gRFC A17), added to the service config without turning retries on. A
    server that stops answering (SIGSTOP) sends no new status: its connection is closed, and the
    address skipped, only by a keepalive ping left without ACK."""
    options: list[tuple[str, Any]] = [
        ("grpc.enable_retries", 0 if service_config is None else 1),
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ]
    config: dict[str, Any] = {} if service_config is None else json.loads(service_config)
    if health_check:
        config["loadBalancingConfig"] = [{"round_robin": {}}]
        config["healthCheckConfig"] = {"serviceName": ""}
    if service_config is not None or health_check:
        options.append(("grpc.service_config", json.dumps(config)))
    if local_pool:
        options.append(("grpc.use_local_subchannel_pool", 1))
    if reconnect is not None:
        options += [
            ("grpc.initial_reconnect_backoff_ms", reconnect.initial_backoff_ms),
            ("grpc.min_reconnect_backoff_ms", reconnect.min_connect_timeout_ms),
            ("grpc.max_reconnect_backoff_ms", reconnect.max_backoff_ms),
        ]
    if keepalive is not None:
        options += keepalive.options()
    return options


def env_tls_ca() -> str | None:
    """The CA file `HERDLAB_TLS_CA` names, or None (plaintext)."""
    return os.environ.get(TLS_CA_ENV) or None


def aio_channel(
    target: str,
    options: Sequence[tuple[str, Any]],
    ca: str | Path | None,
    interceptors: Sequence[grpc.aio.ClientInterceptor] | None = None,
) -> grpc.aio.Channel:
    """A grpc.aio channel to `target`: TLS verifying the server against the CA file `ca`, or
    plaintext when `ca` is None; with `interceptors` on every call (`herdlab.client`). OSError
    when the file cannot be read."""
    if ca is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    credentials = grpc.ssl_channel_credentials(root_certificates=Path(ca).read_bytes())
    return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)


def sync_channel(
    target: str, options: Sequence[tuple[str, Any]], ca: str | Path | None
) -> grpc.Channel:
    """`aio_channel`'s blocking twin, for code outside any event loop."""
    if ca is None:
        return grpc.insecure_channel(target, options=options)
    credentials = grpc.ssl_channel_credentials(root_certificates=Path(ca).read_bytes())
    return grpc.secure_channel(target, credentials, options=options)


@dataclass(frozen=True)
class ServerTls:
    """A server's certificate (PEM, the chain from the leaf up) and its private key's files."""

    cert: Path
    key: Path

    def credentials(self) -> grpc.ServerCredentials:
        """OSError when a file cannot be read."""
        return grpc.ssl_server_credentials([(self.key.read_bytes(), self.cert.read_bytes())])


@dataclass(frozen=True)
class _Malformed:
    """What a request that did not parse is handed to its method as, with the parser's reason."""

    reason: str


@dataclass(frozen=True)
class Service:
    """One servicer to mount and the proto service it implements (every method unary-unary).

    A servicer's method is an `async def`, or a plain method that returns its answer, or the
    awaitable of it when there is work to wait for: a hot path answered at once then costs
    one coroutine (the handler's), not two."""

    servicer: object
    descriptor: ServiceDescriptor
    # A data plane: its methods are registered with grpc core (see the module); the rest are
    # served by their generic handler only.
    registered: bool = False

    @property
    def name(self) -> str:
        return str(self.descriptor.full_name)

    def handlers(self, admin_token: str | None) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
        """The method handlers, built once: a request that does not parse is answered
        INVALID_ARGUMENT, and with `admin_token` an admin method checks it before anything else.
        Built here rather than by interceptors, which grpc runs on every call of every method."""
        token = admin_token.encode() if admin_token else None
        handlers = {}
        for method in self.descriptor.methods:
            behavior = getattr(self.servicer, method.name)
            request = message_factory.GetMessageClass(method.input_type)
            response = message_factory.GetMessageClass(method.output_type)
            needs = token if is_admin_method(f"/{self.name}/{method.name}") else None
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _checked(behavior, needs),
                request_deserializer=_lenient(request.FromString),
                response_serializer=response.SerializeToString,
            )
        return handlers

    def mount(self, server: grpc.aio.Server, admin_token: str | None = None) -> None:
        """Adds the service's handlers to `server` (not started yet)."""
        handlers = self.handlers(admin_token)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(self.name, handlers),)
        )
        if self.registered:
            # grpc-stubs predates registered methods.
            server.add_registered_method_handlers(self.name, handlers)  # type: ignore[attr-defined]


class _GenericOnly:
    """A server as generated `add_*Servicer_to_server` functions see it: they add generic
    handlers and register every method; this adds the handlers and registers nothing (see the
    module: a registered method costs every call of the server)."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(
        self, handlers: Sequence[grpc.GenericRpcHandler[Any, Any]]
    ) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, name: str, handlers: Mapping[str, Any]) -> None:
        """Registers nothing: the generic handler added with these finds them."""


def _lenient(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(raw: bytes) -> Any:
        try:
            return parse(raw)
        except DecodeError as exc:
            return _Malformed(str(exc))

    return deserialize


class _Active:
    """Calls this process's `Service` handlers are running. Changed only on the event loop's
    thread; read whole (an int) by the metrics thread."""

    count = 0


def _checked(
    behavior: Callable[[Any, Context], Message | Awaitable[Message]], token: bytes | None
) -> Callable[[Any, Context], Awaitable[Message]]:
    async def call(request: Any, context: Context) -> Message:
        _Active.count += 1
        try:
            if token is not None:
                await require_token(context, token)
            if type(request) is _Malformed:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"malformed request: {request.reason}"
                )
            answer = behavior(request, context)
            return answer if isinstance(answer, Message) else await answer
        finally:
            _Active.count -= 1

    return call


class ServerCalls(Collector):
    """gRPC core's count of this process's server calls (channelz: started, succeeded, failed),
    and how many calls core holds that the service's code has not taken up yet: calls in
    progress in core less those a `Service` handler is running (health and reflection calls
    end at once and do not count for long). A call that waits there is invisible to every
    other metric of the service; this is where it shows (see the module: calls waiting to be
    taken up)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        registry.register(self)

    def collect(self) -> Iterator[Metric]:
        calls = channelz.server_calls()
        counted = CounterMetricFamily(
            SERVER_CALLS,
            "Calls gRPC core saw on this process's servers, by stage.",
            labels=["stage"],
        )
        for stage in ("started", "succeeded", "failed"):
            counted.add_metric([stage], calls[stage])
        yield counted
        in_core = calls["started"] - calls["succeeded"] - calls["failed"]
        yield GaugeMetricFamily(
            SERVER_CALLS_WAITING,
            "Calls gRPC core holds that the service has not taken up yet.",
            value=max(0, in_core - _Active.count),
        )


class ServerConnections(Collector):
    """The connections this process's servers hold, from gRPC core (channelz): open now,
    accepted and TLS handshakes completed since start (counters), and the kernel's accept-queue
    drops. A connection is counted when a scrape first sees it, so one that opened and closed
    between two scrapes is missed; gRPC core lists a connection once its handshake has
    completed, and one over TLS carries its security, which is how a handshake is counted.
    A failed handshake never becomes a channelz socket and is not visible from Python: the
    kernel's `ListenOverflows`/`ListenDrops` (every listener of the host's network namespace)
    are what can be counted of connections refused before that."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._lock = threading.Lock()  # scrapes may overlap (one thread per request)
        self._last_id = 0
        self._accepted = 0
        self._handshakes = 0
        registry.register(self)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            ids = channelz.server_socket_ids()
            new = [socket_id for socket_id in ids if socket_id > self._last_id]
            self._accepted += len(new)
            self._handshakes += sum(
                1
                for socket_id in new
                if channelz.socket(socket_id).get("socket", {}).get("security")
            )
            self._last_id = max([self._last_id, *ids])
            accepted, handshakes = self._accepted, self._handshakes
        yield GaugeMetricFamily(
            SERVER_CONNECTIONS_OPEN, "Connections this process's servers hold.", value=len(ids)
        )
        yield CounterMetricFamily(
            SERVER_CONNECTIONS_ACCEPTED,
            "Connections this process's servers accepted (seen by a scrape).",
            value=accepted,
        )
        yield CounterMetricFamily(
            SERVER_TLS_HANDSHAKES,
            "TLS handshakes completed on this process's servers (seen by a scrape).",
            value=handshakes,
        )
        drops = limits.listen_drops()
        for name, key, text in (
            (TCP_LISTEN_OVERFLOWS, "ListenOverflows", "Connections a full accept queue refused"),
            (TCP_LISTEN_DROPS, "ListenDrops", "Connections the kernel's listeners dropped"),
        ):
            if key in drops:
                yield CounterMetricFamily(
                    name, f"{text} (the host's, all listeners).", value=drops[key]
                )


@dataclass(frozen=True)
class LabServer:
    """A lab server built by `build_server`, not started yet: the gRPC server, its health
    servicer, the port it bound and the names of the services it serves."""

    server: grpc.aio.Server
    health: Any  # grpc_health's aio HealthServicer (untyped)
    port: int
    names: tuple[str, ...]

    async def start(self) -> None:
        """Starts serving and reports every service SERVING."""
        await self.server.start()
        for name in ["", *self.names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)


def build_server(
    services: Sequence[Service],
    *,
    host: str,
    port: int,
    maximum_concurrent_rpcs: int | None = None,
    admin_token: str | None = None,
    pings: PingPolicy | None = None,
    max_age: MaxAge | None = None,
    tls: ServerTls | None = None,
) -> LabServer:
    """`services` with health and reflection on one gRPC server bound to `host:port` (0: any
    free port), over TLS with `tls`; see `serve` for the arguments. Only a
    `Service.registered` service registers its methods."""
    server = grpc.aio.server(
        options=[
            *SERVER_OPTIONS,
            *(pings or PingPolicy()).options(),
            *(max_age or MaxAge()).options(),
        ],
        maximum_concurrent_rpcs=maximum_concurrent_rpcs,
    )
    for service in services:
        service.mount(server, admin_token)
    generic_only = _GenericOnly(server)
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, generic_only)
    names = tuple(s.name for s in services)
    # What `reflection.enable_server_reflection` does for an aio server, without registering.
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        reflection.aio.ReflectionServicer(  # type: ignore[attr-defined]
            [
                *names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ]
        ),
        generic_only,
    )
    address = f"{host}:{port}"
    bound = (
        server.add_insecure_port(address)
        if tls is None
        else server.add_secure_port(address, tls.credentials())
    )
    if bound == 0:
        raise OSError(f"could not bind {host}:{port}")
    return LabServer(server, health_servicer, bound, names)


async def serve(
    services: Sequence[Service],
    *,
    host: str,
    port: int,
    grace_s: float,
    maximum_concurrent_rpcs: int | None = None,
    admin_token: str | None = None,
    announce: Mapping[str, Any] | None = None,
    pings: PingPolicy | None = None,
    max_age: MaxAge | None = None,
    tls: ServerTls | None = None,
) -> None:
    """Serves until SIGTERM or SIGINT, then drains for up to `grace_s` and returns. Logs a line
    when it listens (with `announce`: the other addresses and the settings), one when it starts
    draining and one when it has drained (`herdlab.logs`).

    With `admin_token`, admin-plane calls must carry it (`herdlab.auth`); the token is checked
    before the request is looked at. `pings`: how clients' keepalive pings are enforced
    (default: `PingPolicy()`). `max_age`: how long it keeps a connection (default: for ever).
    `tls`: serve over TLS with this certificate.
    """
    lab = build_server(
        services,
        host=host,
        port=port,
        maximum_concurrent_rpcs=maximum_concurrent_rpcs,
        admin_token=admin_token,
        pings=pings,
        max_age=max_age,
        tls=tls,
    )
    soft, hard = limits.raise_open_files()  # every connection is an open file
    await lab.start()
    logs.event(
        "listening",
        grpc=f"{host}:{lab.port}",
        pid=os.getpid(),
        open_files=f"{soft}/{hard}",
        **(announce or {}),
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    started = time.monotonic()
    logs.event("draining", grace=f"{grace_s:g}s")
    await lab.health.enter_graceful_shutdown()
    await lab.server.stop(grace_s)
    logs.event("drained", took=f"{time.monotonic() - started:.3f}s")


def wait_serving(
    target: str,
    timeout_s: float,
    alive: Callable[[], bool] | None = None,
    ca: str | Path | None = None,
) -> bool:
    """True once `target` answers its health check with SERVING; False after `timeout_s`, or as
    soon as `alive()` says the process behind it is gone (bad flags, port taken, crash). Over
    TLS verified against the CA file `ca` when given.

    Blocking (the sync gRPC API): controllers call it outside any event loop.
    """
    return serving_problem(target, timeout_s, alive, ca) is None


def serving_problem(
    target: str,
    timeout_s: float,
    alive: Callable[[], bool] | None = None,
    ca: str | Path | None = None,
) -> str | None:
    """None once `target` answers its health check with SERVING (as `wait_serving`); otherwise
    why not: "exited" when `alive()` said the process is gone, else the last answer or error
    the check saw before `timeout_s` (a service that logged it is listening and still is not
    SERVING says here whether it refused, failed the handshake or did not answer)."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    # A service that is still starting refuses the first connects: with gRPC's default backoff
    # (1 s, then x1.6) the check would see it up to seconds late, so it retries every 50-250 ms.
    # A refused connect fails at once whatever the timeout; one that hangs is waited for as long
    # as the whole wait: a service restarted into a reconnect storm answers handshakes in the
    # order they came, seconds behind, and a check that gave up on each after a second would
    # start again at the back every time. (A SYN the full accept queue dropped is then resent by
    # the kernel, 1, 3, 7 s on, rather than by a new connect each second.)
    fast = Reconnect(
        initial_backoff_ms=50,
        max_backoff_ms=250,
        min_connect_timeout_ms=max(1000, round(timeout_s * 1000)),
    )
    with sync_channel(target, channel_options(reconnect=fast), ca) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while (remaining := deadline - time.monotonic()) > 0:
            if alive is not None and not alive():
                return "exited"
            try:
                reply = stub.Check(
                    health_pb2.HealthCheckRequest(),
                    timeout=min(0.5, remaining),
                    wait_for_ready=True,
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return None
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.RpcError as exc:
                last = f"{exc.code().name}: {' '.join(str(exc.details()).split())}"
            time.sleep(min(0.02, max(0.0, deadline - time.monotonic())))
    return last
