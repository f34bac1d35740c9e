"""Serving a process's Prometheus metrics.

Each process builds its metrics on its own `CollectorRegistry` (passed in, never the global
one), so tests can create as many services in one interpreter as they like and assert on values.
The endpoint is read-only: prometheus-client's HTTP server answers GET and nothing else.

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

PREFIX = "herdlab"
ChildT = TypeVar("ChildT")
# The distributions whose versions `herdlab_build_info` carries, by label.
BUILD_PACKAGES = {"version": "herdlab", "grpcio": "grpcio", "protobuf": "protobuf"}


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
        Info(f"{PREFIX}_build", "Versions this process runs.", registry=registry).info(
            build_labels()
        )
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
