"""Serving a process's Prometheus metrics.

Each process builds its metrics on its own `CollectorRegistry` (passed in, never the global
one), so tests can create as many services in one interpreter as they like and assert on values.
The endpoint is read-only: prometheus-client's HTTP server answers GET and nothing else.

The lab's metric names are constants here, each spelled once: the services create their
metrics with them, and readers of an exposition (`chaos watch`, the experiments' measures) ask
`sample(NAME)` for the name prometheus-client gives the samples (`_total`, `_bucket`, ...).

Serving adds what every process exports besides its own metrics: the process collector
(`process_cpu_seconds_total`, memory, open file descriptors, start time), the platform collector
(`python_info`) and `herdlab_build_info` (1, labelled with the versions the process runs).

`LoopCounter` and `LoopHistogram` are for a hot path that runs on one thread (a service's event
loop). prometheus-client's metrics take a mutex on every `inc` and `observe` so that any thread
may update them; on the cache's hit path that was the largest part of the lab's own work for a
hit (in-process, 0.44 us an `inc` and 0.89 us an `observe`, of 4.4 us). These two keep plain
numbers that only their writer thread changes; the exposition (in the metrics server's thread)
reads a copy of each row, which the interpreter lock keeps whole. A scrape may see an
observation in its bucket a moment before its amount is in the sum, never the reverse. Their
samples are exactly those of the library's metrics of the same name and labels.
"""

from __future__ import annotations

import platform
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from importlib import metadata
from typing import Generic, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

ChildT = TypeVar("ChildT")

# Every metric the lab exports, by the name it is created with: the one place each name is
# spelled. The services create their metrics with these; a reader of an exposition asks
# `sample(NAME)` for the name its samples carry there.
BUILD = "herdlab_build"
SERVER_CALLS = "herdlab_grpc_server_calls"
SERVER_CALLS_WAITING = "herdlab_grpc_server_calls_waiting"
SERVER_CONNECTIONS_OPEN = "herdlab_grpc_server_connections_open"
SERVER_CONNECTIONS_ACCEPTED = "herdlab_grpc_server_connections_accepted"
SERVER_TLS_HANDSHAKES = "herdlab_grpc_server_tls_handshakes"
TCP_LISTEN_OVERFLOWS = "herdlab_tcp_listen_overflows"
TCP_LISTEN_DROPS = "herdlab_tcp_listen_drops"
CHAOS_ACTIONS = "herdlab_chaos_actions"
GUARD_STATE = "herdlab_guard_state"
GUARD_REJECTED = "herdlab_guard_rejected"
DB_ARRIVALS = "herdlab_db_arrivals"
DB_REQUESTS = "herdlab_db_requests"
DB_DROPPED = "herdlab_db_dropped"
DB_IN_FLIGHT = "herdlab_db_in_flight"
DB_QUEUE_DEPTH = "herdlab_db_queue_depth"
DB_QUEUE_STANDING = "herdlab_db_queue_standing"
DB_SLOT_SECONDS = "herdlab_db_slot_seconds"
DB_LATENCY = "herdlab_db_latency_seconds"
DB_CAPACITY_CONCURRENCY = "herdlab_db_capacity_concurrency"
DB_CAPACITY_QUEUE = "herdlab_db_capacity_queue"
DB_CAPACITY_PER_SECOND = "herdlab_db_capacity_per_second"
DB_QUEUE_DISCIPLINE = "herdlab_db_queue_discipline"
DB_CODEL_TARGET = "herdlab_db_codel_target_seconds"
DB_CODEL_INTERVAL = "herdlab_db_codel_interval_seconds"
DB_LATENCY_BASE = "herdlab_db_latency_base_seconds"
DB_INJECTED_ERROR_RATIO = "herdlab_db_injected_error_ratio"
CACHE_REQUESTS = "herdlab_cache_requests"
CACHE_REQUEST_LATENCY = "herdlab_cache_request_latency_seconds"
CACHE_IN_FLIGHT_KEYS = "herdlab_cache_in_flight_keys"
CACHE_COALESCED_WAITERS = "herdlab_cache_coalesced_waiters"
CACHE_KEYS = "herdlab_cache_keys"
CACHE_EXPIRED_KEYS = "herdlab_cache_expired_keys"
CACHE_COALESCING_ENABLED = "herdlab_cache_coalescing_enabled"
CACHE_REFRESHES = "herdlab_cache_refreshes"
CACHE_STALE_AGE = "herdlab_cache_stale_age_seconds"
CACHE_DB_ATTEMPTS = "herdlab_cache_db_attempts"
CACHE_DB_CHANNEL_ATTEMPTS = "herdlab_cache_db_channel_attempts"
CACHE_RETRY_SLEEP = "herdlab_cache_retry_sleep_seconds"
CACHE_LEASES = "herdlab_cache_leases"
CACHE_LEASE_WAITS = "herdlab_cache_lease_waits"
CACHE_LEASE_WAIT_SECONDS = "herdlab_cache_lease_wait_seconds"
CACHE_LEASE_WAITING = "herdlab_cache_lease_waiting"
CACHE_LEASE_TAKEOVERS = "herdlab_cache_lease_takeovers"
CACHE_SHARED_FALLBACKS = "herdlab_cache_shared_fallbacks"
HERD_REQUESTS = "herdlab_herd_requests"
HERD_ATTEMPTS = "herdlab_herd_attempts"
HERD_REQUEST_LATENCY = "herdlab_herd_request_latency_seconds"

# The names a kind of metric's samples carry in an exposition: prometheus-client adds these
# suffixes to the name a metric is created with (a histogram's first is its buckets').
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "info": ("_info",),
}
KINDS = {
    BUILD: "info",
    SERVER_CALLS: "counter",
    SERVER_CALLS_WAITING: "gauge",
    SERVER_CONNECTIONS_OPEN: "gauge",
    SERVER_CONNECTIONS_ACCEPTED: "counter",
    SERVER_TLS_HANDSHAKES: "counter",
    TCP_LISTEN_OVERFLOWS: "counter",
    TCP_LISTEN_DROPS: "counter",
    CHAOS_ACTIONS: "counter",
    GUARD_STATE: "gauge",
    GUARD_REJECTED: "counter",
    DB_ARRIVALS: "counter",
    DB_REQUESTS: "counter",
    DB_DROPPED: "counter",
    DB_IN_FLIGHT: "gauge",
    DB_QUEUE_DEPTH: "gauge",
    DB_QUEUE_STANDING: "gauge",
    DB_SLOT_SECONDS: "counter",
    DB_LATENCY: "histogram",
    DB_CAPACITY_CONCURRENCY: "gauge",
    DB_CAPACITY_QUEUE: "gauge",
    DB_CAPACITY_PER_SECOND: "gauge",
    DB_QUEUE_DISCIPLINE: "info",
    DB_CODEL_TARGET: "gauge",
    DB_CODEL_INTERVAL: "gauge",
    DB_LATENCY_BASE: "gauge",
    DB_INJECTED_ERROR_RATIO: "gauge",
    CACHE_REQUESTS: "counter",
    CACHE_REQUEST_LATENCY: "histogram",
    CACHE_IN_FLIGHT_KEYS: "gauge",
    CACHE_COALESCED_WAITERS: "gauge",
    CACHE_KEYS: "gauge",
    CACHE_EXPIRED_KEYS: "counter",
    CACHE_COALESCING_ENABLED: "gauge",
    CACHE_REFRESHES: "counter",
    CACHE_STALE_AGE: "histogram",
    CACHE_DB_ATTEMPTS: "counter",
    CACHE_DB_CHANNEL_ATTEMPTS: "counter",
    CACHE_RETRY_SLEEP: "histogram",
    CACHE_LEASES: "counter",
    CACHE_LEASE_WAITS: "counter",
    CACHE_LEASE_WAIT_SECONDS: "histogram",
    CACHE_LEASE_WAITING: "gauge",
    CACHE_LEASE_TAKEOVERS: "counter",
    CACHE_SHARED_FALLBACKS: "counter",
    HERD_REQUESTS: "counter",
    HERD_ATTEMPTS: "counter",
    HERD_REQUEST_LATENCY: "histogram",
}
# The distributions whose versions `herdlab_build_info` carries, by label.
BUILD_PACKAGES = {"version": "herdlab", "grpcio": "grpcio", "protobuf": "protobuf"}


def samples(name: str) -> tuple[str, ...]:
    """Every name `name`'s samples carry in an exposition."""
    return tuple(name + suffix for suffix in SUFFIXES[KINDS[name]])


def sample(name: str, suffix: str = "") -> str:
    """The name `name`'s samples carry in an exposition: a counter's `<name>_total`, a gauge's
    own name, an info's `<name>_info`, a histogram's `<name>_bucket` or, given `suffix`, its
    `_count` or `_sum`."""
    names = samples(name)
    chosen = name + suffix if suffix else names[0]
    if chosen not in names:
        raise ValueError(f"{name} has no {suffix} samples (only {', '.join(names)})")
    return chosen


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"  # run from a checkout that was never installed


def build_labels() -> dict[str, str]:
    labels = {label: _version(dist) for label, dist in BUILD_PACKAGES.items()}
    return {**labels, "python": platform.python_version()}


def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> None:
    """Starts the `/metrics` endpoint in a daemon thread, with the process, platform and build
    collectors added to `registry`; port 0 disables it (and adds nothing)."""
    if port:
        # `_created` series double every counter's samples and say nothing the lab uses.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        Info(BUILD, "Versions this process runs.", registry=registry).info(build_labels())
        start_http_server(port, addr=host, registry=registry)


def metrics_address(host: str, port: int) -> str:
    """Where `serve_metrics(registry, host, port)` serves, for a log line: `off` for port 0."""
    return f"http://{host}:{port}/metrics" if port else "off"


class LoopCounterChild:
    """One label set's count; only the writer thread calls `inc`."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class LoopHistogramChild:
    """One label set's buckets: the count of each (not cumulative), then +Inf's, then the sum.
    Only the writer thread calls `observe`."""

    __slots__ = ("bounds", "row")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.row = [0.0] * (len(bounds) + 2)

    def observe(self, amount: float) -> None:
        row = self.row
        row[bisect_left(self.bounds, amount)] += 1  # the first bound >= amount: `le` semantics
        row[-1] += amount


class _LoopMetric(Collector, Generic[ChildT]):
    """What both loop metrics share: fixed label sets, each child made at 0 from the start by
    `_child()` and handed out by `labels(...)` as prometheus-client does."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        children: Iterable[tuple[str, ...]],
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.children = {labels: self._child() for labels in children}
        registry.register(self)

    def _child(self) -> ChildT:
        raise NotImplementedError

    def labels(self, *values: str) -> ChildT:
        return self.children[values]


class LoopCounter(_LoopMetric[LoopCounterChild]):
    """A counter for one writer thread. Exposed as `name_total`."""

    def _child(self) -> LoopCounterChild:
        return LoopCounterChild()

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, child in self.children.items():
            family.add_metric(labels, child.value)
        yield family


class LoopHistogram(_LoopMetric[LoopHistogramChild]):
    """A histogram for one writer thread, its buckets fixed."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        children: Iterable[tuple[str, ...]],
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self.bounds = tuple(float(b) for b in buckets)
        # Each bucket's `le` label, as the library writes it.
        self.edges = [*(floatToGoString(b) for b in self.bounds), "+Inf"]  # type: ignore[no-untyped-call]
        super().__init__(name, documentation, labelnames, children, registry)

    def _child(self) -> LoopHistogramChild:
        return LoopHistogramChild(self.bounds)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, child in self.children.items():
            row = list(child.row)  # copied at once: no bucket moves while it is summed
            cumulative, buckets = 0.0, []
            for edge, count in zip(self.edges, row, strict=False):
                cumulative += count
                buckets.append((edge, cumulative))
            family.add_metric(labels, buckets, row[-1])
        yield family
