"""What a measure is: a name, a function of a trial's observations, the observers it needs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from chaos.engine.observations import Observations
from chaos.engine.registry import MEASURES

Compute = Callable[[Observations], Any]


@dataclass(frozen=True)
class Measure:
    name: str
    compute: Compute
    needs: tuple[str, ...] = ()  # observers that must run during the trial


def measure(name: str, *, needs: tuple[str, ...] = ()) -> Callable[[Compute], Compute]:
    """Registers the decorated function as the measure `name`."""

    def decorate(compute: Compute) -> Compute:
        MEASURES.register(name, Measure(name, compute, needs))
        return compute

    return decorate


def echo(name: str, setting: str) -> None:
    """Registers the measure `name`: the trial's setting at the dotted path `setting` of its
    observations (`cache.policy`: the cache's retry policy), as the trial ran with it."""
    MEASURES.register(name, Measure(name, attrgetter(setting)))


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)
