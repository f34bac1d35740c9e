"""The cache's settings: store, freshness, coalescing, the retry policy towards the DB, its
reconnects.

Declared once (`herdlab.settings`): `cache-service`'s flags and environment variables, the argv
`chaos` starts it with and experiment files' `[stack.cache]` all read these declarations; the
retry policy and the store validate what relates several settings (`problems`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from cache_service import freshness
from cache_service.freshness import Freshness
from cache_service.shared import SharedStore, parse_store
from cache_service.store import TtlStore
from herdlab.grpcutil import Keepalive, Reconnect
from herdlab.guards import GUARD_USAGE, GuardSet, parse_guard_set
from herdlab.retry import POLICY_NAMES, RetryPolicy
from herdlab.settings import ServerSettings, setting

MAX_RECONNECT_S = 3600.0
MAX_DURATION_S = 3600.0  # a backoff, an attempt or a whole fetch: at most an hour
MAX_TTL_S = 86_400.0


@dataclass(frozen=True)
class CacheSettings(ServerSettings):
    ttl_s: float = setting(
        30.0, "ttl", "duration", "How long a value stays fresh.", lo=0.0, hi=MAX_TTL_S
    )
    max_keys: int = setting(
        100_000,
        "max_keys",
        "int",
        "Store size bound (least recently used goes first).",
        lo=1,
        hi=10_000_000,
    )
    stale_while_revalidate_s: float = setting(
        0.0,
        "stale_while_revalidate",
        "duration",
        "Serve a value expired less than this long ago as STALE while one background refresh "
        "runs (0: off).",
        lo=0.0,
        hi=freshness.MAX_STALE_S,
    )
    stale_if_error_s: float = setting(
        0.0,
        "stale_if_error",
        "duration",
        "When a fetch fails, serve a value expired less than this long ago as STALE instead of "
        "the error (0: off).",
        lo=0.0,
        hi=freshness.MAX_STALE_S,
    )
    beta: float = setting(
        0.0,
        "beta",
        "float",
        "XFetch early refresh: refresh when now - delta*beta*ln(rand) >= expiry, delta the last "
        "fetch's time (0: off; the paper's default is 1).",
        lo=0.0,
        hi=freshness.MAX_BETA,
    )
    ttl_jitter_pct: float = setting(
        0.0,
        "ttl_jitter",
        "float",
        "Shorten each value's TTL by a uniform draw of up to this percentage (0: off).",
        lo=0.0,
        hi=freshness.MAX_JITTER_PCT,
    )
    coalescing: bool = setting(True, "coalescing", "bool", "Single-flight concurrent misses.")
    policy: str = setting(
        "full", "policy", "choice", "Retry policy towards the DB.", choices=POLICY_NAMES
    )
    retry_base_s: float = setting(
        0.1, "retry_base", "duration", "Backoff base.", lo=0.0, hi=MAX_DURATION_S
    )
    retry_cap_s: float = setting(
        5.0, "retry_cap", "duration", "Backoff cap.", lo=0.0, hi=MAX_DURATION_S
    )
    retry_attempts: int = setting(
        6, "retry_attempts", "int", "Attempts at most, the first included.", lo=1, hi=100
    )
    retry_total_s: float = setting(
        30.0,
        "retry_total",
        "duration",
        "Time budget of one fetch, sleeps included.",
        lo=0.0,
        hi=MAX_DURATION_S,
    )
    attempt_timeout_s: float = setting(
        2.0,
        "attempt_timeout",
        "duration",
        "gRPC deadline of each attempt.",
        lo=0.0,
        hi=MAX_DURATION_S,
    )
    seed: int | None = setting(None, "seed", "seed", "Seed of the retry jitter.")
    max_concurrent: int = setting(
        50_000,
        "max_concurrent",
        "int",
        "Calls handled at once; more get RESOURCE_EXHAUSTED.",
        lo=1,
        hi=1_000_000,
    )
    # Not gRPC's 1 s .. 120 s: after a 10 s outage that left the restored DB unasked for a
    # median 5.8 s (max 7.8 s), against 0.37 s (max 0.85 s) with these (README: reconnect lag).
    db_reconnect_initial_s: float = setting(
        0.1,
        "db_reconnect_initial",
        "duration",
        "First reconnect backoff towards the DB (gRPC's own default: 1s).",
        lo=0.0,
        hi=MAX_RECONNECT_S,
    )
    db_reconnect_max_s: float = setting(
        1.0,
        "db_reconnect_max",
        "duration",
        "Largest reconnect backoff towards the DB (gRPC's own default: 120s).",
        lo=0.0,
        hi=MAX_RECONNECT_S,
    )
    db_keepalive_s: float = setting(
        0.0,
        "db_keepalive",
        "duration",
        "Keepalive ping towards the DB after this long without activity (0: off, gRPC's "
        "default): a half-open DB connection is then noticed within keepalive + timeout.",
        lo=0.0,
        hi=MAX_RECONNECT_S,
    )
    db_keepalive_timeout_s: float = setting(
        20.0,
        "db_keepalive_timeout",
        "duration",
        "How long a keepalive ping may wait for its ACK before the connection is closed.",
        lo=0.001,
        hi=MAX_RECONNECT_S,
    )
    db_keepalive_without_calls: bool = setting(
        True,
        "db_keepalive_without_calls",
        "bool",
        "Ping the DB even with no call in flight.",
    )

    grpc_max_tokens: int = setting(
        0,
        "grpc_max_tokens",
        "int",
        "grpc-native only: gRFC A6 retryThrottling maxTokens (0: no throttling; A6's example: 10).",
        lo=0,
        hi=1000,
    )
    grpc_token_ratio: float = setting(
        0.1,
        "grpc_token_ratio",
        "float",
        "grpc-native only: tokens a success refunds (A6 tokenRatio).",
        lo=0.001,
        hi=1000,
    )

    guards: str = setting(
        "none",
        "guards",
        "guards",
        "Overload guard towards the DB, repeatable to compose a set in order (each a guard or "
        f"a '+'-joined set): {GUARD_USAGE} with k=v parameters, or recommended.",
        flag_name="--guard",
    )

    store_url: str = setting(
        "local",
        "store",
        "text",
        "Where values live: local (this process) or redis://HOST:PORT/N, shared by every "
        "replica, which then coalesce across replicas with a lease per key.",
    )
    lease_timeout_s: float = setting(
        3.0,
        "lease_timeout",
        "duration",
        "Shared store: how long a lease outlives a holder that stopped renewing it (died).",
        lo=0.01,
        hi=MAX_DURATION_S,
    )
    redis_timeout_s: float = setting(
        0.25,
        "redis_timeout",
        "duration",
        "Shared store: the timeout of every Redis call; past it the replica goes straight to "
        "the DB.",
        lo=0.001,
        hi=60.0,
    )

    def retry_policy(self) -> RetryPolicy:
        """The policy the cache's DB client retries with; ValueError names a bad setting."""
        return RetryPolicy(
            name=self.policy,
            base_s=self.retry_base_s,
            cap_s=self.retry_cap_s,
            max_attempts=self.retry_attempts,
            max_total_s=self.retry_total_s,
            attempt_timeout_s=self.attempt_timeout_s,
            seed=self.seed,
            grpc_max_tokens=self.grpc_max_tokens or None,
            grpc_token_ratio=self.grpc_token_ratio,
        )

    def guard_set(self) -> GuardSet:
        """A fresh guard set (guards keep state: one set per client, built once); its random
        draws (throttle, Vegas' probe) follow `seed`."""
        return parse_guard_set(self.guards, rng=random.Random(self.seed))

    def store(self) -> TtlStore:
        return TtlStore(self.ttl_s, self.max_keys)

    def shared_store(self, registry: CollectorRegistry) -> SharedStore | None:
        """The shared store the settings name (None: local); made inside the event loop."""
        where = parse_store(self.store_url)
        if where is None:
            return None
        host, port, db = where
        return SharedStore(
            host,
            port,
            db,
            ttl_s=self.ttl_s,
            lease_timeout_s=self.lease_timeout_s,
            timeout_s=self.redis_timeout_s,
            # A holder's fetch lasts at most the retry budget; its lease one timeout more.
            wait_limit_s=self.retry_total_s + self.lease_timeout_s,
            registry=registry,
        )

    def freshness(self) -> Freshness:
        return Freshness(
            stale_while_revalidate_s=self.stale_while_revalidate_s,
            stale_if_error_s=self.stale_if_error_s,
            beta=self.beta,
            ttl_jitter_pct=self.ttl_jitter_pct,
        )

    def reconnect(self) -> Reconnect:
        """The DB channel's connection backoff. gRPC's minimum connect timeout keeps its
        default: a restarted DB that is slow to finish a handshake is not abandoned."""
        return Reconnect(
            initial_backoff_ms=max(1, round(self.db_reconnect_initial_s * 1000)),
            max_backoff_ms=max(1, round(self.db_reconnect_max_s * 1000)),
        )

    def keepalive(self) -> Keepalive | None:
        """The DB channel's keepalive, or None when off."""
        if self.db_keepalive_s <= 0:
            return None
        return Keepalive(
            time_ms=max(1, round(self.db_keepalive_s * 1000)),
            timeout_ms=max(1, round(self.db_keepalive_timeout_s * 1000)),
            without_calls=self.db_keepalive_without_calls,
        )

    def problems(self) -> list[str]:
        found = super().problems()
        for build in (self.retry_policy, self.store):
            try:
                build()
            except ValueError as exc:
                found.append(str(exc))
        try:
            parse_store(self.store_url)
        except ValueError as exc:
            found.append(str(exc))
        if not 0 < self.db_reconnect_initial_s <= self.db_reconnect_max_s <= MAX_RECONNECT_S:
            found.append("need 0 < --db-reconnect-initial <= --db-reconnect-max <= 1h")
        return found
