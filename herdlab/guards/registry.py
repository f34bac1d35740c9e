"""The guard registry: each guard module registers its factory under its name (toxiproxy's
`Register("latency", ...)`), so adding a guard touches one file plus one import in
`herdlab/guards/__init__.py`. A guard registers with the form users write it in (`limit[:aimd|
vegas|n=N]`), which the command lines' help texts list.

A factory gets a `GuardArgs`: the bare words and `k=v` parameters the user wrote after the
guard's `:`, the injected clock and random source, and helpers that turn the text into numbers
with the one-line errors every guard shares.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Collection
from dataclasses import dataclass

from herdlab.guards.base import Clock, Guard, Range
from herdlab.registry import Registry
from herdlab.units import parse_duration

GuardFactory = Callable[["GuardArgs"], Guard]

_FACTORIES: Registry[GuardFactory] = Registry("guard")
_USAGES: dict[str, str] = {}


def register(name: str, factory: GuardFactory, usage: str = "") -> None:
    """Makes `name` usable in specs, written as `usage` (default: the bare name). Registering a
    name twice is a programming error."""
    _FACTORIES.register(name, factory)
    _USAGES[name] = usage or name


def names() -> tuple[str, ...]:
    """The registered guard names, in registration (import) order."""
    return tuple(_FACTORIES)


def usage() -> str:
    """How each registered guard is written, in registration order: `budget, ..., limit[:...]`."""
    return ", ".join(_USAGES.values())


def build(args: GuardArgs) -> Guard:
    if args.guard not in _FACTORIES:
        raise ValueError(
            f"unknown guard {args.guard!r}; choose from {', '.join(_FACTORIES)} "
            "(or none, recommended)"
        )
    return _FACTORIES.get(args.guard)(args)


@dataclass(frozen=True)
class GuardArgs:
    """One guard's part of a spec, e.g. `limit:aimd,initial=10` -> words `("aimd",)`, params
    `{"initial": "10"}`."""

    guard: str
    words: tuple[str, ...]
    params: dict[str, str]
    clock: Clock
    rng: random.Random

    def allow(self, allowed: Collection[str], *, words: int = 0, context: str = "") -> None:
        """Refuses parameters outside `allowed` and more than `words` bare words."""
        listed = ", ".join(allowed) or "none"
        for param in self.params:
            if param not in allowed:
                raise ValueError(
                    f"guard {self.guard!r}: unknown parameter {param!r}{context}; allowed: {listed}"
                )
        if len(self.words) > words:
            raise ValueError(
                f"guard {self.guard!r}: {self.words[words]!r} is not a k=v parameter{context}; "
                f"allowed: {listed}"
            )

    def integer(self, param: str, default: int, allowed: Range) -> int:
        text = self.params.get(param)
        if text is None:
            return default
        try:
            return int(text)
        except ValueError:
            raise self._not_a(param, "an integer", allowed, text) from None

    def number(self, param: str, default: float, allowed: Range) -> float:
        text = self.params.get(param)
        if text is None:
            return default
        try:
            value = float(text)
        except ValueError:
            raise self._not_a(param, "a number", allowed, text) from None
        if not math.isfinite(value):
            raise self._not_a(param, "a number", allowed, text)
        return value

    def duration(self, param: str, default: float, allowed: Range) -> float:
        text = self.params.get(param)
        if text is None:
            return default
        try:
            return parse_duration(text)
        except ValueError:
            raise self._not_a(param, "a duration (e.g. 500ms, 30s, 2m)", allowed, text) from None

    def _not_a(self, param: str, kind: str, allowed: Range, text: str) -> ValueError:
        return ValueError(
            f"guard {self.guard!r}: {param} must be {kind} in {allowed}, got {text!r}"
        )
