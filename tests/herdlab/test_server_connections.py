"""`ServerConnections`: the connections a server holds and has accepted, and its TLS handshakes,
as gRPC core's channelz shows them from the server's own process (real TLS on loopback)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from chaos.lab.tls import make_certs
from herdlab.grpcutil import (
    ServerConnections,
    ServerTls,
    aio_channel,
    build_server,
    channel_options,
)
from herdlab.metrics import (
    SERVER_CONNECTIONS_ACCEPTED,
    SERVER_CONNECTIONS_OPEN,
    SERVER_TLS_HANDSHAKES,
    TCP_LISTEN_OVERFLOWS,
    sample,
)

# More than one channelz page (100 sockets) of connections.
CONNECTIONS = 250
WAIT_S = 10.0


def _figures(registry: CollectorRegistry) -> dict[str, float]:
    return {s.name: s.value for metric in registry.collect() for s in metric.samples}


async def _until(registry: CollectorRegistry, name: str, value: float) -> dict[str, float]:
    """The figures once `name` reads `value`, waiting at most WAIT_S (a closed connection leaves
    the server when its transport notices, a moment after the client closed it)."""
    deadline = time.monotonic() + WAIT_S
    figures = _figures(registry)
    while figures[name] != value and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        figures = _figures(registry)
    return figures


async def test_connections_accepted_open_and_tls_handshakes_are_counted(tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "tls", ("cache",))
    lab = build_server([], host="127.0.0.1", port=0, tls=ServerTls(certs.cert, certs.key))
    await lab.start()
    registry = CollectorRegistry()
    ServerConnections(registry)
    target = f"127.0.0.1:{lab.port}"
    channels = [
        aio_channel(target, channel_options(local_pool=True), certs.ca) for _ in range(CONNECTIONS)
    ]
    try:
        await asyncio.wait_for(asyncio.gather(*(ch.channel_ready() for ch in channels)), WAIT_S)
        figures = await _until(registry, sample(SERVER_CONNECTIONS_OPEN), CONNECTIONS)
        assert figures[sample(SERVER_CONNECTIONS_OPEN)] == CONNECTIONS
        assert figures[sample(SERVER_CONNECTIONS_ACCEPTED)] == CONNECTIONS
        assert figures[sample(SERVER_TLS_HANDSHAKES)] == CONNECTIONS
        assert figures[sample(TCP_LISTEN_OVERFLOWS)] >= 0

        closed, channels = channels[:50], channels[50:]
        await asyncio.gather(*(ch.close(None) for ch in closed))
        figures = await _until(registry, sample(SERVER_CONNECTIONS_OPEN), CONNECTIONS - 50)
        assert figures[sample(SERVER_CONNECTIONS_OPEN)] == CONNECTIONS - 50
        assert figures[sample(SERVER_CONNECTIONS_ACCEPTED)] == CONNECTIONS  # a counter

        more = [aio_channel(target, channel_options(local_pool=True), certs.ca) for _ in range(10)]
        channels += more
        await asyncio.wait_for(asyncio.gather(*(ch.channel_ready() for ch in more)), WAIT_S)
        figures = await _until(registry, sample(SERVER_CONNECTIONS_OPEN), CONNECTIONS - 40)
        assert figures[sample(SERVER_CONNECTIONS_ACCEPTED)] == CONNECTIONS + 10
        assert figures[sample(SERVER_TLS_HANDSHAKES)] == CONNECTIONS + 10
    finally:
        await asyncio.gather(*(ch.close(None) for ch in channels))
        await lab.server.stop(None)
