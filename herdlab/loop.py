"""Which asyncio event loop a lab process runs on: the standard library's, or uvloop's.

Every process of the lab takes `--loop uvloop|asyncio` (environment `HERDLAB_LOOP`): the
services as a flag, `chaos` before its command (`chaos --loop uvloop scenario stampede`), which
also hands the choice to every service it starts through the environment. Result documents
record the loop (`provenance.event_loop`).

uvloop (libuv under asyncio's interface) is the default, chosen by measurement (BENCHMARKS.md,
`python -m benchmarks --sections hit_path,sharpness`: interleaved rounds of every server on each
loop): the cache answers 5-11% more hits a second on it, the bare server 5-16% more, and a
10,000-client stampede reaches the DB in 0.92x the time. A loop that cannot be used is one clear
error, never a silent fallback, so a measurement always says what it measured.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click

NAMES = ("uvloop", "asyncio")
DEFAULT = "uvloop"
ENV = "HERDLAB_LOOP"

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def problem(name: str) -> str | None:
    """Why the loop `name` cannot be used here, or None."""
    if name not in NAMES:
        return f"unknown event loop {name!r}; choose from {', '.join(NAMES)}"
    if name == "uvloop" and importlib.util.find_spec("uvloop") is None:
        return "--loop uvloop needs uvloop (a dependency of herdlab): pip install uvloop"
    return None


def chosen() -> str:
    """The loop this process was asked for: `HERDLAB_LOOP`, else the default."""
    return os.environ.get(ENV) or DEFAULT


def run(main: Coroutine[Any, Any, T], name: str | None = None) -> T:
    """`asyncio.run(main)` on the loop `name` (default: `chosen()`), checked with `problem`."""
    name = name or chosen()
    found = problem(name)
    if found:
        main.close()
        raise ValueError(found)
    if name == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)


def option(command: F) -> F:
    """`--loop`, checked at parse time (a missing uvloop is a usage error, exit 2)."""

    def check(ctx: click.Context, param: click.Parameter, value: str) -> str:
        found = problem(value)
        if found:
            raise click.BadParameter(found, ctx, param)
        return value

    return click.option(
        "--loop",
        "loop_name",
        envvar=ENV,
        default=DEFAULT,
        show_default=True,
        show_envvar=True,
        type=click.Choice(NAMES),
        callback=check,
        help="The asyncio event loop this process runs on.",
    )(command)
