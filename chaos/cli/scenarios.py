"""The scenario commands (`chaos scenario ...`), `chaos demo` and `chaos report`.

Each scenario runs on its own local stack, prints its story and a table, and can write its
result document (`--json PATH`) and a report folder (`--out DIR`: report.md, report.html, PNGs,
JSON). Ctrl-C at any moment tears the scenario's stack down before the command exits (130).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from chaos.cli.context import CONTEXT, err, out, progress_display
from chaos.engine.herd import ProgressFactory
from chaos.report.render import table_for, write_report
from chaos.scenarios.expiry_herd import ExpiryHerdConfig, run_expiry_herd
from chaos.scenarios.metastable import (
    DEFAULT_CONFIGURATIONS,
    TRIGGERS,
    MetastableConfig,
    parse_configuration,
    run_metastable,
)
from chaos.scenarios.partition import PartitionConfig, run_partition
from chaos.scenarios.reconnect_storm import ReconnectStormConfig, run_reconnect_storm
from chaos.scenarios.replicas import ReplicasConfig, run_replicas
from chaos.scenarios.retry_storm import RetryStormConfig, run_retry_storm
from chaos.scenarios.soak import SoakConfig, run_soak
from chaos.scenarios.stale_outage import StaleOutageConfig, run_stale_outage
from chaos.scenarios.stampede import StampedeConfig, auto_db_latency, run_stampede
from herdlab import loop
from herdlab.config import DURATION
from herdlab.guards import RECOMMENDED, parse_guard_sets
from herdlab.retry import JITTERED, parse_policy_names

Doc = dict[str, Any]
Runner = Callable[[ProgressFactory], Coroutine[Any, Any, Doc]]

JSON_OPTION = click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the result document (JSON) here.",
)
OUT_OPTION = click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write a report folder here: report.md, report.html, PNG plots, JSON.",
)
SEED_OPTION = click.option(
    "--seed", default=42, show_default=True, type=int, help="Seed for jitter and keys."
)


def _policies(text: str) -> tuple[str, ...]:
    try:
        return tuple(parse_policy_names(text))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--policies") from exc


def _check(problems: list[str]) -> None:
    if problems:
        raise click.UsageError("; ".join(problems))


def _run(runner: Runner, json_path: Path | None, out_dir: Path | None) -> Doc:
    """Runs a scenario with a live progress display; prints its table; writes what was asked."""
    with progress_display(True) as progress:
        doc = loop.run(runner(progress))
    out.print(table_for(doc))
    _write(doc, json_path, out_dir)
    return doc


def _write(doc: Doc, json_path: Path | None, out_dir: Path | None) -> None:
    if json_path:
        json_path.write_text(json.dumps(doc, indent=2) + "\n")
        out.print(f"wrote {json_path}")
    if out_dir:
        out.print(f"report: {write_report(out_dir, [doc]) / 'report.md'}")


@click.group(context_settings=CONTEXT, no_args_is_help=True)
def scenario() -> None:
    """Scripted scenarios, each on its own local stack, with a JSON result."""


@scenario.command(context_settings=CONTEXT)
@click.option(
    "--clients",
    default=5,
    type=click.IntRange(1, 100_000),
    show_default=True,
    help="Clients asking at once for one cold key.",
)
@click.option(
    "--db-latency",
    default=None,
    type=DURATION,
    help="The DB's latency; it must outlast the herd's arrival for the key to stay cold "
    "[default: 2 ms per client, at least 2s].",
)
@JSON_OPTION
@OUT_OPTION
def stampede(
    clients: int, db_latency: float | None, json_path: Path | None, out_dir: Path | None
) -> None:
    """The workshop's scenario: a cold key, coalescing off (STAMPEDE) then on (SINGLE_FLIGHT)."""
    latency = db_latency if db_latency is not None else auto_db_latency(clients)
    config = StampedeConfig(
        clients=clients, db_latency_s=latency, deadline_s=max(60.0, latency * 4)
    )
    _check(config.problems())
    _run(lambda progress: run_stampede(config, out.print, progress), json_path, out_dir)


@scenario.command("retry-storm", context_settings=CONTEXT)
@click.option(
    "--policies",
    default=",".join(("exponential", *JITTERED)),
    show_default=True,
    help="The cache's retry policies to compare, one fresh stack each.",
)
@click.option("--keys", default=1000, show_default=True, type=click.IntRange(1, 100_000))
@click.option(
    "--outage", default="10s", show_default=True, type=DURATION, help="How long the DB is down."
)
@click.option(
    "--guards",
    default="none",
    show_default=True,
    help="Guard sets on the cache's calls to the DB to compare, comma-separated; '+' composes "
    f"a set (e.g. none,budget,limit:vegas+breaker,recommended = {RECOMMENDED}).",
)
@click.option(
    "--queue",
    "queues",
    default="fifo",
    show_default=True,
    help="The DB's queue disciplines to compare, comma-separated: fifo, codel, lifo.",
)
@SEED_OPTION
@JSON_OPTION
@OUT_OPTION
def retry_storm(
    policies: str,
    keys: int,
    outage: float,
    guards: str,
    queues: str,
    seed: int,
    json_path: Path | None,
    out_dir: Path | None,
) -> None:
    """Kill the DB under a herd over K keys, restore it, and watch each policy's retry waves."""
    try:
        guard_sets = tuple(parse_guard_sets(guards))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--guards") from exc
    config = RetryStormConfig(
        policies=_policies(policies),
        keys=keys,
        outage_s=outage,
        seed=seed,
        guards=guard_sets,
        queues=tuple(q.strip() for q in queues.split(",") if q.strip()),
    )
    _check(config.problems())
    _run(lambda progress: run_retry_storm(config, out.print, progress), json_path, out_dir)


@scenario.command("reconnect-storm", context_settings=CONTEXT)
@click.option("--users", default=1000, show_default=True, type=click.IntRange(1, 100_000))
@click.option(
    "--channels",
    default=8,
    show_default=True,
    type=click.IntRange(1, 1024),
    help="Connections the herd holds.",
)
@click.option(
    "--outage",
    default="10s",
    show_default=True,
    type=DURATION,
    help="How long the cache is down (gRPC's default backoff retries ~1, 2.6, 5.2, 9.3, 15.8 s "
    "after a loss: 10s lands between two attempts).",
)
@click.option(
    "--policies",
    default="exponential,full",
    show_default=True,
    help="The herd's retry policies: without and with jitter.",
)
@SEED_OPTION
@JSON_OPTION
@OUT_OPTION
def reconnect_storm(
    users: int,
    channels: int,
    outage: float,
    policies: str,
    seed: int,
    json_path: Path | None,
    out_dir: Path | None,
) -> None:
    """Kill and restore the cache under a herd: gRPC's default reconnect backoff vs tuned."""
    config = ReconnectStormConfig(
        users=users, channels=channels, outage_s=outage, policies=_policies(policies), seed=seed
    )
    _check(config.problems())
    _run(lambda progress: run_reconnect_storm(config, out.print, progress), json_path, out_dir)


@scenario.command("partition", context_settings=CONTEXT)
@click.option("--users", default=200, show_default=True, type=click.IntRange(1, 100_000))
@click.option(
    "--channels",
    default=8,
    show_default=True,
    type=click.IntRange(1, 1024),
    help="Connections the herd holds.",
)
@click.option(
    "--for",
    "outage",
    default="10s",
    show_default=True,
    type=DURATION,
    help="How long the cache is partitioned (or killed).",
)
@click.option(
    "--keepalive",
    default="1s",
    show_default=True,
    type=DURATION,
    help="The keepalive variant's ping interval (and ACK timeout); the other variant has none.",
)
@click.option(
    "--faults",
    default="kill,partition",
    show_default=True,
    help="The faults to compare: kill (connections reset), partition (left half-open).",
)
@SEED_OPTION
@JSON_OPTION
@OUT_OPTION
def partition(
    users: int,
    channels: int,
    outage: float,
    keepalive: float,
    faults: str,
    seed: int,
    json_path: Path | None,
    out_dir: Path | None,
) -> None:
    """Partition (or kill) the cache under a herd holding M channels, then heal it; with and
    without keepalive pings."""
    config = PartitionConfig(
        users=users,
        channels=channels,
        outage_s=outage,
        keepalive_s=keepalive,
        keepalive_timeout_s=keepalive,
        faults=tuple(f.strip() for f in faults.split(",") if f.strip()),
        seed=seed,
    )
    _check(config.problems())
    _run(lambda progress: run_partition(config, out.print, progress), json_path, out_dir)


@scenario.command("metastable", context_settings=CONTEXT)
@click.option(
    "--configuration",
    "configurations",
    multiple=True,
    metavar="GUARDS/QUEUE",
    help="A configuration to run, repeatable: the cache's guard set towards the DB and the DB's "
    "queue discipline (fifo, codel, lifo), e.g. none/fifo or 'limit:n=20,queue=0+breaker/fifo' "
    "[default: " + ", ".join(f"{g}/{q}" for g, q in DEFAULT_CONFIGURATIONS) + "].",
)
@click.option(
    "--rate",
    default=160.0,
    show_default=True,
    type=click.FloatRange(1, 1000),
    help="Arrivals per second (the DB serves 200/s).",
)
@click.option(
    "--trigger",
    default="latency",
    show_default=True,
    type=click.Choice(TRIGGERS),
    help="A latency spike on the DB, or the DB killed and restored.",
)
@click.option(
    "--for",
    "trigger_for",
    default="5s",
    show_default=True,
    type=DURATION,
    help="How long the trigger lasts.",
)
@click.option(
    "--after",
    default="60s",
    show_default=True,
    type=DURATION,
    help="How long the load goes on after the trigger is gone.",
)
@SEED_OPTION
@JSON_OPTION
@OUT_OPTION
def metastable(
    configurations: tuple[str, ...],
    rate: float,
    trigger: str,
    trigger_for: float,
    after: float,
    seed: int,
    json_path: Path | None,
    out_dir: Path | None,
) -> None:
    """Load below capacity, a short trigger, then retries keep the DB collapsed; and the cures."""
    try:
        parsed = tuple(parse_configuration(c) for c in configurations)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--configuration") from exc
    config = MetastableConfig(
        configurations=parsed or DEFAULT_CONFIGURATIONS,
        rate_per_s=rate,
        trigger=trigger,
        trigger_s=trigger_for,
        after_s=after,
        seed=seed,
    )
    _check(config.problems())
    _run(lambda progress: run_metastable(config, out.print, progress), json_path, out_dir)


@scenario.command("replicas", context_settings=CONTEXT)
@click.option(
    "--replicas",
    default=4,
    show_default=True,
    type=click.IntRange(2, 16),
    help="Cache replicas the users are spread over (round_robin).",
)
@click.option("--users", default=10_000, show_default=True, type=click.IntRange(1, 100_000))
@click.option(
    "--db-latency",
    default="20s",
    show_default=True,
    type=DURATION,
    help="The DB's latency: the lease holder's fetch is in flight this long (the controller, "
    "busy sending the herd, sees its query seconds late).",
)
@click.option(
    "--lease-timeout",
    default="3s",
    show_default=True,
    type=DURATION,
    help="How long a lease outlives a holder that died.",
)
@JSON_OPTION
@OUT_OPTION
def replicas(
    replicas: int,
    users: int,
    db_latency: float,
    lease_timeout: float,
    json_path: Path | None,
    out_dir: Path | None,
) -> None:
    """R replicas, one cold key: local single-flight only, leases on Redis, and the lease holder
    SIGKILLed mid-fetch (needs redis-server on PATH)."""
    config = ReplicasConfig(replicas, users, db_latency, lease_timeout)
    _check(config.problems())
    _run(lambda progress: run_replicas(config, out.print, progress), json_path, out_dir)


@scenario.command("expiry-herd", context_settings=CONTEXT)
@click.option("--keys", default=100, show_default=True, type=click.IntRange(1, 10_000))
@click.option(
    "--rate",
    default=500.0,
    show_default=True,
    type=click.FloatRange(1, 5000),
    help="Arrivals per second, asking for the keys in turn.",
)
@click.option("--ttl", default="40s", show_default=True, type=DURATION, help="The keys' TTL.")
@click.option(
    "--db-latency",
    default="4s",
    show_default=True,
    type=DURATION,
    help="The DB's latency: the recompute time XFetch spreads its refreshes by.",
)
@click.option(
    "--jitter",
    default=20.0,
    show_default=True,
    type=float,
    help="The jitter row's TTL jitter, in percent.",
)
@click.option("--beta", default=1.0, show_default=True, type=float, help="The XFetch row's beta.")
@click.option(
    "--swr",
    default="5s",
    show_default=True,
    type=DURATION,
    help="The stale-while-revalidate row's bound.",
)
@SEED_OPTION
@JSON_OPTION
@OUT_OPTION
def expiry_herd(
    keys: int,
    rate: float,
    ttl: float,
    db_latency: float,
    jitter: float,
    beta: float,
    swr: float,
    seed: int,
    json_path: Path | None,
    out_dir: Path | None,
) -> None:
    """Warm keys written together expire together: plain TTL, TTL jitter, XFetch and
    stale-while-revalidate, by the DB's arrival peak per 100 ms and per-key concurrency."""
    config = ExpiryHerdConfig(
        keys=keys,
        rate_per_s=rate,
        ttl_s=ttl,
        db_latency_s=db_latency,
        jitter_pct=jitter,
        beta=beta,
        swr_s=swr,
        seed=seed,
    )
    _check(config.problems())
    _run(lambda progress: run_expiry_herd(config, out.print, progress), json_path, out_dir)


@scenario.command("stale-outage", context_settings=CONTEXT)
@click.option("--keys", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option(
    "--rate",
    default=200.0,
    show_default=True,
    type=click.FloatRange(1, 2000),
    help="Arrivals per second.",
)
@click.option(
    "--ttl", default="2s", show_default=True, type=DURATION, help="The keys' TTL (< the outage)."
)
@click.option(
    "--outage", default="10s", show_default=True, type=DURATION, help="How long the DB is down."
)
@click.option(
    "--stale-if-error",
    "stale_if_error",
    default="30s",
    show_default=True,
    type=DURATION,
    help="The bound of the row with stale-if-error (the other row runs without).",
)
@SEED_OPTION
@JSON_OPTION
@OUT_OPTION
def stale_outage(
    keys: int,
    rate: float,
    ttl: float,
    outage: float,
    stale_if_error: float,
    seed: int,
    json_path: Path | None,
    out_dir: Path | None,
) -> None:
    """Warm keys through a DB outage, with and without stale-if-error: availability, stale
    values served and their age."""
    config = StaleOutageConfig(
        keys=keys,
        rate_per_s=rate,
        ttl_s=ttl,
        outage_s=outage,
        stale_if_error_s=stale_if_error,
        seed=seed,
    )
    _check(config.problems())
    _run(lambda progress: run_stale_outage(config, out.print, progress), json_path, out_dir)


@click.command(context_settings=CONTEXT)
@click.option(
    "--cycles",
    default=10,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Fault cycles: DB kill, DB pause, cache pause, cache kill (first half).",
)
@click.option("--seed", default=1, show_default=True, type=int, help="Seed for jitter and keys.")
@JSON_OPTION
def soak(cycles: int, seed: int, json_path: Path | None) -> None:
    """A herd runs while the DB and the cache are killed, paused and restored in turn."""
    config = SoakConfig(cycles=cycles, seed=seed)
    _check(config.problems())
    with progress_display(True) as progress:
        doc = loop.run(run_soak(config, out.print, progress))
    table = Table("soak", "", show_header=False)
    for key in (
        "cycles",
        "sent",
        "ok",
        "errors",
        "lost",
        "wrong_values",
        "stale_values",
        "inflight_after",
        "fds_before",
        "fds_after",
        "rss_before",
        "rss_after",
        "db_dropped",
    ):
        table.add_row(key, json.dumps(doc.get(key)))
    out.print(table)
    if json_path:
        json_path.write_text(json.dumps(doc, indent=2) + "\n")
        out.print(f"wrote {json_path}")


@click.command(context_settings=CONTEXT)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The report folder [default: reports/demo-<date>-<time>].",
)
@click.option("--clients", default=1000, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--keys", default=1000, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--outage", default="10s", show_default=True, type=DURATION)
@click.option("--policies", default="exponential,full", show_default=True)
@click.option(
    "--storm-keys",
    default=3000,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Keys of the third act's storm: full jitter alone, then with the recommended guards.",
)
@SEED_OPTION
def demo(
    out_dir: Path | None,
    clients: int,
    keys: int,
    outage: float,
    policies: str,
    storm_keys: int,
    seed: int,
) -> None:
    """The lab end to end: a stampede; a retry storm per policy; a storm jitter cannot stop,
    then the same storm with the recommended guards; a report folder."""
    stampede_config = StampedeConfig(
        clients=clients, db_latency_s=auto_db_latency(clients), deadline_s=60.0
    )
    storm_config = RetryStormConfig(
        policies=_policies(policies), keys=keys, outage_s=outage, seed=seed
    )
    guarded_config = RetryStormConfig(
        policies=("full",),
        keys=storm_keys,
        outage_s=outage,
        seed=seed,
        guards=("none", "recommended"),
    )
    _check(stampede_config.problems() + storm_config.problems() + guarded_config.problems())
    folder = out_dir or Path("reports") / time.strftime("demo-%Y%m%d-%H%M%S")
    started = time.monotonic()

    async def acts(progress: ProgressFactory) -> list[Doc]:
        # One event loop for the whole demo: grpc.aio is bound to the loop it first ran on.
        err.print("[bold]1/3[/] stampede: coalescing off, then on")
        stampede_doc = await run_stampede(stampede_config, out.print, progress)
        out.print(table_for(stampede_doc))
        err.print(f"[bold]2/3[/] retry storm: {', '.join(storm_config.policies)}")
        storm_doc = await run_retry_storm(storm_config, out.print, progress)
        out.print(table_for(storm_doc))
        err.print(
            f"[bold]3/3[/] stopping the storm: {storm_keys:,} keys, full jitter alone, then with "
            f"the recommended guards ({RECOMMENDED})"
        )
        guarded_doc = await run_retry_storm(guarded_config, out.print, progress)
        out.print(table_for(guarded_doc))
        return [stampede_doc, storm_doc, guarded_doc]

    with progress_display(True) as progress:
        docs = loop.run(acts(progress))
    report_dir = write_report(folder, docs)
    out.print(f"demo done in {time.monotonic() - started:.0f}s; report: {report_dir / 'report.md'}")


@click.command(context_settings=CONTEXT)
@click.argument(
    "results", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path)
)
@click.option(
    "--out",
    "out_dir",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="The report folder to write [default: reports/report-<date>-<time>].",
)
@click.option(
    "--html",
    "html_only",
    is_flag=True,
    help="Print only the path of the folder's self-contained report.html (no tables), e.g. "
    'xdg-open "$(chaos report r.json --html)".',
)
def report(results: tuple[Path, ...], out_dir: Path | None, html_only: bool) -> None:
    """Turn result documents (scenario --json files) into a report folder: report.md and
    report.html (one self-contained page, plots inlined), tables, plots, JSON."""
    docs = []
    for path in results:
        try:
            docs.append(json.loads(path.read_text()))
        except ValueError as exc:
            raise click.BadParameter(f"{path}: not JSON ({exc})", param_hint="RESULTS") from exc
    try:
        folder = write_report(
            out_dir or Path("reports") / time.strftime("report-%Y%m%d-%H%M%S"), docs
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="RESULTS") from exc
    if html_only:
        click.echo(folder / "report.html")
        return
    for doc in docs:
        out.print(table_for(doc))
    out.print(f"report: {folder / 'report.md'} (page: {folder / 'report.html'})")
