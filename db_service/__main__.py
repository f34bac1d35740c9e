"""`db-service`: runs the slow database (gRPC `Db` and `DbAdmin`, health, reflection, metrics)."""

from __future__ import annotations

import asyncio
from typing import Any

import click
from prometheus_client import CollectorRegistry

from db_service.server import Db, DbAdminServicer, DbServicer
from db_service.settings import DbSettings
from herdlab import settings
from herdlab.auth import token_problem
from herdlab.chaoslog import chaos_log_service
from herdlab.config import server_options
from herdlab.grpcutil import Service, serve
from herdlab.metrics import serve_metrics
from protos import admin_pb2, admin_pb2_grpc, db_pb2, db_pb2_grpc

ENV = "HERDLAB_DB"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@server_options(ENV, port=50051, metrics_port=9101)
@settings.options(DbSettings, ENV)
def main(
    host: str,
    port: int,
    metrics_host: str,
    metrics_port: int,
    grace: float,
    admin_token: str | None,
    **values: Any,
) -> None:
    """The lab's deliberately slow database."""
    config = settings.from_options(DbSettings, values)
    token = token_problem(host, admin_token)
    if token:
        raise click.UsageError(token)
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
        chaos_log_service(registry),
    ]
    asyncio.run(serve(services, host=host, port=port, grace_s=grace, admin_token=admin_token))


if __name__ == "__main__":
    main()
