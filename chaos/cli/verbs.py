"""The chaos verbs, generated from the engine's actions (`chaos.engine.actions`): every action
with a `summary` is a `chaos` verb of the same name, its arguments and options read from the
action's declared arguments, run against the live stack (`chaos.cli.live.Live`).

Process faults go through the chosen backend (local processes or Docker containers): kill,
stop (SIGTERM: a graceful drain), restore, pause, resume, outage, flap. Runtime faults go
through the services' admin RPCs, wherever they run: latency, errors, queue, expire, capacity,
coalescing, freshness. Wire faults go through the local stack's wire proxy: partition, wire
(its options generated from the toxics of `chaos.wire.toxics`), heal; `reset` puts everything
back to the start settings.

Every verb takes `--json` and `--dry-run` (says what it would do, does nothing) and appends what
it did to the journal. A done action is also counted by every service still running
(`herdlab_chaos_actions_total{verb,target}`, for Prometheus; `counted_by` names them).
Durations take unit suffixes: 500ms, 10s, 1m, 1m30s.

`latency`, `errors` and the wire faults take `--for D`: the DB (the proxy) is told to put the old
values back itself after D (so the revert holds even if this process is killed), and the command
stays in the foreground until then; Ctrl-C or SIGTERM puts them back at once (exit 130 or 143).

`outage db` then waits for the restored DB's first request and reports the reconnect lag, from
the restore to it (`reconnect_lag_s`; null with `reconnect_lag_why` when none came within
`reconnect_lag_wait_s`, 30 s, or the caches sent the DB nothing for 1 s).
"""

from __future__ import annotations

import time
from typing import Any

import click

from chaos.cli.context import CONTEXT, Lab
from chaos.cli.live import Live, common, report, stop_as
from chaos.engine.actions.base import Action, Arg, ArgError
from chaos.engine.registry import ACTIONS
from herdlab import loop
from herdlab.registry import load_package


def _param(arg: Arg) -> click.Parameter:
    if arg.option is None:
        return click.Argument(
            [arg.name], type=arg.type, nargs=-1 if arg.many else 1, required=arg.required
        )
    return click.Option(
        [arg.option, *([arg.short] if arg.short else []), arg.name],
        type=None if arg.flag else arg.type,
        is_flag=arg.flag,
        multiple=arg.many,
        required=arg.required,
        default=arg.default,
        show_default=arg.show_default,
        help=arg.help,
    )


def verb(name: str, cls: type[Action]) -> click.Command:
    """The `chaos` verb that runs action `cls` on the live stack."""

    @common
    def command(as_json: bool, dry_run: bool, **values: Any) -> None:
        lab = click.get_current_context().find_object(Lab)
        assert lab is not None
        try:
            action = cls.build(values)
        except ArgError as exc:
            raise click.BadParameter(str(exc), param_hint=exc.arg.hint()) from None
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        started = time.time()
        live = Live(lab)
        target = action.acts_on()
        details = action.described()
        if dry_run:
            live.check(cls.needs, target)
        else:
            details = action.recorded(details, loop.run(action.run(live)))
            if live.stopped is not None:
                lab.journal.append(name, target, "reverted", backend=lab.backend_name, **details)
                stop_as(live.stopped)
        report(lab, name, target, as_json, dry_run, action.counted_as(), started=started, **details)

    params = [_param(arg) for arg in cls.args] + list(
        reversed(getattr(command, "__click_params__", []))
    )
    return click.Command(
        name, context_settings=CONTEXT, callback=command, params=params, help=cls.summary
    )


def _commands() -> tuple[click.Command, ...]:
    load_package("chaos.engine.actions")
    return tuple(verb(name, ACTIONS.get(name)) for name in ACTIONS if ACTIONS.get(name).summary)


COMMANDS = _commands()
