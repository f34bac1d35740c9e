"""The controller's side of the services' admin planes and the cache's Expire.

Runtime faults (latency, error rate, capacity, the DB's queue discipline), coalescing, the
cache's freshness policy, expiry and the exact event records are reached over gRPC, so they
work the same against local processes and containers; `first_arrival` waits for a restored DB's
first request (the reconnect lag).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import grpc

from herdlab.admin_client import AdminClient
from herdlab.auth import TOKEN_ENV, admin_metadata
from herdlab.grpcutil import aio_channel, channel_options
from protos import admin_pb2, admin_pb2_grpc, cache_pb2, cache_pb2_grpc, chaos_pb2, chaos_pb2_grpc

# Telling a service of a chaos action is best effort: a service that does not answer this soon
# (paused, busy, gone) simply does not count it.
NOTE_TIMEOUT_S = 2.0
# How often a restored DB's record is read for its first arrival (which carries its own time).
ARRIVAL_POLL_S = 0.05

T = TypeVar("T")


class Admin(AdminClient):
    """Admin clients for one DB and one cache. Use as `async with Admin(db, cache) as admin`."""

    def __init__(
        self,
        db_target: str,
        cache_target: str,
        token: str | None = None,
        *,
        tls_ca: str | None = None,
    ) -> None:
        """`token` defaults to `HERDLAB_ADMIN_TOKEN`, which servers beyond loopback require.
        `tls_ca`: the services serve TLS, verified against this CA file (None: plaintext)."""
        super().__init__(token, tls_ca)
        self.db_channel = self._open(db_target)
        self.cache_channel = self._open(cache_target)
        self.db_admin = admin_pb2_grpc.DbAdminStub(self.db_channel)
        self.cache_admin = admin_pb2_grpc.CacheAdminStub(self.cache_channel)
        self.cache = cache_pb2_grpc.CacheStub(self.cache_channel)
        self.targets = {"db": db_target, "cache": cache_target}

    async def _admin(self, service: str, rpc: Callable[..., Awaitable[T]], request: Any) -> T:
        return await self._call(f"{service} at {self.targets[service]}", rpc, request)

    async def db_state(self) -> admin_pb2.DbState:
        return await self._admin("db", self.db_admin.GetState, admin_pb2.Empty())

    async def set_faults(self, faults: admin_pb2.Faults) -> admin_pb2.DbState:
        return await self._admin("db", self.db_admin.SetFaults, faults)

    async def set_capacity(self, capacity: admin_pb2.Capacity) -> admin_pb2.DbState:
        return await self._admin("db", self.db_admin.SetCapacity, capacity)

    async def set_queue_discipline(
        self, discipline: str, target_s: float | None = None, interval_s: float | None = None
    ) -> admin_pb2.DbState:
        """Serves the DB's queue by `discipline` (fifo, codel, lifo) from now on; CoDel's target
        and interval (seconds) change only when given."""
        capacity = admin_pb2.Capacity(discipline=discipline)
        if target_s is not None:
            capacity.codel_target_ms = target_s * 1000
        if interval_s is not None:
            capacity.codel_interval_ms = interval_s * 1000
        return await self.set_capacity(capacity)

    async def cache_state(self) -> admin_pb2.CacheState:
        return await self._admin("cache", self.cache_admin.GetState, admin_pb2.Empty())

    async def set_coalescing(self, enabled: bool) -> admin_pb2.CacheState:
        request = admin_pb2.Coalescing(enabled=enabled)
        return await self._admin("cache", self.cache_admin.SetCoalescing, request)

    async def set_freshness(self, freshness: admin_pb2.Freshness) -> admin_pb2.CacheState:
        """Sets the fields of `freshness` that are set; the others keep their value."""
        return await self._admin("cache", self.cache_admin.SetFreshness, freshness)

    async def reset_db_peaks(self) -> admin_pb2.DbState:
        """Starts the DB's per-key peak (`max_in_flight_per_key`) again from now."""
        return await self._admin("db", self.db_admin.ResetPeaks, admin_pb2.Empty())

    async def expire(self, keys: list[str] | None) -> int:
        """Expires `keys`, or every key when `keys` is None; returns how many were present."""
        request = (
            cache_pb2.ExpireRequest(all=True)
            if keys is None
            else cache_pb2.ExpireRequest(keys=keys)
        )
        reply = await self._admin("cache", self.cache.Expire, request)
        return int(reply.expired)

    async def db_arrivals(self, after_seq: int = 0) -> list[int]:
        """Every DB arrival time (ns) recorded after `after_seq`, all pages."""
        return await self._record("db", after_seq)

    async def db_record_total(self) -> int:
        """Arrivals the DB has recorded ever: `db_arrivals(after_seq=this)` gives the later ones."""
        request = admin_pb2.RecordRequest(after_seq=0, limit=1)
        page = await self._admin("db", self.db_admin.GetArrivals, request)
        return int(page.total)

    async def first_db_arrival(self) -> int | None:
        """The first arrival (ns) the DB process recorded, if any (one entry, not the record)."""
        request = admin_pb2.RecordRequest(after_seq=0, limit=1)
        page = await self._admin("db", self.db_admin.GetArrivals, request)
        return page.times_ns[0] if page.times_ns else None

    async def cache_attempts(self, after_seq: int = 0) -> list[int]:
        """Every cache->DB attempt time (ns) recorded after `after_seq`, all pages."""
        return await self._record("cache", after_seq)

    async def _record(self, service: str, after_seq: int) -> list[int]:
        rpc = self.db_admin.GetArrivals if service == "db" else self.cache_admin.GetAttempts
        times: list[int] = []
        seq = after_seq
        for _ in range(10_000):  # bounded: at most 10,000 pages of up to 100,000 events
            page = await self._admin(service, rpc, admin_pb2.RecordRequest(after_seq=seq))
            times.extend(page.times_ns)
            seq = page.first_seq + len(page.times_ns) - 1
            if seq >= page.total or not page.times_ns:
                break
        return times


async def first_arrival(admins: list[Admin], wait_s: float, idle_s: float) -> int | None:
    """The first arrival (ns) a just restored DB records, read every `ARRIVAL_POLL_S` through
    `admins` (the DB with each cache). None once `wait_s` has passed, or once no cache has made
    an attempt towards the DB or had a fetch in flight for `idle_s`: nobody is reconnecting."""
    deadline = time.monotonic() + wait_s
    active_at = time.monotonic()
    attempts: int | None = None
    while True:
        first = await admins[0].first_db_arrival()
        if first is not None:
            return first
        states = [await admin.cache_state() for admin in admins]
        now = time.monotonic()
        seen = sum(state.db_attempts for state in states)
        if seen != attempts or any(state.in_flight_keys for state in states):
            active_at = now
        attempts = seen
        if now - active_at >= idle_s or now >= deadline:
            return None
        await asyncio.sleep(ARRIVAL_POLL_S)


async def note_action(
    services: Mapping[str, str],
    verb: str,
    target: str,
    token: str | None = None,
    *,
    tls_ca: str | None = None,
) -> list[str]:
    """Tells each service (name -> gRPC address) that `verb` was done to `target`, so that it
    counts it in `herdlab_chaos_actions_total`; returns the names of those that counted it.
    A service without a gRPC address (a helper such as the local Prometheus) is not asked.
    `token` defaults to `HERDLAB_ADMIN_TOKEN`; `tls_ca` as for `Admin`."""
    metadata = admin_metadata(token if token is not None else os.environ.get(TOKEN_ENV))
    request = chaos_pb2.ChaosAction(verb=verb, target=target)

    async def tell(name: str, address: str) -> str | None:
        async with aio_channel(address, channel_options(), tls_ca) as channel:
            try:
                await chaos_pb2_grpc.ChaosLogStub(channel).NoteAction(
                    request, timeout=NOTE_TIMEOUT_S, metadata=metadata
                )
            except grpc.aio.AioRpcError:
                return None
        return name

    told = await asyncio.gather(
        *(tell(name, address) for name, address in services.items() if address)
    )
    return [name for name in told if name is not None]
