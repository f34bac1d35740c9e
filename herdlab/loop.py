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

The lab's own processes (the controller, the wire proxy, the herd's processes) also take `--gc
tuned|cpython` (environment `HERDLAB_GC`, handed on the same way; `provenance.gc`): how their
cyclic garbage collector runs. `tuned`, the default, freezes what the process built before its loop
starts (modules, classes, settings: never garbage, never walked again) and collects the youngest
generation every `GC_YOUNG` container allocations instead of CPython's 700; the older generations
keep CPython's ratios, so full collections still come and garbage in reference cycles is still
freed. The services (the cache, the DB) always run CPython's own: they are what the lab measures,
as a user would run them. Why: a process holding thousands of connections walks its heap again and
again through a reconnect storm. Sampled with py-spy, the proxy's loop thread in
reconnect-at-scale's kill/pending row at 9,000 connections was in `gc_collect_main` in 35% of its
samples; with `tuned` the proxy spent about three quarters of the CPU per connection it accepted
(README, "The garbage collector in a storm": the commands, the pairs of runs, and what it did to
the row's time).
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click

NAMES = ("uvloop", "asyncio")
DEFAULT = "uvloop"
ENV = "HERDLAB_LOOP"
GC_MODES = ("tuned", "cpython")
GC_DEFAULT = "tuned"
GC_ENV = "HERDLAB_GC"
GC_YOUNG = 50_000  # container allocations between collections of the youngest generation

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


def gc_mode() -> str:
    """How this process's garbage collector runs: `HERDLAB_GC`, else the default."""
    return os.environ.get(GC_ENV) or GC_DEFAULT


def _tune_gc(mode: str) -> None:
    """Tunes the collector once per process (a second loop in it keeps the first's setting).
    Frozen without a collection first: after the lab's imports a few dozen objects are garbage
    (33 in the controller), kept for good, where a collection would add 36 ms to every start."""
    if mode == "tuned" and gc.get_threshold()[0] != GC_YOUNG:
        gc.freeze()
        _, middle, oldest = gc.get_threshold()
        gc.set_threshold(GC_YOUNG, middle, oldest)


def run(main: Coroutine[Any, Any, T], name: str | None = None, *, service: bool = False) -> T:
    """`asyncio.run(main)` on the loop `name` (default: `chosen()`), checked with `problem`; the
    garbage collector as `gc_mode()` says, but in a `service` (the system under test) always
    CPython's own."""
    name = name or chosen()
    found = problem(name)
    mode = "cpython" if service else gc_mode()
    if not found and mode not in GC_MODES:
        found = f"unknown {GC_ENV} {mode!r}; choose from {', '.join(GC_MODES)}"
    if found:
        main.close()
        raise ValueError(found)
    _tune_gc(mode)
    if name == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)


def _choice(env: str, default: str, choices: tuple[str, ...]) -> dict[str, Any]:
    """What this module's process-wide choices have in common: one of `choices`, from `env`
    too, shown with its default and its variable."""
    return {
        "envvar": env,
        "default": default,
        "show_default": True,
        "show_envvar": True,
        "type": click.Choice(choices),
    }


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
        **_choice(ENV, DEFAULT, NAMES),
        callback=check,
        help="The asyncio event loop this process runs on.",
    )(command)


def gc_option(command: F) -> F:
    """`--gc` of a lab instrument (the controller, the wire proxy), which it and what it starts
    read from `HERDLAB_GC`."""

    def keep(ctx: click.Context, param: click.Parameter, value: str) -> str:
        os.environ[GC_ENV] = value
        return value

    return click.option(
        "--gc",
        **_choice(GC_ENV, GC_DEFAULT, GC_MODES),
        expose_value=False,
        callback=keep,
        help="How the garbage collector of the lab's own processes (this one, the wire proxy, "
        f"the herd's) runs: tuned (startup frozen, youngest generation every {GC_YOUNG:,} "
        "allocations) or CPython's own. The services always run CPython's.",
    )(command)
