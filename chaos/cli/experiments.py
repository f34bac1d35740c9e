"""`chaos run FILE...`: experiments written as files, run on fresh local stacks, gated on their
hypothesis.

Exit codes: 0 every hypothesis held; 1 a tolerance deviated (each named with its measured value);
2 bad input (a malformed file is one line naming the file and the field, before any process
starts); 130 interrupted, after every stack is torn down.

A file with `exec` steps runs the user's commands: refused unless the command line says
`--allow-exec`; `--check` lists them. A file with a `[target]` has its method resolved against
its service before anything starts (reflection or its proto): a problem there is bad input too.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from chaos.cli.context import CONTEXT, err, out, progress_display
from chaos.engine import spec
from chaos.engine.model import Experiment
from chaos.engine.pitfalls import pitfalls
from chaos.engine.runner import raise_on_failures, run_experiment
from chaos.engine.shipped import shipped, title_of
from chaos.report.render import table_for, write_report
from herdlab import loop

Doc = dict[str, Any]


def _param(text: str) -> tuple[str, Any]:
    """`NAME=VALUE`, VALUE read as a TOML value when it is one (`10`, `["full"]`, `true`) and as
    text otherwise (`10s`)."""
    name, sep, raw = text.partition("=")
    if not sep or not name.strip():
        raise click.BadParameter(f"{text!r} is not NAME=VALUE", param_hint="--set")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return name.strip(), value


def _resolve(name: str) -> Path:
    """A path, or the name of a shipped experiment (`retry-storm`); a file that is not there but
    names a shipped experiment (a path from before scenarios were folders) is told its name."""
    path = Path(name)
    found = shipped()
    if path.exists():
        return path
    if name in found:
        return found[name]
    if path.stem in found:
        raise click.BadParameter(
            f"{name}: no such file; the shipped experiment {path.stem!r} is "
            f"{found[path.stem]}: run it by name, `chaos run {path.stem}`",
            param_hint="FILE",
        )
    if path.suffix == ".toml":
        return path
    raise click.BadParameter(
        f"{name}: no such file, and no shipped experiment by that name "
        f"(shipped: {', '.join(found)})",
        param_hint="FILE",
    )


def load_experiments(
    names: tuple[str, ...], params: dict[str, Any], *, smoke: bool, seed: int | None
) -> list[Experiment]:
    """Every experiment checked before any runs; a problem is a UsageError (exit 2)."""
    experiments = []
    for name in names:
        path = _resolve(name)
        try:
            experiment = spec.load(path)
            overrides = {**(experiment.smoke if smoke else {}), **params}
            if seed is not None and "seed" in experiment.params:
                overrides["seed"] = seed
            if overrides:
                experiment = spec.load(path, overrides)
            if seed is not None:
                experiment = experiment.with_seed(seed)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
        experiments.append(experiment)
    return experiments


def _print_checks(doc: Doc) -> bool:
    checks = doc["hypothesis"]["checks"]
    if not checks:
        return True
    table = Table("verdict", "tolerance", "variant", "measured", "reference", title="Hypothesis")
    for c in checks:
        verdict = {True: "[green]held[/]", False: "[red]DEVIATED[/]", None: "not checked"}
        table.add_row(
            verdict[c["held"]],
            c["tolerance"],
            ", ".join(f"{k}={v}" for k, v in c["variant"].items()) or "all",
            json.dumps(c["measured"]),
            "" if c["reference"] is None else json.dumps(c["reference"]),
        )
    out.print(table)
    held = bool(doc["hypothesis"]["held"])
    for c in checks:
        if c["held"] is False:
            variant = ", ".join(f"{k}={v}" for k, v in c["variant"].items()) or "all"
            err.print(
                f"chaos: deviated: {doc['experiment']['file']}: {c['tolerance']} [{variant}]: "
                f"measured {json.dumps(c['measured'])}",
                markup=False,
            )
    return held


@click.command(context_settings=CONTEXT)
@click.argument("files", nargs=-1)
@click.option("--list", "list_only", is_flag=True, help="List the shipped experiments.")
@click.option("--check", "check_only", is_flag=True, help="Validate the files; run nothing.")
@click.option("--smoke", is_flag=True, help="Use each file's [smoke] params: a CI-sized run.")
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="NAME=VALUE",
    help="Override a param of the files' [params] (repeatable), e.g. --set keys=10000.",
)
@click.option("--seed", default=None, type=int, help="Seed every service and the herd.")
@click.option(
    "--allow-exec",
    is_flag=True,
    help="Let the files' exec steps run their commands (--check lists them).",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the result document here (a JSON array for several files).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write a report folder here: report.md, report.html, tables, plots, JSON.",
)
def run(
    files: tuple[str, ...],
    list_only: bool,
    check_only: bool,
    smoke: bool,
    sets: tuple[str, ...],
    seed: int | None,
    allow_exec: bool,
    json_path: Path | None,
    out_dir: Path | None,
) -> None:
    """Run experiment files (or shipped experiments by name); exit 1 if a hypothesis deviated,
    3 if a row failed at run time (the others run, and every document is written)."""
    if list_only:
        table = Table("experiment", "title", "file")
        for name, path in shipped().items():
            table.add_row(name, title_of(path), str(path))
        out.print(table)
        return
    if not files:
        raise click.UsageError("name at least one experiment file (or --list)")
    params = dict(_param(s) for s in sets)
    experiments = load_experiments(files, params, smoke=smoke, seed=seed)
    for experiment in experiments:
        for pitfall in pitfalls(experiment):
            err.print(f"chaos: warning: {experiment.source}: {pitfall}")
    if check_only:
        for experiment in experiments:
            out.print(
                f"ok: {experiment.source}: {experiment.title} "
                f"({len(experiment.combinations())} variant(s), "
                f"{sum(len(e.tolerances) for e in experiment.expect)} tolerance(s))",
                markup=False,
            )
            for command in experiment.commands:
                out.print(f"  would run: {command}", markup=False)
        return
    for experiment in experiments:
        if experiment.commands and not allow_exec:
            raise click.UsageError(
                f"{experiment.source}: runs commands ({'; '.join(experiment.commands)}); "
                "allow them with --allow-exec"
            )
    try:
        experiments = [spec.resolve_target(e) for e in experiments]
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None

    async def all_of(progress: Any) -> list[Doc]:
        # One event loop for every run: grpc.aio is bound to the loop it first ran on.
        return [await run_experiment(e, out.print, progress) for e in experiments]

    with progress_display(True) as progress:
        docs = loop.run(all_of(progress))
    held = True
    for doc in docs:
        out.print(table_for(doc))
        held = _print_checks(doc) and held
    if json_path:
        payload: Any = docs[0] if len(docs) == 1 else docs
        json_path.write_text(json.dumps(payload, indent=2) + "\n")
        out.print(f"wrote {json_path}")
    if out_dir:
        out.print(f"report: {write_report(out_dir, docs) / 'report.md'}")
    raise_on_failures(docs)
    if not held:
        raise click.exceptions.Exit(1)
