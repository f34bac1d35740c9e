"""The scenario commands: `chaos scenario NAME` for every shipped scenario, and `chaos soak`.

Each command is generated from its scenario's folder (`chaos/scenarios/NAME/`): its options are
the typed params of the folder's `experiment.toml` (flag, default, bounds, choices, help), and
the folder's kind, if it has a typed configuration, turns their values into the run's params.
Each scenario runs on its own local stack, prints its story and a table, and can write its result
document (`--json PATH`) and a report folder (`--out DIR`: report.md, report.html, PNGs, JSON).
Ctrl-C at any moment tears the scenario's stack down before the command exits (130).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from chaos.cli.context import CONTEXT, out, progress_display
from chaos.engine import spec
from chaos.engine.herd import ProgressFactory
from chaos.engine.params import Param
from chaos.engine.registry import KINDS, load_all
from chaos.engine.runner import Doc, raise_on_failures, run_scenario, run_shipped
from chaos.engine.shipped import path_of, shipped, title_of, typed_params
from chaos.report.render import table_for, write_report
from herdlab import loop
from herdlab.config import DURATION, format_duration

JSON_HELP = "Write the result document (JSON) here."
OUT_HELP = "Write a report folder here: report.md, report.html, PNG plots, JSON."


def _type(param: Param) -> Any:
    default = param.default
    if param.choices:
        return click.Choice(param.choices)
    if param.is_duration:
        return DURATION
    if isinstance(default, bool):
        return click.BOOL
    if not isinstance(default, int | float):
        return str
    bounded = param.min is not None or param.max is not None
    if isinstance(default, int):
        return click.IntRange(param.min, param.max) if bounded else int
    return click.FloatRange(param.min, param.max) if bounded else float


def option(param: Param) -> click.Option:
    """The option a typed param is: lists as comma-separated text, durations with a unit."""
    decls = [param.option, param.name]
    help_text = param.help or None
    if param.multiple:
        return click.Option(decls, multiple=True, metavar=param.metavar or None, help=help_text)
    if param.auto:
        help_text = f"{param.help.rstrip('.')} [default: {param.auto}]."
        return click.Option(decls, type=_type(param), default=None, help=help_text)
    default = param.default
    if isinstance(default, list):
        default = ",".join(str(v) for v in default)
    return click.Option(
        decls, type=_type(param), default=default, show_default=True, help=help_text
    )


def _value(param: Param, value: Any) -> Any:
    """An option's value as the file's param: durations as text, lists split at commas."""
    if param.is_duration:
        return format_duration(value)
    if param.multiple:
        return list(value)
    if isinstance(param.default, list):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def _command_line(name: str, params: tuple[Param, ...], values: dict[str, Any]) -> str:
    given = [(p, values[p.name]) for p in params if values[p.name] not in (None, ())]
    words = [f"{p.option} {','.join(v) if p.multiple else _value(p, v)}" for p, v in given]
    return " ".join(["chaos scenario", name, *words])


def _prepare(name: str, params: tuple[Param, ...], values: dict[str, Any]) -> Any:
    """The run, checked before anything starts: the kind's typed configuration of the options,
    or the options as the file's params; a problem is a UsageError (exit 2)."""
    load_all()
    configure = KINDS.get(name).configure if name in KINDS else None
    try:
        if configure is not None:
            config = configure(values)
            problems = config.problems()
            if problems:
                raise click.UsageError("; ".join(problems))
            return lambda progress: run_scenario(name, config, out.print, progress)
        chosen = {p.name: _value(p, values[p.name]) for p in params if values[p.name] is not None}
        spec.load(path_of(name), chosen)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    command = _command_line(name, params, values)
    return lambda progress: run_shipped(name, chosen, out.print, progress, command)


def scenario_command(name: str, path: Path, *, report: bool = True) -> click.Command:
    """`chaos scenario NAME`: the typed params of its file as options, then --json (and --out)."""
    params = typed_params(path)

    def callback(json_path: Path | None, out_dir: Path | None = None, **values: Any) -> None:
        runner = _prepare(name, params, values)
        progress: ProgressFactory
        with progress_display(True) as progress:
            doc: Doc = loop.run(runner(progress))
        out.print(table_for(doc))
        if json_path:
            json_path.write_text(json.dumps(doc, indent=2) + "\n")
            out.print(f"wrote {json_path}")
        if out_dir:
            out.print(f"report: {write_report(out_dir, [doc]) / 'report.md'}")
        raise_on_failures([doc])

    files = [
        click.Option(
            ["--json", "json_path"],
            type=click.Path(dir_okay=False, path_type=Path),
            help=JSON_HELP,
        )
    ]
    if report:
        folder = click.Path(file_okay=False, path_type=Path)
        files.append(click.Option(["--out", "out_dir"], type=folder, help=OUT_HELP))
    return click.Command(
        name,
        context_settings=CONTEXT,
        callback=callback,
        params=[*(option(p) for p in params), *files],
        help=f"{title_of(path)} (chaos/scenarios/{path.parent.name}/).",
    )


@click.group(context_settings=CONTEXT, no_args_is_help=True)
def scenario() -> None:
    """Scripted scenarios, each on its own local stack, with a JSON result."""


for _name, _path in shipped().items():
    scenario.add_command(scenario_command(_name, _path))

soak = scenario_command("soak", path_of("soak"), report=False)
