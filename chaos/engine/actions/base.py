"""What every action is: its arguments declared once (name, type, bounds, help), parsed from a
timeline's words at check time or from the command line's values, and run against a `Target`.

A `Target` is what faults act on: a trial's stack (`chaos.engine.trial.Trial`) or the live stack
the command line drives (`chaos.cli.live.Live`). An action with a `summary` is also a `chaos`
verb, generated from its declaration by `chaos.cli.verbs`: the same name, arguments, bounds and
messages in both places.

A timeline writes an action's arguments in their declared order (`latency db 300ms 50ms`), or an
option by its command-line spelling (`latency db 300ms --spread 50ms`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import click

from cache_service.settings import CacheSettings
from chaos.lab.admin import Admin
from chaos.lab.backends.base import SERVICE_NAMES, is_service
from db_service.settings import DbSettings

if TYPE_CHECKING:
    from chaos.engine.model import Experiment


class Target(Protocol):
    """The stack an action acts on. Process faults return what is recorded of them."""

    async def kill(self, service: str) -> dict[str, Any]: ...

    async def stop(self, service: str) -> dict[str, Any]:
        """SIGTERM: the service drains and exits (`chaos.lab.backends.base.Backend.stop`)."""
        ...

    async def restore(self, service: str) -> dict[str, Any]: ...

    async def pause(self, service: str) -> dict[str, Any]: ...

    async def resume(self, service: str) -> dict[str, Any]: ...

    async def lease_holder(self) -> str:
        """The cache replica that holds a lease now."""
        ...

    def admin(self) -> AbstractAsyncContextManager[Admin]:
        """Admin clients of the DB and the (first) cache."""
        ...

    def cache_admins(self) -> AsyncIterator[Admin]:
        """Admin clients of the DB and of each cache replica in turn."""
        ...

    async def hold(self, seconds: float, revert: Callable[[], Awaitable[object]]) -> None:
        """A fault set for `seconds` (which its service undoes itself) is held that long where
        the target waits for it (the command line), `revert` undoing it early if stopped."""
        ...

    def note(self, verb: str, service: str, **details: Any) -> None:
        """Records one step of a composite action (an outage's kill and restore)."""
        ...

    async def reconnect_lag(self, up_at: float) -> dict[str, Any]:
        """What is reported of the first request to reach the DB restored at `up_at` (wall-clock
        seconds): the command line waits for it (`reconnect_lag_s`); a trial adds nothing, its
        `reconnect_lag_s` measure reads the DB's record."""
        ...

    def wire_admin(self, link: str) -> str:
        """The wire proxy's admin address, once it is known to stand in front of `link`."""
        ...

    def cut(self, service: str) -> None:
        """`service` is partitioned from now (a trial times it as an outage)."""
        ...

    async def heal(self, service: str) -> dict[str, Any]:
        """Removes the wire faults on `service`'s link (a trial: undoes its last partition or
        kill); returns what is recorded of it."""
        ...

    async def clear_wire(self) -> list[str]:
        """Removes every wire fault, if the stack has a proxy; returns their names."""
        ...

    def states(self) -> dict[str, str]:
        """Each service's state: running, paused or stopped (a stack without a DB and a cache
        is refused)."""
        ...

    def start_settings(self) -> tuple[DbSettings, CacheSettings]:
        """The DB's and the cache's settings as the stack started them."""
        ...


class _Service(click.ParamType):  # type: ignore[type-arg]
    """A lab service's name; whether the running stack has it is the target's to say."""

    name = "SERVICE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if not is_service(str(value)):
            self.fail(f"{value!r} is not one of {SERVICE_NAMES}", param, ctx)
        return str(value)

    def get_metavar(self, param: click.Parameter, ctx: click.Context) -> str:
        return "[db|cache|cache-N|redis]"


SERVICE = _Service()
DB_ONLY = click.Choice(("db",))  # the targets runtime faults work on
MAX_OUTAGE_S = 3600.0


def positive_duration(value: float) -> str | None:
    """A hold time's bounds (an outage, a fault's `--for`)."""
    if not 0 < value <= MAX_OUTAGE_S:
        return f"must be in (0, {MAX_OUTAGE_S:g}s], got {value:g}s"
    return None


@dataclass(frozen=True)
class Arg:
    """One argument of an action: its name (the action's field), how a word becomes its value
    (a click type, so the command line and a timeline read it alike), bounds beyond the type,
    its help, and its command-line spelling (`option`; None: a positional argument)."""

    name: str
    type: click.ParamType  # type: ignore[type-arg]
    help: str = ""
    option: str | None = None
    required: bool = True
    default: Any = None
    check: Callable[[Any], str | None] | None = None
    many: bool = False  # a positional taking every word left (KEY...); an option: repeatable
    flag: bool = False
    show_default: bool = False
    short: str | None = None  # the option's one-letter spelling (`-t`)

    def hint(self) -> str:
        return self.option or self.name.upper()


class ArgError(ValueError):
    """A value out of its argument's bounds; `arg` names the argument."""

    def __init__(self, arg: Arg, message: str) -> None:
        super().__init__(message)
        self.arg = arg


class Action(ABC):
    usage: ClassVar[str]  # e.g. "kill db|cache"
    args: ClassVar[tuple[Arg, ...]] = ()
    summary: ClassVar[str] = ""  # the `chaos` verb's help; "" for timeline-only actions
    needs: ClassVar[str] = "admin"  # what a dry run checks on the live stack: admin or service

    @classmethod
    def parse(cls, args: list[str]) -> Action:
        """The action for these words; ValueError naming what is allowed otherwise."""
        try:
            return cls.build(cls._words(args))
        except (click.BadParameter, ValueError) as exc:
            text = exc.message if isinstance(exc, click.BadParameter) else str(exc)
            raise ValueError(f"usage: {cls.usage}: {text}") from None

    @classmethod
    def _words(cls, words: list[str]) -> dict[str, Any]:
        values: dict[str, Any] = {a.name: () if a.many else a.default for a in cls.args}
        by_option = {o: a for a in cls.args for o in (a.option, a.short) if o}
        # Words without an option fill the arguments in order; an option's argument takes them
        # too unless a positional one follows it (`wire db latency=1s` is `-a latency=1s`, but
        # `exec docker kill api` is the command, not a --timeout).
        given = [a for a in cls.args if not a.flag]
        pending = [
            a
            for index, a in enumerate(given)
            if a.option is None or all(b.option is not None for b in given[index + 1 :])
        ]
        rest = list(words)
        while rest:
            word = rest.pop(0)
            # Once a positional taking every word left has begun, every word is its own (the
            # command of `exec` may have options of its own).
            first = pending[0] if pending else None
            taking = (
                first is not None and first.many and first.option is None and values[first.name]
            )
            arg = None if taking else by_option.get(word)
            if arg is not None:
                if arg.flag:
                    values[arg.name] = True
                    continue
                if not rest:
                    raise ValueError(f"{word} needs a value")
                word = rest.pop(0)
            elif pending:
                arg = pending[0]
            else:
                raise ValueError(f"unexpected {word!r}")
            value = arg.type.convert(word, None, None)
            if arg.many:
                values[arg.name] = (*values[arg.name], value)
            else:
                values[arg.name] = value
                if arg in pending:
                    pending.remove(arg)
        missing = [a.hint() for a in cls.args if a.required and values[a.name] in (None, ())]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        return values

    @classmethod
    def build(cls, values: Mapping[str, Any]) -> Action:
        """The action with these typed values, each checked against its argument's bounds;
        ArgError naming the argument, or ValueError, otherwise."""
        cls.check(values)
        action = cls(**{a.name: values.get(a.name) for a in cls.args})
        action.validate()
        return action

    @classmethod
    def check(cls, values: Mapping[str, Any]) -> None:
        """ArgError naming the first argument whose value is out of its bounds."""
        for arg in cls.args:
            value = values.get(arg.name)
            problem = arg.check(value) if arg.check and value is not None else None
            if problem:
                raise ArgError(arg, problem)

    def validate(self) -> None:
        """Raises ValueError (ArgError naming one argument) if the values do not hold together."""
        return None

    @abstractmethod
    async def run(self, target: Any) -> dict[str, Any]:
        """Does it; returns what the journal records of it."""

    def described(self) -> dict[str, Any]:
        """What the command line echoes of the request before anything is done."""
        return {}

    def recorded(self, described: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
        """What the command line records of a done action: what was asked, then what it did."""
        return described | result

    def acts_on(self) -> str:
        """What the journal names as the action's target."""
        return str(getattr(self, "service", "db"))

    def counted_as(self) -> str:
        """The service the action is counted as acting on (`herdlab_chaos_actions_total`)."""
        return self.acts_on()

    def problem(self, experiment: Experiment, down: set[str]) -> str | None:
        """What this action cannot do in `experiment`, checked before anything starts, with
        `down` the services killed by earlier steps (an action that kills or restores updates
        it). None: nothing."""
        return None

    def said(self) -> str | None:
        """How the run's narration says it was done (None: the action's words as written)."""
        return None


def service_name(service: str) -> str:
    """How narration names a service: the DB, the cache."""
    return "DB" if service == "db" else service


def absent(experiment: Experiment, service: str) -> str | None:
    """Why no row of `experiment` has `service` (e.g. `redis` without the shared store), or
    None when some row has it."""
    stacks = [experiment.stack_for(v) for v in experiment.combinations()]
    if service == "redis" and all(s.store != "redis" for s in stacks):
        return 'no row runs redis; set [stack] store = "redis"'
    if service == "cache" and all(s.replicas > 1 for s in stacks):
        return "with replicas the cache's services are cache-1 .. cache-R"
    if service.startswith("cache-") and all(int(service[6:]) > s.replicas for s in stacks):
        return f"no row has a replica {service}; set [stack] replicas"
    return None


def one_service(args: list[str], usage: str) -> str:
    if len(args) != 1 or not is_service(args[0]):
        raise ValueError(f"usage: {usage}")
    return args[0]


def killed_before(service: str, down: set[str]) -> str | None:
    """The problem of taking `service` down when an earlier step already has (`down`: the
    services the earlier steps left killed, stopped or partitioned), or None."""
    return f"{service} is already killed or stopped by an earlier step" if service in down else None


def brought_back(verb: str, service: str, down: set[str], by: str) -> str | None:
    """The problem of `verb`, which brings `service` back, when no earlier step took it down
    (`by`: what such a step does to it); else None, and `service` is no longer in `down`."""
    if service not in down:
        return f"{verb} {service} needs an earlier step that {by} it"
    down.discard(service)
    return None
