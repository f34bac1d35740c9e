"""`python -m herdlab.healthcheck`, the image's own gRPC health client, against real gRPC servers:
SERVING exits 0; NOT_SERVING, a server without the health service, a port that is not gRPC, a
closed port and bad arguments exit 1 with one line; and the controller's readiness wait says what it
last saw, and waits out a connection the service answers seconds late."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from chaos.lab.backends.local import StackInfo
from chaos.lab.ports import free_port
from herdlab.grpcutil import serving_problem, wait_serving

HEALTHCHECK = [sys.executable, "-m", "herdlab.healthcheck", "--timeout", "5s"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HEALTHCHECK, *args], capture_output=True, text=True, timeout=30, check=False
    )


@pytest.fixture()
def health_server() -> Iterator[tuple[str, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(None)


def test_serving_lab_services_pass(stack_info: StackInfo) -> None:
    for service in ("db", "cache"):
        result = _run(stack_info.services[service].grpc)
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""


def test_each_status_is_read_from_the_reply(
    health_server: tuple[str, health.HealthServicer],
) -> None:
    target, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert _run(target).returncode == 0
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    result = _run(target)
    assert result.returncode == 1
    assert result.stderr.strip() == f"healthcheck: {target} answered status 2, not SERVING"


def test_no_health_service_is_unhealthy() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        result = _run(f"127.0.0.1:{port}")
    finally:
        server.stop(None)
    assert result.returncode == 1
    assert "without a reply" in result.stderr and len(result.stderr.splitlines()) == 1


def test_metrics_port_closed_port_and_bad_arguments_exit_1(stack_info: StackInfo) -> None:
    metrics = stack_info.services["db"].metrics.split("//", 1)[1].split("/", 1)[0]
    for args in ([metrics], [f"127.0.0.1:{free_port()}"], ["nocolon"], ["--timeout", "1x", "a:1"]):
        result = _run(*args)
        assert result.returncode == 1, args
        assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr, args


def test_the_readiness_wait_says_what_it_last_saw(
    health_server: tuple[str, health.HealthServicer],
) -> None:
    """`serving_problem`, which the local stack's start waits with: None once SERVING; else the
    last status or error, so a stack that did not come up says why (not only that it did not)."""
    target, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert serving_problem(target, 2.0) == "NOT_SERVING"  # time to connect on a busy machine
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert serving_problem(target, 5.0) is None and wait_serving(target, 5.0)
    assert serving_problem(target, 5.0, alive=lambda: False) == "exited"
    closed = serving_problem(f"127.0.0.1:{free_port()}", 0.3)
    assert closed is not None and closed.split(":")[0] in ("UNAVAILABLE", "DEADLINE_EXCEEDED")


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hold_s: float) -> None:
    """Copies `reader` to `writer`, the first bytes `hold_s` after they came; closes `writer`
    at the end, however it came."""
    try:
        first = True
        while chunk := await reader.read(65536):
            if first:
                await asyncio.sleep(hold_s)
                first = False
            writer.write(chunk)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@contextlib.contextmanager
def _slow_to_answer(target: str, hold_s: float) -> Iterator[str]:
    """A relay in front of `target` whose every connection is answered `hold_s` late, as a
    server restarted into a reconnect storm answers a new connection behind the ones queued
    before it (its requests then go at full speed)."""
    host, port = target.rsplit(":", 1)
    handlers: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            await asyncio.gather(_relay(reader, up_writer, 0), _relay(up_reader, writer, hold_s))
        finally:
            writer.close()
            handlers.discard(task)

    async def shut(server: asyncio.Server) -> None:
        server.close()
        for task in list(handlers):
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()

    loop = asyncio.new_event_loop()
    try:
        server = loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", 0))
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        try:
            yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        finally:
            asyncio.run_coroutine_threadsafe(shut(server), loop).result(5)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
    finally:
        if not loop.is_running():
            loop.close()


def test_the_readiness_wait_waits_for_a_handshake_answered_late(
    health_server: tuple[str, health.HealthServicer],
) -> None:
    """A service restarted into a storm takes up the check's connection and answers it seconds
    later: the wait sees it SERVING within its budget instead of giving up on every connect
    after a second and starting again at the back of the line."""
    target, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    with _slow_to_answer(target, 1.5) as slow:
        assert serving_problem(slow, 10.0) is None
