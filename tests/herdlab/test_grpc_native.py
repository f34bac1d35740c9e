"""The grpc-native policy against a real grpc.aio server on 127.0.0.1 that fails its first N
calls with UNAVAILABLE: gRPC retries inside one application call, within A6's limits, only on the
channel that carries the policy, and its retry throttle stops retrying once half the tokens are
gone. The server counts what reached it; the client counts what the application sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest

from cache_service.dbclient import channel_attempts
from herdlab.grpcutil import channel_options
from herdlab.retry import RetryExhausted, RetryPolicy
from protos import db_pb2, db_pb2_grpc

# Small backoffs: gRPC's own sleeps between attempts, kept short so the tests are quick.
BASE_S, CAP_S = 0.005, 0.02


@dataclass
class FailingDb(db_pb2_grpc.DbServicer):
    """Answers UNAVAILABLE to the first `failures` calls (None: to every call), then values."""

    failures: int | None
    calls: int = 0
    per_call: list[int] = field(default_factory=list)

    async def Get(
        self, request: db_pb2.DbGetRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> db_pb2.DbGetResponse:
        self.calls += 1
        if self.failures is None or self.calls <= self.failures:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"failure {self.calls}")
        return db_pb2.DbGetResponse(key=request.key, value="v", version=1)


@dataclass
class Server:
    db: FailingDb
    target: str


@pytest.fixture()
async def server(request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    db = FailingDb(failures=request.param)
    grpc_server = grpc.aio.server()
    db_pb2_grpc.add_DbServicer_to_server(db, grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    await grpc_server.start()
    try:
        yield Server(db, f"127.0.0.1:{port}")
    finally:
        await grpc_server.stop(None)


def native(max_attempts: int = 5, **kw: object) -> RetryPolicy:
    args: dict[str, object] = {
        "base_s": BASE_S,
        "cap_s": CAP_S,
        "max_attempts": max_attempts,
        "max_total_s": 10.0,
    } | kw
    return RetryPolicy("grpc-native", **args)  # type: ignore[arg-type]


@dataclass
class Client:
    """Calls `Db.Get` under `policy` on a channel built for it; records the application's calls
    (their deadlines)."""

    target: str
    policy: RetryPolicy
    timeouts: list[float] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return len(self.timeouts)

    async def get(self, channel: grpc.aio.Channel) -> db_pb2.DbGetResponse:
        stub = db_pb2_grpc.DbStub(channel)

        async def attempt(timeout_s: float) -> db_pb2.DbGetResponse:
            self.timeouts.append(timeout_s)
            reply: db_pb2.DbGetResponse = await stub.Get(
                db_pb2.DbGetRequest(key="k"), timeout=timeout_s
            )
            return reply

        return await self.policy.call(attempt)

    def channel(self) -> grpc.aio.Channel:
        options = channel_options(local_pool=True, service_config=self.policy.grpc_service_config())
        return grpc.aio.insecure_channel(self.target, options=options)


@pytest.mark.parametrize("server", [2], indirect=True)
async def test_grpc_retries_within_one_call(server: Server) -> None:
    client = Client(server.target, native())
    async with client.channel() as channel:
        reply = await client.get(channel)
        assert channel_attempts(server.target) == 3
    assert reply.value == "v"
    assert (server.db.calls, client.calls) == (3, 1)
    # The one call's deadline is the whole budget: gRPC's attempts all happen within it.
    assert client.timeouts == [pytest.approx(10.0, abs=0.5)]


@pytest.mark.parametrize("server", [10], indirect=True)
async def test_max_attempts_is_capped_at_five(server: Server) -> None:
    client = Client(server.target, native(max_attempts=8))
    async with client.channel() as channel:
        with pytest.raises(RetryExhausted) as info:
            await client.get(channel)
    assert (server.db.calls, client.calls) == (5, 1)
    assert info.value.attempts == 1
    assert isinstance(info.value.last, grpc.aio.AioRpcError)
    assert info.value.last.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("server", [2], indirect=True)
@pytest.mark.parametrize("policy", ["none", "full"])
async def test_a_channel_without_the_policy_does_not_retry(server: Server, policy: str) -> None:
    """Bug: gRPC's retries are on by default since grpcio 1.40; a channel that is not grpc-native
    must keep them off, or its attempts multiply with the tenacity policy's."""
    client = Client(server.target, RetryPolicy(policy, max_attempts=1, max_total_s=10.0))
    async with client.channel() as channel:
        with pytest.raises(RetryExhausted):
            await client.get(channel)
    assert (server.db.calls, client.calls) == (1, 1)


@pytest.mark.parametrize("server", [None], indirect=True)
async def test_throttling_stops_retries_once_tokens_fall_to_half(server: Server) -> None:
    """gRFC A6 with maxTokens 10: every failed attempt costs a token and retries stop while
    tokens <= 5. With 3 attempts a call: call 1 spends 10 -> 7 in 3 attempts; call 2 retries once
    (7 -> 6, retry; 6 -> 5, stop); from then on one attempt per call."""
    client = Client(server.target, native(max_attempts=3, grpc_max_tokens=10))
    async with client.channel() as channel:
        for _ in range(4):
            before = server.db.calls
            with pytest.raises(RetryExhausted):
                await client.get(channel)
            server.db.per_call.append(server.db.calls - before)
    assert server.db.per_call == [3, 2, 1, 1]
    assert client.calls == 4
