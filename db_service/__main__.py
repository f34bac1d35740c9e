"""`db-service`: runs the slow database (gRPC `Db` and `DbAdmin`, health, reflection, metrics)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from prometheus_client import CollectorRegistry

from db_service.server import Db, DbAdminServicer, DbServicer
from db_service.settings import DbSettings
from herdlab import logs, loop, settings
from herdlab.auth import token_problem
from herdlab.chaoslog import chaos_log_service
from herdlab.config import server_options, server_tls
from herdlab.grpcutil import ServerCalls, ServerConnections, Service, serve
from herdlab.metrics import metrics_address, serve_metrics
from protos import admin_pb2, db_pb2

ENV = "HERDLAB_DB"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@server_options("db-service", ENV, port=50051, metrics_port=9101)
@loop.option
@settings.options(DbSettings, ENV)
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
    **values: Any,
) -> None:
    """The lab's deliberately slow database."""
    config = settings.from_options(DbSettings, values)
    token = token_problem(host, admin_token)
    if token:
        raise click.UsageError(token)
    tls = server_tls(tls_cert, tls_key)
    registry = CollectorRegistry()
    ServerCalls(registry)
    ServerConnections(registry)
    db = Db(config, registry)
    serve_metrics(registry, metrics_host, metrics_port)
    services = [
        Service(DbServicer(db), db_pb2.DESCRIPTOR.services_by_name["Db"], registered=True),
        Service(DbAdminServicer(db), admin_pb2.DESCRIPTOR.services_by_name["DbAdmin"]),
        chaos_log_service(registry),
    ]
    logs.setup("db")
    announce = {
        "metrics": metrics_address(metrics_host, metrics_port),
        "loop": loop_name,
        **({"tls": "on"} if tls else {}),
        **config.described(),
    }
    loop.run(
        serve(
            services,
            host=host,
            port=port,
            grace_s=grace,
            admin_token=admin_token,
            announce=announce,
            pings=config.pings(),
            max_age=config.max_age(),
            tls=tls,
        ),
        loop_name,
        service=True,
    )


if __name__ == "__main__":
    main()
