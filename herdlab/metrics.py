"""Serving a process's Prometheus metrics.

Each process builds its metrics on its own `CollectorRegistry` (passed in, never the global
one), so tests can create as many services in one interpreter as they like and assert on values.
The endpoint is read-only: prometheus-client's HTTP server answers GET and nothing else.

Serving adds what every process exports besides its own metrics: the process collector
(`process_cpu_seconds_total`, memory, open file descriptors, start time), the platform collector
(`python_info`) and `herdlab_build_info` (1, labelled with the versions the process runs).
"""

from __future__ import annotations

import platform
from importlib import metadata

from prometheus_client import (
    CollectorRegistry,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)

PREFIX = "herdlab"
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
