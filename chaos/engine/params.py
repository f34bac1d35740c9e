"""An experiment's `[params]`: named values, each bare (`keys = 1000`) or typed, with bounds and
help (`keys = { default = 1000, min = 1, max = 100000, help = "..." }`).

A typed param is also an option of `chaos scenario NAME` (generated from the shipped file): its
flag is `--NAME` with `_` written `-` (or `flag`), its default and bounds the param's. `chaos run
--set` and `[smoke]` values of a typed param are held to the same bounds and choices.

Typed keys: `default` (required), `min`, `max` (numbers; durations as "10s"), `choices` (texts),
`help`, `flag` (the option's name when it is not the param's), `multiple` (a repeatable option),
`metavar` (what the option's value is called), `auto` (what the scenario does when the option is
not given, said in its help; the option then has no default).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from herdlab.config import parse_duration

TYPED_KEYS = ("default", "min", "max", "choices", "help", "flag", "multiple", "metavar", "auto")


@dataclass(frozen=True)
class Param:
    """A typed param: its default, bounds, choices and help (and so a `chaos scenario` option)."""

    name: str
    default: Any
    min: Any = None
    max: Any = None
    choices: tuple[str, ...] = ()
    help: str = ""
    flag: str = ""
    multiple: bool = False
    metavar: str = ""
    auto: str = ""

    @property
    def option(self) -> str:
        """The option's flag, e.g. `--db-latency`."""
        return "--" + (self.flag or self.name.replace("_", "-"))

    @property
    def is_duration(self) -> bool:
        return isinstance(self.default, str) and _seconds(self.default) is not None

    def problem(self, value: Any) -> str | None:
        """What is wrong with `value` for this param, if anything."""
        if self.choices and value not in self.choices:
            return f"must be one of {', '.join(self.choices)}, got {value!r}"
        number = _seconds(value) if self.is_duration else value
        if self.is_duration and number is None:
            return f'must be a duration with a unit such as "10s", got {value!r}'
        if not isinstance(number, int | float) or isinstance(number, bool):
            return None
        low, high = _seconds(self.min), _seconds(self.max)
        if (low is not None and number < low) or (high is not None and number > high):
            return f"must be in [{self.min}, {self.max}], got {value}"
        return None


def _seconds(value: Any) -> float | None:
    """A number as is, a duration text in seconds, anything else None."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # an integer beyond any float: larger than every bound
            return math.inf if value > 0 else -math.inf
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError:
            return None
    return None


def read(table: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Param]]:
    """The params' values (a typed param's default) and the typed ones; ValueError as
    (where, message) naming the first problem."""
    values: dict[str, Any] = {}
    typed: dict[str, Param] = {}
    for name, raw in table.items():
        if not (isinstance(raw, dict) and "default" in raw):
            values[name] = raw
            continue
        unknown = [k for k in raw if k not in TYPED_KEYS]
        if unknown:
            raise ParamError(
                f"params.{name}.{unknown[0]}", f"unknown key; allowed: {', '.join(TYPED_KEYS)}"
            )
        param = Param(
            name=name,
            default=raw["default"],
            min=raw.get("min"),
            max=raw.get("max"),
            choices=tuple(raw.get("choices", ())),
            help=str(raw.get("help", "")),
            flag=str(raw.get("flag", "")),
            multiple=bool(raw.get("multiple", False)),
            metavar=str(raw.get("metavar", "")),
            auto=str(raw.get("auto", "")),
        )
        problem = param.problem(param.default)
        if problem:
            raise ParamError(f"params.{name}.default", problem)
        values[name] = param.default
        typed[name] = param
    return values, typed


class ParamError(ValueError):
    """A problem with one param: where it is and what is wrong."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(message)
        self.where = where
        self.message = message
