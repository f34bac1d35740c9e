"""`chaos herd`: load on the cache from this process, as a burst or an open loop.

Its options are `HerdSettings`' (`chaos.engine.herd_settings`), the declaration an experiment
file's `[herd]` section reads, so a flag and a key share name, default and bounds; the herd is
built from the parsed settings by `HerdSettings.config`. What is only the command's: the target,
the CA it verifies the cache's TLS against, the herd's own /metrics, --json, how many herd
processes hold the connections (`chaos.engine.herd_fleet`: by default the fewest whose open-files
limits hold them, each raised to its hard limit first), and which flags go together (an open
loop's needs --rate).

With `--call pkg.Service/Method` the herd calls that method of the user's own service at
`--target` (`chaos.engine.herd_call`: types by reflection or `--proto`, requests from the `--data`
template); every problem with the method, the template or the target is one line, exit 2, before
any request is sent. Without `--call`, `--target` is the cache's address as it always was.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import click
from prometheus_client import CollectorRegistry
from rich.table import Table

from chaos.cli.context import CONTEXT, Lab, emit_json, out, pass_lab, progress_display
from chaos.cli.herd_workers import check, herd_on_workers
from chaos.engine.herd import (
    HerdConfig,
    HerdHooks,
    HerdMetrics,
    error_causes,
    replicas_target,
    run_herd,
)
from chaos.engine.herd_call import CallError, resolve
from chaos.engine.herd_fleet import FleetError, per_process, processes_for, run_fleet
from chaos.engine.herd_settings import MAX_PROCESSES, HerdSettings
from chaos.engine.runner import causes_text
from chaos.lab.backends.base import BackendError
from chaos.lab.backends.local import cache_names
from herdlab import loop, settings
from herdlab.config import PORT, env_option
from herdlab.grpcutil import TLS_CA_ENV
from herdlab.limits import raise_open_files
from herdlab.metrics import serve_metrics

# The options of a call to the user's own method (`--call`), which mean nothing without it.
_CALL_OPTIONS = ("data", "proto", "import_paths", "metadata", "expect_fields")
# Settings of an experiment's timeline, not of one herd run from the command line.
# Settings of an experiment's herd only; `processes` is the flag below (a default of its own).
NOT_FLAGS = ("rounds", "processes")
# The open loop's own settings (need --rate) and the burst's (cannot go with it).
_OPEN_LOOP = ("duration_s", "max_in_flight")
_BURST = ("users", "requests", "think_s")


def _cache_target(lab: Lab, target: str | None) -> str:
    if target:
        return target
    services = lab.backend().status()
    caches = cache_names(services)
    if not caches:
        raise BackendError("no target given and no local stack is up; use --target or 'chaos up'")
    if lab.backend_name == "local" and caches == ["cache"]:
        return lab.stack.client_target("cache")  # through the wire proxy when there is one
    return replicas_target([services[name].grpc for name in caches])


def _db_target(lab: Lab, target: str | None) -> str | None:
    """The local stack's DB, where the herd runs against the local stack (no --target)."""
    if target:
        return None
    db = lab.backend().status().get("db")
    return db.grpc if db is not None and db.grpc else None


def _check_processes(config: HerdConfig, processes: int, open_files: int, metrics: int) -> None:
    """More than one herd process: for a burst, each with a connection, without /metrics."""
    if processes == 1:
        return
    if config.open_loop is not None:
        raise click.UsageError(
            f"an open loop runs in one herd process, which holds at most "
            f"{per_process(open_files):,} connections (open files {open_files:,})"
        )
    if processes > config.channels:
        raise click.UsageError(
            f"--processes must be at most the connections ({config.channels:,}), got {processes}"
        )
    if metrics:
        raise click.UsageError("--metrics-port needs one herd process (--processes 1)")


def _check_call(
    ctx: click.Context, call_name: str | None, target: str | None, insecure: bool
) -> None:
    """--call needs a --target; its own options need --call; --insecure is not TLS."""
    if insecure and ctx.get_parameter_source("tls_ca") is click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("--insecure (plaintext) and --tls-ca do not go together")
    if call_name is None:
        for name in _CALL_OPTIONS:
            if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT:
                raise click.UsageError(f"--{name.replace('_', '-').removesuffix('s')} needs --call")
        return
    if not target:
        raise click.UsageError("--call needs --target HOST:PORT, the service to call")


def _codes_text(codes: dict[str, Any]) -> str:
    """`OK 990 (12.0 / 80.1 ms); UNAVAILABLE 10 (...)`."""
    return (
        "; ".join(
            f"{code} {c['count']:,} ({c['latency_s']['p50'] * 1e3:.1f} / "
            f"{c['latency_s']['p99'] * 1e3:.1f} ms)"
            for code, c in codes.items()
        )
        or "none"
    )


def _check_together(ctx: click.Context, values: dict[str, Any]) -> None:
    """An open loop's flags need --rate, and the burst's cannot go with it: an error, not
    silently ignored."""
    flags = {name: spec.flag for name, spec in settings.fields(HerdSettings)}

    def given(name: str) -> bool:
        return ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT

    if values["rate_per_s"] is None:
        for name in _OPEN_LOOP:
            if given(name):
                raise click.UsageError(f"{flags[name]} needs --rate")
        return
    if not given("duration_s"):
        raise click.UsageError("--rate needs --duration")
    for name in _BURST:
        if given(name):
            raise click.UsageError(f"{flags[name]} is for the burst; it cannot go with --rate")


@click.command(context_settings=CONTEXT)
@click.option(
    "--target",
    envvar="HERDLAB_CACHE_TARGET",
    show_envvar=True,
    help="The cache's gRPC address [default: the local stack's cache].",
)
@settings.options(HerdSettings, None, skip=NOT_FLAGS)
@env_option(
    "--metrics-port",
    "HERDLAB_HERD_METRICS_PORT",
    0,
    "Serve the herd's /metrics on PORT while it runs (0: off).",
    type=PORT,
    show_default=None,
)
@env_option(
    "--metrics-host",
    "HERDLAB_HERD_METRICS_HOST",
    "127.0.0.1",
    "Listen address of the herd's /metrics.",
)
@click.option(
    "--tls-ca",
    envvar=TLS_CA_ENV,
    type=click.Path(exists=True, dir_okay=False),
    show_envvar=True,
    help="Reach the cache over TLS, verifying it against this CA (PEM) [default: the local "
    "stack's CA when it runs TLS, else plaintext].",
)
@click.option(
    "--processes",
    type=click.IntRange(1, MAX_PROCESSES),
    help="Herd processes the burst's connections are spread over, released together [default: "
    "the fewest whose open-files limits hold them].",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="Plaintext to the target, even where HERDLAB_TLS_CA or the local stack names a CA.",
)
@click.option(
    "--call",
    "call_name",
    metavar="pkg.Service/Method",
    help="Call this unary or server-streaming method of the service at --target instead of the "
    "cache's Get (its types by server reflection, or from --proto).",
)
@click.option(
    "--data",
    default="{}",
    metavar="JSON",
    help="With --call: each request as JSON, its strings filled per request: {{key}} (from the "
    "key distribution), {{user}}, {{seq}}, {{uuid}}.",
    show_default=True,
)
@click.option(
    "--proto",
    type=click.Path(dir_okay=False),
    help="With --call: the method's .proto file, compiled now (no reflection needed; needs the "
    "proto extra).",
)
@click.option(
    "--import-path",
    "import_paths",
    multiple=True,
    type=click.Path(file_okay=False),
    help="With --proto: where its imports are (repeatable) [default: the file's folder].",
)
@click.option(
    "--metadata",
    multiple=True,
    metavar="K=V",
    help="With --call: a header sent with every request (repeatable).",
)
@click.option(
    "--expect-field",
    "expect_fields",
    multiple=True,
    metavar="PATH=TEMPLATE",
    help="With --call: every reply's field at PATH (dotted) must read TEMPLATE, filled as --data "
    "is (repeatable); without it values are reported unchecked.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_lab
def herd(
    lab: Lab,
    /,
    target: str | None,
    tls_ca: str | None,
    insecure: bool,
    call_name: str | None,
    metrics_port: int,
    metrics_host: str,
    processes: int | None,
    as_json: bool,
    **values: Any,
) -> None:
    """Release N synchronised users on the cache ("everyone hits refresh at 12:00:00"), or, with
    --rate and --duration, send requests on a fixed schedule (open loop); with --call, on any
    method of your own service."""
    ctx = click.get_current_context()
    calling = {name: values.pop(name) for name in _CALL_OPTIONS}
    _check_call(ctx, call_name, target, insecure)
    _check_together(ctx, values)
    herd_settings = settings.from_options(HerdSettings, values)
    # The local stack's CA verifies the local stack only, not a --target elsewhere.
    ca = None if insecure else (tls_ca if tls_ca or target else lab.tls_ca())
    config = replace(herd_settings.config(_cache_target(lab, target)), tls_ca=ca)
    if call_name is not None:
        try:
            call = resolve(
                config.target,
                call_name,
                calling["data"],
                proto=calling["proto"],
                import_paths=calling["import_paths"],
                tls_ca=ca,
                metadata=calling["metadata"],
                expect=calling["expect_fields"],
            )
        except CallError as exc:
            raise click.UsageError(str(exc)) from None
        config = replace(config, call=call)
    if herd_settings.on_locust:
        if call_name is not None:
            raise click.UsageError("--call runs on the asyncio engine (one herd process)")
        check(processes, metrics_port)
        herd_on_workers(herd_settings, config, as_json, _db_target(lab, target))
        return
    soft, hard = raise_open_files()  # every connection is an open file
    processes = processes or processes_for(config.channels, soft)
    if call_name is not None and processes > 1:
        raise click.UsageError("--call runs in one herd process (--processes 1)")
    _check_processes(config, processes, soft, metrics_port)
    if processes > 1:
        try:
            result = run_fleet(config, processes)
        except FleetError as exc:
            raise click.ClickException(str(exc)) from None
    else:
        metrics = None
        if metrics_port:
            registry = CollectorRegistry()
            metrics = HerdMetrics(registry)
            serve_metrics(registry, metrics_host, metrics_port)
        with progress_display(not as_json) as progress:
            result = loop.run(run_herd(config, HerdHooks(progress("herd"), metrics=metrics)))
    policy = herd_settings.policy
    summary = {
        "target": config.target,
        **({"call": config.call.method} if config.call is not None else {}),
        "users": result.users,
        "policy": policy,
        "guards": config.guards,
        **result.summary(),
        "processes": processes,
        "open_files": {"soft": soft, "hard": hard, "connections_per_process": per_process(soft)},
    }
    if as_json:
        emit_json(summary)
        return
    lat = summary["latency_s"]
    connects, all_ready = summary["connect_attempts"], summary["time_to_all_ready_s"]
    table = Table("herd", "", show_header=False)
    rows = [
        ("target", summary["target"]),
        (
            ("users / policy", f"{result.users:,} / {policy}")
            if config.open_loop is None
            else ("policy", policy)
        ),
        ("guards", config.guards),
        ("sent / ok / lost", f"{summary['sent']:,} / {summary['ok']:,} / {summary['lost']}"),
        (
            "errors (first message)",
            causes_text(error_causes(summary)) or "none",
        ),
        (
            ("sources", ", ".join(f"{k} {v:,}" for k, v in summary["sources"].items()) or "none")
            if config.call is None
            else ("call", config.call.method)
        ),
        ("attempts", f"{summary['attempts']:,}"),
        ("channels ready at release", f"{summary['connected_channels']} of {config.channels}"),
        (
            "connect attempts (max per connection)",
            f"{connects['total']:,} ({connects['max_per_connection']})",
        ),
        (
            "all connections READY after",
            "never" if all_ready is None else f"{all_ready * 1e3:.1f} ms",
        ),
        ("herd processes / open files", f"{processes} / {soft:,} of {hard:,}"),
        (
            "latency p50 / p99 / max",
            f"{lat['p50'] * 1e3:.1f} / {lat['p99'] * 1e3:.1f} / {lat['max'] * 1e3:.1f} ms",
        ),
        (
            ("wrong values", str(summary["wrong_values"]))
            if summary.get("values", "checked") == "checked"
            else ("values", "unchecked (no --expect-field)")
        ),
        ("by code (p50 / p99)", _codes_text(summary["codes"])),
    ]
    open_loop = config.open_loop
    if open_loop is not None:
        first = summary["first_bound_hit_s"]
        rows += [
            ("rate / duration", f"{open_loop.rate_per_s:g}/s / {open_loop.duration_s:g}s"),
            (
                "arrivals / sent / skipped",
                f"{summary['arrivals']:,} / {summary['sent']:,} / {summary['skipped']:,}",
            ),
            (
                f"bound {summary['max_in_flight']:,} in flight hit",
                f"first at {first:.3f}s" if first is not None else "no",
            ),
            ("peak in flight", f"{summary['peak_in_flight']:,}"),
            ("max lag / late", f"{summary['max_lag_s'] * 1e3:.1f} ms / {summary['late']:,}"),
        ]
    for label, value in rows:
        table.add_row(label, value)
    out.print(table)
