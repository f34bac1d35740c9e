"""The command-line surface users' scripts rely on: every command and its options, read from the
click objects themselves (what `--help` prints), as plain data that can be compared."""

from __future__ import annotations

import json
from typing import Any

import click

from cache_service.__main__ import main as cache_main
from chaos.cli.main import cli
from chaos.wire.__main__ import main as wire_main
from db_service.__main__ import main as db_main

PROGRAMS: dict[str, click.Command] = {
    "chaos": cli,
    "db-service": db_main,
    "cache-service": cache_main,
    "python -m chaos.wire": wire_main,
}


def _param(param: click.Parameter) -> dict[str, Any]:
    doc: dict[str, Any] = {"kind": param.param_type_name, "opts": sorted(param.opts)}
    envvar = getattr(param, "envvar", None)
    if envvar:
        doc["envvar"] = envvar if isinstance(envvar, str) else sorted(envvar)
    if isinstance(param.type, click.Choice):
        doc["choices"] = sorted(str(c) for c in param.type.choices)
    if getattr(param, "is_flag", False):
        doc["flag"] = True
    if param.multiple:
        doc["multiple"] = True
    return doc


def surface() -> dict[str, dict[str, dict[str, Any]]]:
    """{"chaos herd": {"--users": {...}, ...}, ...} for every command of every program."""
    commands: dict[str, dict[str, dict[str, Any]]] = {}

    def walk(path: str, command: click.Command) -> None:
        params = {}
        for param in command.params:
            key = max(param.opts, key=len) if param.opts else str(param.name)
            params[key] = _param(param)
        commands[path] = params
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(f"{path} {name}", sub)

    for name, program in PROGRAMS.items():
        walk(name, program)
    return commands


if __name__ == "__main__":
    print(json.dumps(surface(), indent=1, sort_keys=True))
