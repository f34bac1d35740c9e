"""`db-service`: runs the slow database (gRPC `Db` and `DbAdmin`, health, reflection, metrics)."""

from __future__ import annotations

import asyncio

import click
from prometheus_client import CollectorRegistry

from db_service.server import Db, DbAdminServicer, DbConfig, DbServicer
from herdlab.auth import token_problem
from herdlab.config import DURATION, PROBABILITY, server_options
from herdlab.grpcutil import Service, serve
from herdlab.metrics import serve_metrics
from protos import admin_pb2, admin_pb2_grpc, db_pb2, db_pb2_grpc

ENV = "HERDLAB_DB"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@server_options(ENV, port=50051, metrics_port=9101)
@click.option(
    "--latency",
    envvar=f"{ENV}_LATENCY",
    default="50ms",
    type=DURATION,
    show_default=True,
    show_envvar=True,
    help="Base latency of one query.",
)
@click.option(
    "--spread",
    envvar=f"{ENV}_SPREAD",
    default="20ms",
    type=DURATION,
    show_default=True,
    show_envvar=True,
    help="Extra latency, uniform in [0, spread].",
)
@click.option(
    "--concurrency",
    envvar=f"{ENV}_CONCURRENCY",
    default=50,
    type=int,
    show_default=True,
    show_envvar=True,
    help="Queries served at once.",
)
@click.option(
    "--queue",
    envvar=f"{ENV}_QUEUE",
    default=500,
    type=int,
    show_default=True,
    show_envvar=True,
    help="Queries that may wait for a slot; more are rejected.",
)
@click.option(
    "--error-rate",
    envvar=f"{ENV}_ERROR_RATE",
    default=0.0,
    type=PROBABILITY,
    show_default=True,
    show_envvar=True,
    help="Probability of an injected UNAVAILABLE.",
)
@click.option(
    "--seed",
    envvar=f"{ENV}_SEED",
    default=None,
    type=int,
    show_envvar=True,
    help="Seed for latency and error draws.",
)
@click.option(
    "--data-version",
    envvar=f"{ENV}_DATA_VERSION",
    default=1,
    type=int,
    show_default=True,
    show_envvar=True,
    help="Version of the data served: every value is a function of (key, version).",
)
@click.option(
    "--record-size",
    envvar=f"{ENV}_RECORD_SIZE",
    default=1_000_000,
    type=int,
    show_default=True,
    show_envvar=True,
    help="Arrivals kept in the exact record.",
)
def main(
    host: str,
    port: int,
    metrics_host: str,
    metrics_port: int,
    grace: float,
    admin_token: str | None,
    latency: float,
    spread: float,
    concurrency: int,
    queue: int,
    error_rate: float,
    seed: int | None,
    data_version: int,
    record_size: int,
) -> None:
    """The lab's deliberately slow database."""
    config = DbConfig(
        latency_s=latency,
        spread_s=spread,
        concurrency=concurrency,
        queue=queue,
        error_rate=error_rate,
        version=data_version,
        seed=seed,
        record_size=record_size,
    )
    problems = config.problems()
    token = token_problem(host, admin_token)
    if token:
        problems.append(token)
    if problems:
        raise click.UsageError("; ".join(problems))
    registry = CollectorRegistry()
    db = Db(config, registry)
    serve_metrics(registry, metrics_host, metrics_port)
    services = [
        Service(
            db_pb2_grpc.add_DbServicer_to_server,
            DbServicer(db),
            db_pb2.DESCRIPTOR.services_by_name["Db"].full_name,
        ),
        Service(
            admin_pb2_grpc.add_DbAdminServicer_to_server,
            DbAdminServicer(db),
            admin_pb2.DESCRIPTOR.services_by_name["DbAdmin"].full_name,
        ),
    ]
    asyncio.run(serve(services, host=host, port=port, grace_s=grace, admin_token=admin_token))


if __name__ == "__main__":
    main()
