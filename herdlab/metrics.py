"""Serving a process's Prometheus metrics.

Each process builds its metrics on its own `CollectorRegistry` (passed in, never the global
one), so tests can create as many services in one interpreter as they like and assert on values.
The endpoint is read-only: prometheus-client's HTTP server answers GET and nothing else.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, disable_created_metrics, start_http_server

PREFIX = "herdlab"


def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> None:
    """Starts the `/metrics` endpoint in a daemon thread; port 0 disables it."""
    if port:
        # `_created` series double every counter's samples and say nothing the lab uses.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        start_http_server(port, addr=host, registry=registry)


def metrics_address(host: str, port: int) -> str:
    """Where `serve_metrics(registry, host, port)` serves, for a log line: `off` for port 0."""
    return f"http://{host}:{port}/metrics" if port else "off"
