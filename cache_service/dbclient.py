"""How the cache calls the DB: one channel, one retry policy, every attempt counted and recorded.

gRPC's transparent retries are off on this channel (see `herdlab.grpcutil`), so the DB sees
exactly the attempts the policy makes. Each attempt's time goes into an exact record, which the
retry-storm scenario reads to draw cache->DB attempts at 100 ms resolution.
"""

from __future__ import annotations

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

from herdlab.grpcutil import Reconnect, channel_options
from herdlab.metrics import PREFIX
from herdlab.record import EventRecord
from herdlab.retry import RetryPolicy
from protos import db_pb2, db_pb2_grpc


class DbClient:
    def __init__(
        self,
        target: str,
        policy: RetryPolicy,
        registry: CollectorRegistry,
        record_size: int = 1_000_000,
        reconnect: Reconnect | None = None,
    ) -> None:
        self.target = target
        self.policy = policy
        self.record = EventRecord(record_size)
        self._channel = grpc.aio.insecure_channel(
            target, options=channel_options(reconnect=reconnect)
        )
        self._stub = db_pb2_grpc.DbStub(self._channel)
        self._attempts = Counter(
            f"{PREFIX}_cache_db_attempts",
            "Attempts made towards the DB, by retry policy and outcome (ok or the gRPC code).",
            ["policy", "outcome"],
            registry=registry,
        )
        self._sleeps = Histogram(
            f"{PREFIX}_cache_retry_sleep_seconds",
            "Backoff sleeps before a retry towards the DB, by retry policy.",
            ["policy"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16),
            registry=registry,
        )

    async def close(self) -> None:
        await self._channel.close(grace=None)

    def _on_attempt(self, _n: int, error: BaseException | None) -> None:
        if error is None:
            outcome = "ok"
        elif isinstance(error, grpc.aio.AioRpcError):
            outcome = error.code().name.lower()
        else:
            outcome = "error"
        self._attempts.labels(self.policy.name, outcome).inc()

    def _on_sleep(self, seconds: float) -> None:
        self._sleeps.labels(self.policy.name).observe(seconds)

    async def get(self, key: str) -> db_pb2.DbGetResponse:
        """The DB's answer for `key` under the policy; raises `RetryExhausted` or `AioRpcError`."""
        request = db_pb2.DbGetRequest(key=key)

        async def attempt(timeout_s: float) -> db_pb2.DbGetResponse:
            self.record.add()
            reply: db_pb2.DbGetResponse = await self._stub.Get(request, timeout=timeout_s)
            return reply

        return await self.policy.call(attempt, on_attempt=self._on_attempt, on_sleep=self._on_sleep)
