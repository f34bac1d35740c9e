"""Typed settings: one declaration per setting, read by every place that needs it.

A service's settings are a frozen dataclass whose fields each carry a `Setting` (its key, its
kind, its bounds and its help). From that one declaration come:

- the service's command-line options and environment variables (`options`), so `db-service
  --help` and the bounds it enforces cannot drift apart;
- validation (`problems`): each bound is written once, here, and every message names the key and
  the allowed range in the same units the user writes;
- the argv that starts a service with those settings (`to_argv`), durations always as `<n>ms`;
- parsing of experiment files and sweeps (`parse_value`, `with_values`), where a value is the
  same text a user would type on the command line (`"100ms"`, `20`, `"full"`);
- the rows of the README's settings reference (`reference_rows`; the tables are written by
  `chaos.cli.settings_reference`).

No library fitted: click and pydantic each cover one side (options or validation), and the lab
needs the same declaration to produce both, plus argv for processes it starts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import click

from herdlab.config import DURATION, PROBABILITY, format_duration, parse_duration
from herdlab.grpcutil import MaxAge, PingPolicy
from herdlab.guards import guard_set_spec, guard_texts, parse_guard_set

Kind = Literal[
    "duration", "int", "float", "probability", "bool", "choice", "text", "seed", "guards"
]
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Setting:
    """How one setting is written, bounded and explained. `key` is the name in experiment files
    and, with `-` for `_`, the command-line flag (`retry_cap` -> `--retry-cap`)."""

    key: str
    kind: Kind
    help: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    # A `bool` setting's flag pair, e.g. ("--coalescing", "--no-coalescing").
    negative: str | None = None
    # The flag when it is not the key's (a `guards` set is given as repeated `--guard`).
    flag_name: str | None = None
    # How text is read when the kind's own syntax is not all a user may write (a rate as
    # `200/s`): the flag's value and a text value in a file. ValueError naming the problem.
    read: Callable[[str], Any] | None = None
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return self.flag_name or "--" + self.key.replace("_", "-")

    @property
    def label(self) -> str:
        return self.key.replace("_", " ")

    def allowed(self, *, readable: bool = False) -> str:
        """The allowed values, in the units a user writes them (`readable`: durations as a
        reader takes them in, `24h` rather than `86400000ms`)."""
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "bool":
            return "true or false"
        if self.kind == "guards":
            return "a guard set such as none, budget or limit:n=20+breaker, or a list of guards"
        if self.kind in ("seed", "text") or self.lo is None or self.hi is None:
            fallback = {"seed": "an integer", "text": "text", "duration": "a duration"}
            return fallback.get(self.kind, "a number")
        if self.kind == "duration":
            shown = readable_duration if readable else format_duration
            return f"in [{shown(self.lo)}, {shown(self.hi)}]"
        if self.kind == "int":
            return f"in {int(self.lo)}..{int(self.hi)}"
        return f"in [{self.lo:g}, {self.hi:g}]"

    def problem(self, value: Any) -> str | None:
        """What is wrong with `value` (already parsed), or None."""
        if self.kind == "choice" and value not in self.choices:
            return f"{self.label} must be {self.allowed()}, got {value!r}"
        if self.kind == "guards":
            try:
                parse_guard_set(value)
            except ValueError as exc:
                return str(exc)
            return None
        if self.lo is None or self.hi is None or value is None:
            return None
        if not self.lo <= value <= self.hi:
            shown = format_duration(value) if self.kind == "duration" else str(value)
            return f"{self.label} must be {self.allowed()}, got {shown}"
        return None

    def parse(self, raw: Any) -> Any:
        """`raw` as a user wrote it (text or a TOML value) -> the typed value; ValueError if it
        is not of this kind. Bounds are checked by `problem`."""
        if self.read is not None and isinstance(raw, str):
            return self.read(raw)
        if self.kind == "guards" and isinstance(raw, list):
            if not all(isinstance(item, str) for item in raw):
                raise ValueError(f"{self.key} must be a guard set or a list of guards, got {raw!r}")
            return guard_set_spec(raw)
        if self.kind == "duration":
            if isinstance(raw, str):
                return parse_duration(raw)
            raise ValueError(f'{self.key} must be a duration with a unit, e.g. "100ms"')
        if self.kind in ("int", "seed"):
            if isinstance(raw, bool) or not isinstance(raw, int):
                raise ValueError(f"{self.key} must be an integer, got {raw!r}")
            return raw
        if self.kind in ("float", "probability"):
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                raise ValueError(f"{self.key} must be a number, got {raw!r}")
            return float(raw)
        if self.kind == "bool":
            if not isinstance(raw, bool):
                raise ValueError(f"{self.key} must be true or false, got {raw!r}")
            return raw
        if not isinstance(raw, str):
            raise ValueError(f"{self.key} must be text, got {raw!r}")
        return raw

    def text(self, value: Any) -> str:
        """`value` as a log line or a table shows it (durations as the command line writes them)."""
        if value is None:
            return "none"
        if self.kind == "duration":
            return format_duration(value)
        if self.kind in ("float", "probability"):
            return f"{value:g}"
        if self.kind == "bool":
            return "true" if value else "false"
        return str(value)

    def argv(self, value: Any) -> list[str]:
        if self.kind == "guards":
            return [part for guard in guard_texts(value) for part in (self.flag, guard)]
        if self.kind == "bool":
            return [self.flag if value else (self.negative or f"--no-{self.flag[2:]}")]
        if value is None:
            return []
        if self.kind == "duration":
            return [self.flag, format_duration(value)]
        if self.kind in ("float", "probability"):
            return [self.flag, f"{value:g}"]
        return [self.flag, str(value)]


def readable_duration(seconds: float) -> str:
    """A duration as a reader takes it in: whole hours in `h`, else `format_duration`'s short
    form (`2s`, `5m`, `500ms`)."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    return format_duration(seconds, short=True)


def setting(default: Any, key: str, kind: Kind, help: str, **bounds: Any) -> Any:
    """A dataclass field declared with its `Setting`."""
    return dataclasses.field(
        default=default, metadata={"setting": Setting(key, kind, help, **bounds)}
    )


def fields(cls_or_obj: Any) -> Iterator[tuple[str, Setting]]:
    """(attribute name, Setting) of every declared setting, in declaration order."""
    for f in dataclasses.fields(cls_or_obj):
        spec = f.metadata.get("setting")
        if spec is not None:
            yield f.name, spec


def by_key(cls_or_obj: Any) -> dict[str, tuple[str, Setting]]:
    return {spec.key: (name, spec) for name, spec in fields(cls_or_obj)}


REFERENCE_COLUMNS = ("flag", "experiment key", "default", "allowed", "env var", "help")


def reference_rows(
    cls: type[Any], env_prefix: str | None, *, flags: bool = True, skip: Collection[str] = ()
) -> list[tuple[str, ...]]:
    """One row of `REFERENCE_COLUMNS` per setting of `cls`, as `options(cls, env_prefix,
    skip=skip)` makes its flags (`flags=False`: a section with none, such as `[stack]`); a
    setting without a flag or an environment variable has `-` there."""
    default = cls()
    rows: list[tuple[str, ...]] = []
    for name, spec in fields(cls):
        value = getattr(default, name)
        if spec.kind == "bool":
            flag = f"{spec.flag} / {spec.negative or '--no-' + spec.flag[2:]}"
        else:
            flag = spec.flag
        duration = spec.kind == "duration" and value is not None
        shown = readable_duration(value) if duration else spec.text(value)
        rows.append(
            (
                flag if flags and name not in skip else "-",
                spec.key,
                shown,
                spec.allowed(readable=True),
                f"{env_prefix}_{spec.key.upper()}" if env_prefix and name not in skip else "-",
                spec.help,
            )
        )
    return rows


class Settings:
    """Base of a service's settings dataclass (frozen, every field a `setting`)."""

    def problems(self) -> list[str]:
        """Every bound broken, one message each. Subclasses add checks that relate settings."""
        found = []
        for name, spec in fields(self):
            problem = spec.problem(getattr(self, name))
            if problem:
                found.append(problem)
        return found

    def described(self) -> dict[str, str]:
        """{key: value as text} of every setting, in declaration order."""
        return {spec.key: spec.text(getattr(self, name)) for name, spec in fields(self)}

    def to_argv(self, *, changed_only: bool = False) -> list[str]:
        """The flags that start a service with these settings (all, or those that differ from
        the defaults)."""
        default = type(self)() if changed_only else None
        argv: list[str] = []
        for name, spec in fields(self):
            value = getattr(self, name)
            if default is not None and getattr(default, name) == value:
                continue
            argv += spec.argv(value)
        return argv


SettingsT = TypeVar("SettingsT", bound=Settings)


def with_values(settings: SettingsT, values: Mapping[str, Any], *, where: str) -> SettingsT:
    """A copy of `settings` with `values` ({key: raw value}) applied and checked. Raises
    ValueError with one line naming `where` (e.g. "stack.db"), the key and what is allowed."""
    known = by_key(settings)
    changes: dict[str, Any] = {}
    for key, raw in values.items():
        if key not in known:
            raise ValueError(f"{where}: unknown setting {key!r}; known: {', '.join(sorted(known))}")
        name, spec = known[key]
        try:
            value = spec.parse(raw)
        except ValueError as exc:
            raise ValueError(f"{where}.{key}: {exc}") from None
        problem = spec.problem(value)
        if problem:
            raise ValueError(f"{where}.{key}: {problem}")
        changes[name] = value
    changed: SettingsT = dataclasses.replace(settings, **changes)  # type: ignore[type-var]
    return changed


class _ReadType(click.ParamType):  # type: ignore[type-arg]
    """A flag whose text a `Setting.read` reads."""

    def __init__(self, spec: Setting) -> None:
        self.name = spec.kind
        self._read = spec.read

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if self._read is None or not isinstance(value, str):
            return value
        try:
            return self._read(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def options(
    cls: type[Any], env_prefix: str | None, *, skip: Collection[str] = ()
) -> Callable[[F], F]:
    """Click options for every setting of `cls` but those named in `skip` (attribute names),
    each also read from `{env_prefix}_{KEY}` when there is a prefix. Values are validated by
    `from_options` (the bounds live in the `Setting`, not here)."""
    default = cls()

    def decorate(command: F) -> F:
        for name, spec in reversed(list(fields(cls))):
            if name in skip:
                continue
            value = getattr(default, name)
            common: dict[str, Any] = {"help": spec.help, "show_default": value is not None}
            if env_prefix is not None:
                common |= {"envvar": f"{env_prefix}_{spec.key.upper()}", "show_envvar": True}
            if spec.metavar is not None:
                common["metavar"] = spec.metavar
            if spec.kind == "guards":
                command = click.option(
                    spec.flag,
                    name,
                    multiple=True,
                    metavar="NAME[:k=v,...]",
                    **{**common, "show_default": False},
                )(command)
                continue
            if spec.kind == "bool":
                negative = spec.negative or f"--no-{spec.flag[2:]}"
                command = click.option(f"{spec.flag}/{negative}", name, default=value, **common)(
                    command
                )
                continue
            param_type: Any = (
                _ReadType(spec)
                if spec.read is not None
                else {
                    "duration": DURATION,
                    "probability": PROBABILITY,
                    "int": int,
                    "seed": int,
                    "float": float,
                    "choice": click.Choice(spec.choices),
                    "text": str,
                }[spec.kind]
            )
            shown = (
                format_duration(value) if spec.kind == "duration" and value is not None else value
            )
            command = click.option(
                spec.flag,
                name,
                default=shown,
                type=param_type,
                **common,
            )(command)
        return command

    return decorate


def from_options(cls: type[SettingsT], values: Mapping[str, Any]) -> SettingsT:
    """The settings named in `values` (click's keyword arguments; others are ignored). Raises
    click.UsageError naming each flag whose value is out of bounds, or else each problem
    between settings."""
    kinds = {name: spec.kind for name, spec in fields(cls)}
    settings = cls(
        **{
            k: guard_set_spec(v) if kinds[k] == "guards" else v
            for k, v in values.items()
            if k in kinds
        }
    )
    found = [
        f"Invalid value for '{spec.flag}': {problem}"
        for name, spec in fields(settings)
        if (problem := spec.problem(getattr(settings, name)))
    ] or settings.problems()
    if found:
        raise click.UsageError("; ".join(found))
    return settings


@dataclass(frozen=True)
class ServerSettings(Settings):
    """What every lab server's settings have: how it enforces its clients' keepalive pings, and
    how long it keeps a connection."""

    ping_min_interval_s: float = setting(
        0.5,
        "ping_min_interval",
        "duration",
        "Clients' keepalive pings closer than this are strikes (gRPC's default: 5m).",
        lo=0.0,
        hi=3600.0,
    )
    ping_strikes: int = setting(
        2,
        "ping_strikes",
        "int",
        "Strikes tolerated before GOAWAY too_many_pings (0: any number).",
        lo=0,
        hi=1000,
    )

    max_connection_age_s: float = setting(
        0.0,
        "max_connection_age",
        "duration",
        "GOAWAY a connection this long after it opened, drawn within +-10% by gRPC core "
        "(0: never, gRPC's default).",
        lo=0.0,
        hi=86400.0,
    )
    max_connection_age_grace_s: float = setting(
        0.0,
        "max_connection_age_grace",
        "duration",
        "Close a connection this long after its max-age GOAWAY, calls or not (0: no limit, "
        "gRPC's default).",
        lo=0.0,
        hi=86400.0,
    )

    def max_age(self) -> MaxAge:
        """How long the server keeps a connection (`herdlab.grpcutil.serve`)."""
        return MaxAge(
            age_ms=round(self.max_connection_age_s * 1000) or None,
            grace_ms=round(self.max_connection_age_grace_s * 1000) or None,
        )

    def pings(self) -> PingPolicy:
        """The server's ping policy (`herdlab.grpcutil.serve`)."""
        return PingPolicy(
            min_interval_ms=round(self.ping_min_interval_s * 1000), max_strikes=self.ping_strikes
        )
