"""The README's settings reference: every setting of the services, the herd and an experiment's
stack, with its flag, experiment key, default, allowed values, environment variable and help,
rendered from the declarations (`herdlab.settings.reference_rows`) and from the services' own
command lines (their server options), so it cannot drift from what the programs accept.

`python -m chaos.cli.settings_reference` rewrites the part of README.md between the markers
`<!-- settings-reference:start -->` and `<!-- settings-reference:end -->`; `--check` only says
whether it is current (exit 1 if not). A test runs the check.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from cache_service.__main__ import ENV as CACHE_ENV
from cache_service.__main__ import main as cache_main
from cache_service.settings import CacheSettings
from chaos.cli.herd import NOT_FLAGS
from chaos.engine.herd_settings import HerdSettings
from chaos.engine.stack_settings import StackSettings
from chaos.wire.settings import WireSettings
from db_service.__main__ import ENV as DB_ENV
from db_service.__main__ import main as db_main
from db_service.settings import DbSettings
from herdlab.settings import REFERENCE_COLUMNS, fields, reference_rows

README = Path(__file__).resolve().parents[2] / "README.md"
START = "<!-- settings-reference:start -->"
END = "<!-- settings-reference:end -->"
COMMAND = "python -m chaos.cli.settings_reference"
SERVER_COLUMNS = ("flag", "default", "allowed", "env var", "help")


def _table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return [line(columns), line(["---"] * len(columns)), *(line(row) for row in rows)]


def _code(text: str) -> str:
    """`text` as code; `-` (nothing there) as it is, empty text as `""`."""
    if text == "-":
        return text
    return f"`{text}`" if text else '`""`'


def _setting_rows(rows: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """Flags, keys, defaults and variables as code; allowed values and help as prose."""
    return [
        (
            " / ".join(map(_code, flag.split(" / "))),
            _code(key),
            _code(default),
            allowed,
            _code(env),
            help,
        )
        for flag, key, default, allowed, env, help in rows
    ]


def _allowed(param: click.Option) -> str:
    if isinstance(param.type, click.IntRange):
        return f"in {param.type.min}..{param.type.max}"
    if isinstance(param.type, click.Choice):
        return "one of " + ", ".join(map(str, param.type.choices))
    return "a duration" if param.type.name == "duration" else "text"


def _server_options(command: click.Command, settings: type[Any]) -> dict[str, click.Option]:
    """The options of a service's command that are not its settings (listening, the loop)."""
    declared = {name for name, _ in fields(settings)}
    return {
        param.name: param
        for param in command.params
        if isinstance(param, click.Option)
        and not param.is_eager  # --help, --version
        and param.name is not None
        and param.name not in declared
    }


def _per_service(values: dict[str, str]) -> str:
    """One value when every service has the same, else each service's."""
    if len(set(values.values())) == 1:
        return _code(next(iter(values.values())))
    return ", ".join(f"{_code(value)} ({service})" for service, value in values.items())


def _server_rows() -> list[tuple[str, ...]]:
    """Both services' server options, one row each; where they differ, each service's value."""
    services = {
        "db": _server_options(db_main, DbSettings),
        "cache": _server_options(cache_main, CacheSettings),
    }
    names = list(dict.fromkeys(name for options in services.values() for name in options))
    rows: list[tuple[str, ...]] = []
    for name in names:
        having = {service: opts[name] for service, opts in services.items() if name in opts}
        first = next(iter(having.values()))
        only = "" if len(having) == len(services) else f"{'-'.join(having)}-service only: "
        defaults = {s: "none" if o.default is None else str(o.default) for s, o in having.items()}
        rows.append(
            (
                " / ".join(f"`{opt}`" for opt in first.opts),
                _per_service(defaults),
                _allowed(first),
                _per_service({s: str(o.envvar) for s, o in having.items()}),
                only + (first.help or ""),
            )
        )
    return rows


def render() -> str:
    """The reference, as it stands between the README's markers."""
    sections: list[tuple[str, str, Sequence[str], Sequence[Sequence[str]]]] = [
        (
            "db-service",
            f"`db-service` flags, `{DB_ENV}_*` variables, the `[stack.db]` keys of an experiment.",
            REFERENCE_COLUMNS,
            _setting_rows(reference_rows(DbSettings, DB_ENV)),
        ),
        (
            "cache-service",
            f"`cache-service` flags, `{CACHE_ENV}_*` variables, the `[stack.cache]` keys of an "
            "experiment.",
            REFERENCE_COLUMNS,
            _setting_rows(reference_rows(CacheSettings, CACHE_ENV)),
        ),
        (
            "Both services' server options",
            "How `db-service` and `cache-service` listen and run (`chaos up` chooses the ports "
            "of the processes it starts); not experiment keys.",
            SERVER_COLUMNS,
            _server_rows(),
        ),
        (
            "The herd",
            "`chaos herd` flags and the `[herd]` keys of an experiment; no environment variables.",
            REFERENCE_COLUMNS,
            _setting_rows(reference_rows(HerdSettings, None, skip=NOT_FLAGS)),
        ),
        (
            "An experiment's stack",
            "The `[stack]` keys of an experiment (`proxy` and `fault` also in `[stack.wire]`); "
            "`chaos up --replicas`, `--store` and `--proxy` start such a stack by hand.",
            REFERENCE_COLUMNS,
            _setting_rows(
                reference_rows(StackSettings, None, flags=False)
                + reference_rows(WireSettings, None, flags=False)
            ),
        ),
    ]
    lines = [START, f"<!-- generated by `{COMMAND}` from the declarations: do not edit -->", ""]
    for title, about, columns, rows in sections:
        lines += [f"### {title}", "", about, "", *_table(columns, rows), ""]
    return "\n".join([*lines, END])


def updated(text: str) -> str:
    """`text` (the README) with its reference rendered anew."""
    head, start, rest = text.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise ValueError(f"README.md has no {START} ... {END} markers")
    return head + render() + tail


@click.command()
@click.option("--check", is_flag=True, help="Only say whether README.md is current (exit 1).")
def main(check: bool) -> None:
    """Rewrite README.md's settings reference from the declarations."""
    text = README.read_text()
    new = updated(text)
    if check:
        if new != text:
            click.echo(f"README.md's settings reference is stale; run: {COMMAND}", err=True)
            sys.exit(1)
        return
    if new != text:
        README.write_text(new)


if __name__ == "__main__":
    main()
