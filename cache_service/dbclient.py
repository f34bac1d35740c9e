"""How the cache calls the DB: one channel, one retry policy, every attempt counted and recorded.

The channel carries the library's client cures (`herdlab.client.Cures`: the policy and the guards
on every call, as any service's client would have them); this module adds what the lab measures
of them: each attempt's send time, outcome and backoff sleep.

gRPC's retries are off on this channel (see `herdlab.client`) unless the policy is grpc-native,
so under every tenacity policy the DB sees exactly the attempts the policy makes. Each attempt's
time goes into an exact record, which the retry-storm scenario reads to draw cache->DB attempts at
100 ms resolution.

Under grpc-native gRPC makes the retries inside one call, out of the application's sight: the
record and `herdlab_cache_db_attempts` then count calls, not attempts, so a storm's attempts must
be read at the DB, whose arrival record holds every attempt exactly. channelz does see them: each
attempt is a call started on the channel's subchannel, which `herdlab_cache_db_channel_attempts`
reports for every policy (for the tenacity ones it equals the attempts counted here).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from herdlab import channelz
from herdlab.client import Cures
from herdlab.grpcutil import Keepalive, Reconnect, aio_channel, channel_options
from herdlab.guards import GuardSet
from herdlab.guards.metrics import GuardCollector
from herdlab.metrics import CACHE_DB_ATTEMPTS, CACHE_DB_CHANNEL_ATTEMPTS, CACHE_RETRY_SLEEP
from herdlab.record import EventRecord
from herdlab.retry import RetryPolicy
from protos import db_pb2, db_pb2_grpc


def channel_attempts(target: str) -> int:
    """Calls started on the subchannels of this process's channels to `target`, from channelz:
    one per attempt, gRPC's own retries included. Sums the subchannels alive when read."""
    return sum(
        int(channelz.subchannel(sub).get("subchannel", {}).get("data", {}).get("callsStarted", 0))
        for node in channelz.channels_to(target).values()
        for sub in channelz.subchannel_ids(node)
    )


class _ChannelAttempts(Collector):
    """`herdlab_cache_db_channel_attempts_total`, read from channelz at scrape time."""

    def __init__(self, target: str, policy: str) -> None:
        self.target = target
        self.policy = policy

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            CACHE_DB_CHANNEL_ATTEMPTS,
            "Attempts towards the DB as gRPC's channelz counts them (calls started on the "
            "subchannels), gRPC's own retries included, by retry policy.",
            labels=["policy"],
        )
        family.add_metric([self.policy], channel_attempts(self.target))
        yield family


# The outcomes of an attempt towards the DB exported at 0 from the start: ok and the codes the
# DB answers with when it is down, full or late (any other code is counted when it happens).
ATTEMPT_OUTCOMES = ("ok", "unavailable", "resource_exhausted", "deadline_exceeded")


class DbClient:
    def __init__(
        self,
        target: str,
        policy: RetryPolicy,
        registry: CollectorRegistry,
        record_size: int = 1_000_000,
        reconnect: Reconnect | None = None,
        guards: GuardSet | None = None,
        keepalive: Keepalive | None = None,
        tls_ca: Path | None = None,
    ) -> None:
        """`tls_ca`: reach the DB over TLS, verifying it against this CA file (else
        plaintext)."""
        self.target = target
        self.policy = policy
        # One set for every fetch of this cache: guards learn from all of its calls to the DB.
        self.guards = guards if guards is not None else GuardSet(())
        GuardCollector(lambda: self.guards, registry, "cache")
        self.record = EventRecord(record_size)
        self.cures = Cures(
            policy,
            self.guards,
            pushback=False,  # the lab's DB sends none; its storms stay as measured
            on_send=self._on_send,
            on_attempt=self._on_attempt,
            on_sleep=self._on_sleep,
        )
        options = self.cures.options(channel_options(reconnect=reconnect, keepalive=keepalive))
        self._channel = aio_channel(target, options, tls_ca, self.cures.interceptors())
        self._stub = db_pb2_grpc.DbStub(self._channel)
        self._attempts = Counter(
            CACHE_DB_ATTEMPTS,
            "Attempts made towards the DB, by retry policy and outcome (ok or the gRPC code); "
            "under grpc-native, calls (gRPC's retries inside them are not seen).",
            ["policy", "outcome"],
            registry=registry,
        )
        # The children made once (a dict lookup per attempt, not `.labels()`); a gRPC code
        # outside ATTEMPT_OUTCOMES gets its child when it first happens.
        self._attempt_children = {
            outcome: self._attempts.labels(policy.name, outcome) for outcome in ATTEMPT_OUTCOMES
        }
        registry.register(_ChannelAttempts(target, policy.name))
        self._sleeps = Histogram(
            CACHE_RETRY_SLEEP,
            "Backoff sleeps before a retry towards the DB, by retry policy.",
            ["policy"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16),
            registry=registry,
        )
        self._sleeps.labels(policy.name)

    async def close(self) -> None:
        await self._channel.close(grace=None)

    def _on_send(self, _method: str) -> None:
        self.record.add()

    def _on_attempt(self, _method: str, _n: int, error: BaseException | None) -> None:
        if error is None:
            outcome = "ok"
        elif isinstance(error, grpc.aio.AioRpcError):
            outcome = error.code().name.lower()
        else:
            outcome = "error"
        child = self._attempt_children.get(outcome)
        if child is None:
            child = self._attempt_children[outcome] = self._attempts.labels(
                self.policy.name, outcome
            )
        child.inc()

    def _on_sleep(self, _method: str, seconds: float) -> None:
        self._sleeps.labels(self.policy.name).observe(seconds)

    async def get(self, key: str) -> db_pb2.DbGetResponse:
        """The DB's answer for `key` under the policy and the guards, within the policy's total
        budget; raises `herdlab.client.CallFailed` (its `cause` may be a guard's refusal) or the
        `AioRpcError` the policy does not retry."""
        reply: db_pb2.DbGetResponse = await self._stub.Get(db_pb2.DbGetRequest(key=key))
        return reply
