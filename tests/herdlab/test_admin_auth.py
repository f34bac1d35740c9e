"""The admin plane's lock over real gRPC: with a token set, admin calls (DbAdmin, CacheAdmin,
Cache.Expire, ChaosLog) without it are refused with UNAUTHENTICATED and change nothing, while the
data plane stays open; a server asked to listen beyond loopback without a token refuses to start."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Iterator
from pathlib import Path

import grpc
import pytest

from chaos.lab.admin import Admin
from chaos.lab.backends.local import LocalStack, StackInfo
from herdlab.auth import TOKEN_ENV, TOKEN_METADATA, AdminError
from herdlab.grpcutil import channel_options
from protos import admin_pb2, admin_pb2_grpc, cache_pb2, cache_pb2_grpc, chaos_pb2, chaos_pb2_grpc

TOKEN = "s3cret-lab-token"


@pytest.fixture(scope="module")
def locked_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackInfo]:
    os.environ[TOKEN_ENV] = TOKEN  # inherited by the services the stack starts
    try:
        stack = LocalStack(tmp_path_factory.mktemp("locked"))
        info = stack.up()
    finally:
        del os.environ[TOKEN_ENV]
    try:
        yield info
    finally:
        stack.down()


async def _calls(info: StackInfo, metadata: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """The status code of one call of each kind, with the given metadata."""
    results: dict[str, str] = {}
    db, cache = info.services["db"].grpc, info.services["cache"].grpc
    async with (
        grpc.aio.insecure_channel(db, options=channel_options()) as db_channel,
        grpc.aio.insecure_channel(cache, options=channel_options()) as cache_channel,
    ):
        db_admin = admin_pb2_grpc.DbAdminStub(db_channel)
        cache_admin = admin_pb2_grpc.CacheAdminStub(cache_channel)
        cache_stub = cache_pb2_grpc.CacheStub(cache_channel)
        try:
            await cache_stub.Get(cache_pb2.CacheGetRequest(key="open"), timeout=10)
            results["Get"] = "OK"
        except grpc.aio.AioRpcError as exc:
            results["Get"] = exc.code().name
        calls: dict[str, Awaitable[object]] = {
            "SetFaults": db_admin.SetFaults(
                admin_pb2.Faults(error_rate=1.0), timeout=10, metadata=metadata
            ),
            "GetArrivals": db_admin.GetArrivals(
                admin_pb2.RecordRequest(), timeout=10, metadata=metadata
            ),
            "SetCoalescing": cache_admin.SetCoalescing(
                admin_pb2.Coalescing(enabled=False), timeout=10, metadata=metadata
            ),
            "Expire": cache_stub.Expire(
                cache_pb2.ExpireRequest(all=True), timeout=10, metadata=metadata
            ),
            "NoteAction": chaos_pb2_grpc.ChaosLogStub(db_channel).NoteAction(
                chaos_pb2.ChaosAction(verb="kill", target="cache"), timeout=10, metadata=metadata
            ),
        }
        for name, call in calls.items():
            try:
                await call
                results[name] = "OK"
            except grpc.aio.AioRpcError as exc:
                results[name] = exc.code().name
    return results


def test_admin_calls_without_token_are_refused_and_change_nothing(locked_stack: StackInfo) -> None:
    for metadata in ((), ((TOKEN_METADATA, "wrong"),)):
        results = asyncio.run(_calls(locked_stack, metadata))
        assert results == {
            "SetFaults": "UNAUTHENTICATED",
            "GetArrivals": "UNAUTHENTICATED",
            "SetCoalescing": "UNAUTHENTICATED",
            "Expire": "UNAUTHENTICATED",
            "NoteAction": "UNAUTHENTICATED",
            "Get": "OK",
        }

    async def state() -> tuple[float, bool]:
        db, cache = locked_stack.services["db"].grpc, locked_stack.services["cache"].grpc
        async with Admin(db, cache, token=TOKEN) as admin:
            return (await admin.db_state()).faults.error_rate, (
                await admin.cache_state()
            ).coalescing

    assert asyncio.run(state()) == (0.0, True)


def test_admin_calls_with_token_work(locked_stack: StackInfo) -> None:
    results = asyncio.run(_calls(locked_stack, ((TOKEN_METADATA, TOKEN),)))
    assert set(results.values()) == {"OK"}

    async def without() -> None:
        db, cache = locked_stack.services["db"].grpc, locked_stack.services["cache"].grpc
        async with Admin(db, cache, token="") as admin:
            await admin.db_state()

    with pytest.raises(AdminError, match="UNAUTHENTICATED"):
        asyncio.run(without())

    async def restore() -> None:
        db, cache = locked_stack.services["db"].grpc, locked_stack.services["cache"].grpc
        async with Admin(db, cache, token=TOKEN) as admin:
            await admin.set_faults(admin_pb2.Faults(error_rate=0.0))
            await admin.set_coalescing(True)

    asyncio.run(restore())


@pytest.mark.parametrize("module", ["db_service", "cache_service"])
def test_beyond_loopback_without_token_refuses_to_start(module: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    result = subprocess.run(
        [sys.executable, "-m", module, "--host", "0.0.0.0", "--port", "0", "--metrics-port", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert TOKEN_ENV in result.stderr
    assert "Traceback" not in result.stderr
