"""`chaos demo` (the lab end to end, into a report folder) and `chaos report` (result documents
into a report folder)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from chaos.cli.context import CONTEXT, err, out, progress_display
from chaos.engine.herd import ProgressFactory
from chaos.engine.runner import Doc, raise_on_failures, run_scenario
from chaos.report.render import table_for, write_report
from chaos.scenarios import retry_storm, stampede
from chaos.scenarios.retry_storm import RetryStormConfig
from chaos.scenarios.stampede import StampedeConfig, auto_db_latency
from herdlab import loop
from herdlab.config import DURATION
from herdlab.guards import RECOMMENDED
from herdlab.retry import parse_policy_names


def _policies(text: str) -> tuple[str, ...]:
    try:
        return tuple(parse_policy_names(text))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--policies") from exc


def _check(problems: list[str]) -> None:
    if problems:
        raise click.UsageError("; ".join(problems))


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
@click.option("--seed", default=42, show_default=True, type=int, help="Seed for jitter and keys.")
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
        stampede_doc = await run_scenario(stampede.SCENARIO, stampede_config, out.print, progress)
        out.print(table_for(stampede_doc))
        err.print(f"[bold]2/3[/] retry storm: {', '.join(storm_config.policies)}")
        storm_doc = await run_scenario(retry_storm.SCENARIO, storm_config, out.print, progress)
        out.print(table_for(storm_doc))
        err.print(
            f"[bold]3/3[/] stopping the storm: {storm_keys:,} keys, full jitter alone, then with "
            f"the recommended guards ({RECOMMENDED})"
        )
        guarded_doc = await run_scenario(retry_storm.SCENARIO, guarded_config, out.print, progress)
        out.print(table_for(guarded_doc))
        return [stampede_doc, storm_doc, guarded_doc]

    with progress_display(True) as progress:
        docs = loop.run(acts(progress))
    report_dir = write_report(folder, docs)
    out.print(f"demo done in {time.monotonic() - started:.0f}s; report: {report_dir / 'report.md'}")
    raise_on_failures(docs)


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
