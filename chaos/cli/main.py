"""`chaos`: the lab's controller.

Exit codes: 0 done; 1 the lab failed at something it should have done (a service did not come
up), and for `chaos run` a tolerance of the hypothesis deviated; 2 bad input or an action that
cannot apply (unknown service, bad duration, nothing is up); 3 a run could not be carried out
as the experiment asked (it outlived its limit, a step failed at run time); 130 interrupted
(Ctrl-C), 143 terminated (SIGTERM), 129 hung up (SIGHUP), each after cleaning up as Ctrl-C does.
A signal that `chaos`'s parent ignored stays ignored (SIGHUP under `nohup`, SIGINT in a background
job of a non-interactive shell), as users of those expect: SIGTERM still stops it.
Every failure is one line on stderr naming the problem.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.table import Table

from cache_service.__main__ import main as cache_main
from cache_service.settings import CacheSettings
from chaos.cli.context import (
    BACKENDS,
    CONTEXT,
    Lab,
    emit_json,
    err,
    out,
    pass_lab,
)
from chaos.cli.experiments import run
from chaos.cli.herd import herd
from chaos.cli.reports import demo, report
from chaos.cli.scenarios import scenario, soak
from chaos.cli.verbs import COMMANDS
from chaos.cli.watch import watch
from chaos.cli.wire import COMMANDS as WIRE_COMMANDS
from chaos.cli.wire import in_force, settings_text
from chaos.engine.actions.base import SERVICE
from chaos.lab import prometheus
from chaos.lab.backends.base import BackendError
from chaos.lab.backends.local import MAX_REPLICAS, STORES, StackInfo, cache_names
from chaos.lab.extras import MissingExtra
from chaos.lab.state import default_state_dir
from chaos.lab.tls import DEFAULT_KEY as DEFAULT_TLS_KEY
from chaos.lab.tls import KEYS as TLS_KEYS
from db_service.__main__ import main as db_main
from db_service.settings import DbSettings
from herdlab import loop, settings
from herdlab.auth import AdminError
from herdlab.config import PORT, F, env_option
from herdlab.retry import POLICY_NAMES
from herdlab.settings import Settings

# Commands that start their own local stacks, whatever the backend.
LOCAL_ONLY = frozenset({"run", "scenario", "soak", "demo"})


@click.group(context_settings=CONTEXT, no_args_is_help=True)
@click.version_option(package_name="herdlab", prog_name="chaos")
@click.option(
    "--state-dir",
    envvar="HERDLAB_STATE_DIR",
    type=click.Path(path_type=Path),
    default=default_state_dir,
    show_default="$XDG_STATE_HOME/herdlab",
    show_envvar=True,
    help="Where the local stack's state and logs live.",
)
@click.option(
    "--backend",
    envvar="HERDLAB_BACKEND",
    type=click.Choice(BACKENDS),
    default="local",
    show_default=True,
    show_envvar=True,
    help="Where the services run: local processes or Docker containers.",
)
@loop.option
@loop.gc_option
@click.pass_context
def cli(ctx: click.Context, state_dir: Path, backend: str, loop_name: str) -> None:
    """Drive the thundering-herd lab: start it, break it, herd it, measure it."""
    if backend == "docker" and ctx.invoked_subcommand in LOCAL_ONLY:
        raise click.UsageError(
            f"chaos {ctx.invoked_subcommand} runs local stacks only; --backend docker is for the "
            "verbs on the compose stack (kill, pause, outage, ...)"
        )
    # The services this process starts inherit the choice (their --loop reads HERDLAB_LOOP).
    os.environ[loop.ENV] = loop_name
    ctx.obj = Lab(state_dir, backend)


for _command in (*COMMANDS, *WIRE_COMMANDS, herd, run, scenario, soak, demo, report, watch):
    cli.add_command(_command)


# -- stack ----------------------------------------------------------------------------------


def _free_port_option(flag: str, envvar: str, what: str) -> Callable[[F], F]:
    """A port option whose default, 0, takes a free port."""
    return env_option(
        flag, envvar, 0, f"{what} [default: a free port].", type=PORT, show_default=None
    )


@cli.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print the stack as JSON.")
@_free_port_option("--db-port", "HERDLAB_DB_PORT", "DB gRPC port")
@_free_port_option("--db-metrics-port", "HERDLAB_DB_METRICS_PORT", "DB /metrics port")
@_free_port_option("--cache-port", "HERDLAB_CACHE_PORT", "Cache gRPC port")
@_free_port_option("--cache-metrics-port", "HERDLAB_CACHE_METRICS_PORT", "Cache /metrics port")
@click.option(
    "--policy",
    type=click.Choice(POLICY_NAMES),
    default=None,
    help="The cache's retry policy towards the DB [default: the cache's, full].",
)
@click.option(
    "--coalescing/--no-coalescing",
    default=None,
    help="Start the cache with single-flight on or off [default: on].",
)
@click.option(
    "--proxy",
    default="",
    metavar="db,cache",
    help="Put the wire-fault proxy in front of these services (chaos partition, chaos wire).",
)
@click.option(
    "--db-arg",
    "db_args",
    multiple=True,
    metavar="ARG",
    help="Extra argument for db-service (repeatable), e.g. --db-arg=--latency=200ms.",
)
@click.option(
    "--cache-arg",
    "cache_args",
    multiple=True,
    metavar="ARG",
    help="Extra argument for cache-service (repeatable), e.g. --cache-arg=--ttl=5s.",
)
@click.option(
    "--prometheus",
    "with_prometheus",
    is_flag=True,
    help="Also start the prometheus on PATH, scraping the stack with the lab's rules.",
)
@click.option(
    "--replicas",
    default=1,
    type=click.IntRange(1, MAX_REPLICAS),
    show_default=True,
    help="Cache replicas: one is `cache`; more are `cache-1` .. `cache-R`, which the herd "
    "spreads its users over (round_robin).",
)
@click.option(
    "--store",
    type=click.Choice(STORES),
    default="local",
    show_default=True,
    help="Where the cache keeps values: in each replica, or in a redis-server (from PATH, "
    "started here) shared by every replica, which coalesce across replicas with leases.",
)
@click.option(
    "--tls",
    is_flag=True,
    help="Serve the DB and the cache over TLS with a CA and a certificate made now in the state "
    "dir (tls/ca.pem); the cache and every chaos command verify them (needs the tls extra).",
)
@click.option(
    "--tls-key",
    type=click.Choice(tuple(TLS_KEYS)),
    default=DEFAULT_TLS_KEY,
    show_default=True,
    help="With --tls: the server certificate's key; an RSA key makes each handshake cost the "
    "server more (rsa-3072 about 60 times a P-256 signature), as services serving RSA "
    "certificates pay.",
)
@pass_lab
def up(
    lab: Lab,
    as_json: bool,
    db_port: int,
    db_metrics_port: int,
    cache_port: int,
    cache_metrics_port: int,
    policy: str | None,
    coalescing: bool | None,
    proxy: str,
    db_args: tuple[str, ...],
    cache_args: tuple[str, ...],
    with_prometheus: bool,
    replicas: int,
    store: str,
    tls: bool,
    tls_key: str,
) -> None:
    """Start the DB and the cache as local processes on 127.0.0.1; return once both serve.

    Every other setting of the services can also be given by their environment variables
    (see `db-service --help` and `cache-service --help`), which the processes inherit. A
    Prometheus file_sd target file for the stack is written in the state dir; with
    --prometheus a local Prometheus scrapes it.
    """
    if with_prometheus:
        prometheus.binary()  # absent: say so before anything starts
    # The services' own declarations judge what is passed through (flags and their env vars)
    # before anything starts: a bad value is one line and exit 2, not a service that exits.
    _check_args("db-service", db_main, DbSettings, db_args)
    _check_args("cache-service", cache_main, CacheSettings, cache_args)
    extra_cache = list(cache_args)
    if policy:
        extra_cache += ["--policy", policy]
    if coalescing is not None:
        extra_cache.append("--coalescing" if coalescing else "--no-coalescing")
    info = lab.stack.up(
        list(db_args),
        extra_cache,
        db_port=db_port,
        db_metrics_port=db_metrics_port,
        cache_port=cache_port,
        cache_metrics_port=cache_metrics_port,
        proxy=[name for name in proxy.split(",") if name],
        replicas=replicas,
        store=store,
        tls=tls,
        tls_key=tls_key,
    )
    if with_prometheus:
        try:
            prometheus.start(lab.stack.state_dir, lab.stack.start_helper)
        except BaseException:
            lab.stack.down()
            raise
        info = lab.stack.status_info()
    if as_json:
        emit_json(info.to_json())
    else:
        _print_status(info.to_json())


def _check_args(
    program: str, command: click.Command, declared: type[Settings], args: tuple[str, ...]
) -> None:
    """Parses `args` (and the environment) and checks the settings as the service would at
    start; UsageError naming the program and the problem otherwise."""
    asked = [arg for arg in args if arg.split("=")[0] in ("-h", "--help", "--version")]
    if asked:
        raise click.UsageError(f"{program}: {asked[0]} is not a setting to pass")
    try:
        with command.make_context(program, list(args)) as ctx:
            settings.from_options(declared, ctx.params)
    except click.ClickException as exc:
        raise click.UsageError(f"{program}: {exc.format_message()}") from None


@cli.command(context_settings=CONTEXT)
@pass_lab
def down(lab: Lab) -> None:
    """Stop the local stack; no process of the lab is left running."""
    stopped = lab.stack.down()
    out.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@cli.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print the stack as JSON.")
@pass_lab
def status(lab: Lab, as_json: bool) -> None:
    """Show the local stack's services: state, addresses, pids (and the wire proxy's links)."""
    records = lab.stack.records() if lab.backend_name == "local" else None  # read once
    info = lab.stack.status_info(records) if records is not None else None
    services = info.services if info is not None else lab.backend().status()
    doc = (info or StackInfo(services)).to_json()
    if "db" in services and cache_names(services):
        doc["settings"] = loop.run(in_force(lab, records))  # the settings and faults in force
    if as_json:
        emit_json(doc)
    else:
        _print_status(doc)
        for service, link in doc.get("proxy", {}).items():
            out.print(f"{service} through the wire proxy at {link}")
        for service in ("db", "cache"):
            values = doc.get("settings", {}).get(service)
            if values:
                out.print(f"{service}: {settings_text(values)}")
        for fault in doc.get("settings", {}).get("wire", []):
            out.print(f"wire {fault['link']}: {fault['kind']} {fault['stream']} ({fault['name']})")


@cli.command(context_settings=CONTEXT)
@click.argument("service", type=SERVICE)
@click.option(
    "-f", "--follow", is_flag=True, help="Keep printing new lines until the stack is down."
)
@click.option(
    "-n",
    "--lines",
    default=50,
    show_default=True,
    type=click.IntRange(0, 100_000),
    help="How many of the last lines to print first.",
)
@pass_lab
def logs(lab: Lab, service: str, follow: bool, lines: int) -> None:
    """Print a service's log: one logfmt line per start, admin change and drain (of the stack
    that is up, else of the last one)."""
    for line in lab.backend().logs(service, lines=lines, follow=follow):
        click.echo(line)


def _print_status(doc: dict[str, Any]) -> None:
    if not doc["services"]:
        out.print("no lab stack is up (start one with 'chaos up')")
        return
    table = Table("service", "state", "grpc", "metrics", "pid")
    for name, s in doc["services"].items():
        table.add_row(name, s["state"], s["grpc"] or "-", s["metrics"], str(s["pid"] or "-"))
    out.print(table)
    prometheus = doc.get("prometheus")
    if prometheus:
        out.print(f"prometheus targets (file_sd): {prometheus['targets_file']}")
        if prometheus["url"]:
            out.print(f"prometheus: {prometheus['url']}")


# -- entry point ----------------------------------------------------------------------------


def _fail(code: int, message: str) -> NoReturn:
    err.print(f"chaos: error: {' '.join(message.split())}", markup=False, highlight=False)
    sys.exit(code)


# SIGTERM (what `timeout`, systemd and a cancelled CI job send) and SIGHUP (a closed terminal)
# unwind like Ctrl-C: every stack this process started is torn down, then it exits 128 + signal.
_STOPPING = (signal.SIGTERM, signal.SIGHUP)
_received: list[int] = []


def _on_stop_signal(signum: int, frame: object) -> None:
    # Later signals must not cut the teardown short (it is bounded: see LocalStack.down). A
    # handler, not SIG_IGN: an ignored signal would stay ignored in a service restored meanwhile.
    for sig in _STOPPING:
        signal.signal(sig, lambda *_: None)
    _received.append(signum)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    for sig in _STOPPING:
        # A signal the parent ignored stays ignored, as Python leaves SIGINT: `nohup chaos ...`
        # must outlive its terminal, and a background job of a script is not Ctrl-C's to stop.
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, _on_stop_signal)
    try:
        code = cli.main(args=argv, prog_name="chaos", standalone_mode=False)
        # Without standalone mode click returns a command's `Exit(code)` instead of exiting.
        if isinstance(code, int) and code:
            sys.exit(code)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else "")
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        _fail(2 if isinstance(exc, click.UsageError) else exc.exit_code, exc.format_message())
    except (BackendError, MissingExtra) as exc:
        _fail(2, str(exc))
    except (AdminError, OSError) as exc:
        _fail(1, str(exc))
    except (KeyboardInterrupt, click.exceptions.Abort):  # click's Abort is a RuntimeError
        if _received:
            err.print(f"chaos: stopped by {signal.Signals(_received[0]).name}")
            sys.exit(128 + _received[0])
        err.print("chaos: interrupted")
        sys.exit(130)
    except RuntimeError as exc:  # TrialError and what a step raised at run time
        _fail(3, str(exc))
