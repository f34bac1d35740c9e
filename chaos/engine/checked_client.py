"""A checked client of the cache: every value it gets is checked against the key's value at its
version (`wrong`) and against the freshness oracle (`stale`). It reads a herd's keys in turn, and
never-seen keys to tell when a fault is over (a value that came from the DB through the cache)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from typing import Any

import grpc

from chaos.engine.freshness_oracle import Freshness
from chaos.engine.herd import ROUND_ROBIN
from herdlab.grpcutil import aio_channel, channel_options
from herdlab.values import value_for
from protos import cache_pb2, cache_pb2_grpc

RECOVERY_TIMEOUT_S = 60.0  # a fault not recovered from by then fails the run
POLL_S = 0.02
THINK_S = 0.01
MAX_READS = 100_000_000


class CheckedClient:
    """One client of the cache on its own connection (see the module)."""

    def __init__(
        self,
        target: str,
        keys: int,
        key_prefix: str,
        freshness: Freshness,
        deadline_s: float,
        tls_ca: str | None = None,
    ) -> None:
        """`tls_ca`: the cache serves TLS, verified against this CA file (None: plaintext)."""
        options = channel_options(local_pool=True)
        if "," in target:  # replicas (`replicas_target`): each in turn, as the herd
            options.append(ROUND_ROBIN)
        self._channel = aio_channel(target, options, tls_ca)
        self._stub = cache_pb2_grpc.CacheStub(self._channel)
        self.keys = keys
        self.key_prefix = key_prefix
        self.freshness = freshness
        self.deadline_s = deadline_s
        self.sent = 0
        self.ok = 0
        self.errors: Counter[str] = Counter()
        self.wrong = 0
        self.stale = 0
        self._fresh = 0
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def close(self) -> None:
        await self._channel.close(grace=None)

    async def get(self, key: str, never_read: bool) -> bool:
        """One checked read; True if it returned a value."""
        self.sent += 1
        sent_at = time.monotonic()
        try:
            reply = await self._stub.Get(
                cache_pb2.CacheGetRequest(key=key), timeout=self.deadline_s
            )
        except grpc.aio.AioRpcError as exc:
            self.errors[exc.code().name] += 1
            return False
        self.ok += 1
        if reply.key != key or reply.value != value_for(key, reply.version):
            self.wrong += 1
        elif self.freshness.is_stale(reply.version, sent_at, never_read):
            self.stale += 1
        return True

    async def run(self) -> None:
        """Reads the herd's keys in turn until stopped."""
        for n in range(MAX_READS):
            if self._stop.is_set():
                return
            await self.get(f"{self.key_prefix}{n % self.keys}", never_read=False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), THINK_S)

    async def until_served(self, what: str) -> None:
        """Returns once a never-seen key is served through the cache from the DB."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RECOVERY_TIMEOUT_S
        while loop.time() < deadline:
            self._fresh += 1
            if await self.get(f"{self.key_prefix}fresh-{self._fresh}", never_read=True):
                return
            await asyncio.sleep(POLL_S)
        raise RuntimeError(f"not recovered within {RECOVERY_TIMEOUT_S:g}s after {what}")

    def summary(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "ok": self.ok,
            "errors": dict(self.errors),
            "wrong_values": self.wrong,
            "stale_values": self.stale,
        }
