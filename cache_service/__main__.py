"""`cache-service`: runs the TTL cache (gRPC `Cache`, `CacheAdmin`, health, reflection, metrics)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import click
from prometheus_client import CollectorRegistry

from cache_service.dbclient import DbClient
from cache_service.server import Cache, CacheAdminServicer, CacheServicer
from cache_service.settings import CacheSettings
from herdlab import logs, loop, settings
from herdlab.auth import token_problem
from herdlab.chaoslog import chaos_log_service
from herdlab.config import server_options, server_tls
from herdlab.grpcutil import ServerCalls, ServerConnections, Service, serve
from herdlab.metrics import metrics_address, serve_metrics
from protos import admin_pb2, cache_pb2

ENV = "HERDLAB_CACHE"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@server_options("cache-service", ENV, port=50052, metrics_port=9102)
@click.option(
    "--db-target",
    envvar=f"{ENV}_DB_TARGET",
    default="127.0.0.1:50051",
    show_default=True,
    show_envvar=True,
    help="The DB's gRPC address.",
)
@click.option(
    "--db-tls-ca",
    envvar=f"{ENV}_DB_TLS_CA",
    default=None,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    show_envvar=True,
    help="Reach the DB over TLS, verifying its certificate against this CA (PEM); the "
    "--db-target host must be a name or address the certificate carries.",
)
@click.option(
    "--name",
    envvar=f"{ENV}_NAME",
    default="cache",
    show_default=True,
    show_envvar=True,
    help="The service's name in its log lines (service=NAME), e.g. a replica's cache-2.",
)
@loop.option
@settings.options(CacheSettings, ENV)
def main(
    host: str,
    port: int,
    metrics_host: str,
    metrics_port: int,
    grace: float,
    admin_token: str | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    loop_name: str,
    db_target: str,
    db_tls_ca: Path | None,
    name: str,
    **values: Any,
) -> None:
    """The lab's TTL cache with single-flight coalescing in front of the DB."""
    config = settings.from_options(CacheSettings, values)
    problem = token_problem(host, admin_token)
    if problem:
        raise click.UsageError(problem)
    tls = server_tls(tls_cert, tls_key)
    store = config.store()
    logs.setup(name)
    registry = CollectorRegistry()
    ServerCalls(registry)
    ServerConnections(registry)
    serve_metrics(registry, metrics_host, metrics_port)

    async def run() -> None:
        # The DB channel belongs to the running event loop, so it is made inside it.
        db = DbClient(
            db_target,
            config.retry_policy(),
            registry,
            reconnect=config.reconnect(),
            guards=config.guard_set(),
            keepalive=config.keepalive(),
            tls_ca=db_tls_ca,
        )
        shared = config.shared_store(registry)
        cache = Cache(
            store,
            db,
            config.coalescing,
            registry,
            freshness=config.freshness(),
            rng=random.Random(config.seed),
            shared=shared,
        )
        services = [
            Service(
                CacheServicer(cache),
                cache_pb2.DESCRIPTOR.services_by_name["Cache"],
                registered=True,
            ),
            Service(CacheAdminServicer(cache), admin_pb2.DESCRIPTOR.services_by_name["CacheAdmin"]),
            chaos_log_service(registry),
        ]
        try:
            await serve(
                services,
                host=host,
                port=port,
                grace_s=grace,
                maximum_concurrent_rpcs=config.max_concurrent,
                admin_token=admin_token,
                announce={
                    "metrics": metrics_address(metrics_host, metrics_port),
                    "db_target": db_target,
                    "loop": loop_name,
                    **({"tls": "on"} if tls else {}),
                    **({"db_tls": "verified"} if db_tls_ca else {}),
                    **config.described(),
                },
                pings=config.pings(),
                max_age=config.max_age(),
                tls=tls,
            )
        finally:
            await cache.close()
            if shared is not None:
                await shared.close()
            await db.close()

    loop.run(run(), loop_name, service=True)


if __name__ == "__main__":
    main()
