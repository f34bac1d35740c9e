"""`cache-service`: runs the TTL cache (gRPC `Cache`, `CacheAdmin`, health, reflection, metrics)."""

from __future__ import annotations

import asyncio

import click
from prometheus_client import CollectorRegistry

from cache_service.dbclient import DbClient
from cache_service.server import Cache, CacheAdminServicer, CacheServicer
from cache_service.store import TtlStore
from herdlab.auth import token_problem
from herdlab.config import DURATION, server_options
from herdlab.grpcutil import Reconnect, Service, serve
from herdlab.metrics import serve_metrics
from herdlab.retry import POLICY_NAMES, RetryPolicy
from protos import admin_pb2, admin_pb2_grpc, cache_pb2, cache_pb2_grpc

ENV = "HERDLAB_CACHE"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@server_options(ENV, port=50052, metrics_port=9102)
@click.option(
    "--db-target",
    envvar=f"{ENV}_DB_TARGET",
    default="127.0.0.1:50051",
    show_default=True,
    show_envvar=True,
    help="The DB's gRPC address.",
)
@click.option(
    "--ttl",
    envvar=f"{ENV}_TTL",
    default="30s",
    type=DURATION,
    show_default=True,
    show_envvar=True,
    help="How long a value stays fresh.",
)
@click.option(
    "--max-keys",
    envvar=f"{ENV}_MAX_KEYS",
    default=100_000,
    type=click.IntRange(1, 10_000_000),
    show_default=True,
    show_envvar=True,
    help="Store size bound (least recently used goes first).",
)
@click.option(
    "--coalescing/--no-coalescing",
    envvar=f"{ENV}_COALESCING",
    default=True,
    show_default=True,
    show_envvar=True,
    help="Single-flight concurrent misses.",
)
@click.option(
    "--policy",
    envvar=f"{ENV}_POLICY",
    default="full",
    show_default=True,
    type=click.Choice(POLICY_NAMES),
    show_envvar=True,
    help="Retry policy towards the DB.",
)
@click.option(
    "--retry-base",
    envvar=f"{ENV}_RETRY_BASE",
    default="100ms",
    type=DURATION,
    show_default=True,
    show_envvar=True,
    help="Backoff base.",
)
@click.option(
    "--retry-cap",
    envvar=f"{ENV}_RETRY_CAP",
    default="5s",
    type=DURATION,
    show_default=True,
    show_envvar=True,
    help="Backoff cap.",
)
@click.option(
    "--retry-attempts",
    envvar=f"{ENV}_RETRY_ATTEMPTS",
    default=6,
    type=click.IntRange(1, 100),
    show_default=True,
    show_envvar=True,
    help="Attempts at most, the first included.",
)
@click.option(
    "--retry-total",
    envvar=f"{ENV}_RETRY_TOTAL",
    default="30s",
    type=DURATION,
    show_default=True,
    show_envvar=True,
    help="Time budget of one fetch, sleeps included.",
)
@click.option(
    "--attempt-timeout",
    envvar=f"{ENV}_ATTEMPT_TIMEOUT",
    default="2s",
    type=DURATION,
    show_default=True,
    show_envvar=True,
    help="gRPC deadline of each attempt.",
)
@click.option(
    "--seed",
    envvar=f"{ENV}_SEED",
    default=None,
    type=int,
    show_envvar=True,
    help="Seed of the retry jitter.",
)
@click.option(
    "--max-concurrent",
    envvar=f"{ENV}_MAX_CONCURRENT",
    default=50_000,
    type=click.IntRange(1, 1_000_000),
    show_default=True,
    show_envvar=True,
    help="Calls handled at once; more get RESOURCE_EXHAUSTED.",
)
@click.option(
    "--db-reconnect-initial",
    envvar=f"{ENV}_DB_RECONNECT_INITIAL",
    default="1s",
    type=DURATION,
    show_default=True,
    show_envvar=True,
    help="First reconnect backoff towards the DB (gRPC's default: 1s).",
)
@click.option(
    "--db-reconnect-max",
    envvar=f"{ENV}_DB_RECONNECT_MAX",
    default="120s",
    type=DURATION,
    show_default=True,
    show_envvar=True,
    help="Largest reconnect backoff towards the DB (gRPC's default: 120s).",
)
def main(
    host: str,
    port: int,
    metrics_host: str,
    metrics_port: int,
    grace: float,
    admin_token: str | None,
    db_target: str,
    ttl: float,
    max_keys: int,
    coalescing: bool,
    policy: str,
    retry_base: float,
    retry_cap: float,
    retry_attempts: int,
    retry_total: float,
    attempt_timeout: float,
    seed: int | None,
    max_concurrent: int,
    db_reconnect_initial: float,
    db_reconnect_max: float,
) -> None:
    """The lab's TTL cache with single-flight coalescing in front of the DB."""
    try:
        retry = RetryPolicy(
            name=policy,
            base_s=retry_base,
            cap_s=retry_cap,
            max_attempts=retry_attempts,
            max_total_s=retry_total,
            attempt_timeout_s=attempt_timeout,
            seed=seed,
        )
        store = TtlStore(ttl, max_keys)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    problem = token_problem(host, admin_token)
    if problem:
        raise click.UsageError(problem)
    if not 0 < db_reconnect_initial <= db_reconnect_max:
        raise click.UsageError("need 0 < --db-reconnect-initial <= --db-reconnect-max")
    initial_ms = max(1, round(db_reconnect_initial * 1000))
    reconnect = Reconnect(initial_ms, initial_ms, max(initial_ms, round(db_reconnect_max * 1000)))
    registry = CollectorRegistry()
    serve_metrics(registry, metrics_host, metrics_port)

    async def run() -> None:
        # The DB channel belongs to the running event loop, so it is made inside it.
        db = DbClient(db_target, retry, registry, reconnect=reconnect)
        cache = Cache(store, db, coalescing, registry)
        services = [
            Service(
                cache_pb2_grpc.add_CacheServicer_to_server,
                CacheServicer(cache),
                cache_pb2.DESCRIPTOR.services_by_name["Cache"].full_name,
            ),
            Service(
                admin_pb2_grpc.add_CacheAdminServicer_to_server,
                CacheAdminServicer(cache),
                admin_pb2.DESCRIPTOR.services_by_name["CacheAdmin"].full_name,
            ),
        ]
        try:
            await serve(
                services,
                host=host,
                port=port,
                grace_s=grace,
                maximum_concurrent_rpcs=max_concurrent,
                admin_token=admin_token,
            )
        finally:
            await db.close()

    asyncio.run(run())


if __name__ == "__main__":
    main()
