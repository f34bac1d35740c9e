"""Keepalive pings against the lab's servers: a client pinging every 100 ms, idle, is answered
(no GOAWAY "too_many_pings") by a server with a permissive `PingPolicy`, and cut off by one that
enforces gRPC's own 5-minute minimum; the options are what reaches gRPC core. Pings are counted
from the client's channelz socket, so the test waits for pings, not for time."""

from __future__ import annotations

import asyncio
import importlib
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from herdlab import channelz
from herdlab.grpcutil import SERVER_OPTIONS, Keepalive, PingPolicy, channel_options

_cygrpc: Any = importlib.import_module("grpc._cython.cygrpc")


async def _server(policy: PingPolicy) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server(options=[*SERVER_OPTIONS, *policy.options()])
    health_pb2_grpc.add_HealthServicer_to_server(
        health.aio.HealthServicer(),  # type: ignore[attr-defined]
        server,
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


def _pings_sent(target: str) -> int:
    """Keepalive pings sent on the sockets of this process's channels to `target`."""
    sent = 0
    for channel_id in channelz.channels_to(target):
        node = channelz.channel(channel_id).get("channel", {})
        for subchannel_id in channelz.subchannel_ids(node):
            sub = channelz.subchannel(subchannel_id).get("subchannel", {})
            for ref in sub.get("socketRef", []):
                socket = json.loads(_cygrpc.channelz_get_socket(int(ref["socketId"])))
                sent += int(socket.get("socket", {}).get("data", {}).get("keepAlivesSent", 0))
    return sent


@pytest.fixture()
async def pinging() -> AsyncIterator[Keepalive]:
    yield Keepalive(time_ms=100, timeout_ms=5000)


async def _ready_channel(target: str, keepalive: Keepalive) -> grpc.aio.Channel:
    channel = grpc.aio.insecure_channel(
        target, options=channel_options(local_pool=True, keepalive=keepalive)
    )
    await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return channel


async def test_the_lab_policy_answers_frequent_pings(pinging: Keepalive) -> None:
    server, target = await _server(PingPolicy(min_interval_ms=50))
    channel = await _ready_channel(target, pinging)
    try:
        async with asyncio.timeout(10):
            # Idle: only keepalive pings on the wire. channelz has no event to wait on.
            while _pings_sent(target) < 5:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert channel.get_state() == grpc.ChannelConnectivity.READY
    finally:
        await channel.close(None)
        await server.stop(None)


async def test_grpc_default_enforcement_sends_goaway_to_the_same_client(
    pinging: Keepalive,
) -> None:
    server, target = await _server(PingPolicy(min_interval_ms=300_000, max_strikes=2))
    channel = await _ready_channel(target, pinging)
    try:
        async with asyncio.timeout(10):  # GOAWAY too_many_pings: the connection goes
            await channel.wait_for_state_change(grpc.ChannelConnectivity.READY)
        assert channel.get_state() != grpc.ChannelConnectivity.READY
    finally:
        await channel.close(None)
        await server.stop(None)
