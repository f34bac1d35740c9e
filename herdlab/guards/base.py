"""The guard interface: what every overload-control guard in `herdlab.guards` promises.

A guard sits in front of one client's calls. Before a call the client asks `acquire`; the guard
admits it (a `Permit`) or refuses it (`GuardRejected`, nothing is sent). After an admitted call
the client reports how it went with `permit.done(outcome, rtt_s)`, exactly once. Guards never
retry and never sleep, except `limit`, which may wait for a slot, never longer than the caller's
`timeout_s`.

Single-threaded by design: a guard's state is touched only from its event loop's thread, so no
guard takes a lock.
"""

from __future__ import annotations

import abc
import enum
import math
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import ClassVar, NoReturn, Protocol

from herdlab.units import format_duration, format_number

Clock = Callable[[], float]


class Outcome(enum.Enum):
    """How an admitted call ended, as far as overload control cares.

    OVERLOAD: it failed with UNAVAILABLE, RESOURCE_EXHAUSTED or DEADLINE_EXCEEDED (the codes
    `herdlab.retry.RETRYABLE_CODES` retries). IGNORE: any other error, or the call was never sent
    (a later guard refused it); guards learn nothing from it.
    """

    OK = "ok"
    OVERLOAD = "overload"
    IGNORE = "ignore"


class GuardRejected(Exception):
    """A guard refused a call; nothing was sent. `str()` is one line: `<guard>: <reason>`."""

    def __init__(self, guard: str, reason: str) -> None:
        super().__init__(f"{guard}: {reason}")
        self.guard = guard
        self.reason = reason


class Permit(Protocol):
    def done(self, outcome: Outcome, rtt_s: float) -> None:
        """Reports the admitted call's end; called exactly once per admitted call."""


class CallbackPermit:
    """A permit that hands its one report to `on_done`; a second report raises RuntimeError
    (it would release a slot or count an outcome twice)."""

    __slots__ = ("_done", "_on_done")

    def __init__(self, on_done: Callable[[Outcome, float], None]) -> None:
        self._on_done = on_done
        self._done = False

    def done(self, outcome: Outcome, rtt_s: float) -> None:
        if self._done:
            raise RuntimeError("permit reported twice: done() is called exactly once per call")
        self._done = True
        self._on_done(outcome, rtt_s)


def _ignore(outcome: Outcome, rtt_s: float) -> None:
    """A guard with nothing to learn from the outcome."""


def noop_permit() -> CallbackPermit:
    return CallbackPermit(_ignore)


@dataclass(frozen=True)
class Range:
    """An allowed range for a parameter, printed the way errors show it: `[0.5, 1)`."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False
    duration: bool = False

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def show(self, value: float) -> str:
        return format_duration(value, short=True) if self.duration else format_number(value)

    def __str__(self) -> str:
        left = "(" if self.low_open else "["
        right = ")" if self.high_open else "]"
        return f"{left}{self.show(self.low)}, {self.show(self.high)}{right}"


def check(guard: str, param: str, value: float, allowed: Range) -> None:
    """Raises the one-line ValueError every guard uses: `guard 'throttle': k must be in [1, 10],
    got 0.5`."""
    if not (math.isfinite(value) and value in allowed):
        raise ValueError(
            f"guard {guard!r}: {param} must be in {allowed}, got {allowed.show(value)}"
        )


class Guard(abc.ABC):
    """One overload-control guard. Subclasses set `name` (the registry name) and say, in their
    docstring, the rule they apply and where it comes from.

    `rejected` counts the calls this guard refused. `spec` is the canonical spec with every
    parameter, which `herdlab.guards.parse_guard_set` reads back to an equal guard.
    """

    name: ClassVar[str]

    def __init__(self) -> None:
        self.rejected = 0

    @abc.abstractmethod
    def spec_items(self) -> list[tuple[str, str | None]]:
        """The canonical spec's parts in order: `(word, None)` for a bare word (the limit's
        algorithm), `(param, value)` for `param=value`."""

    @abc.abstractmethod
    async def acquire(self, *, retry: bool, timeout_s: float) -> Permit:
        """Admits a call (`retry` says whether it is a retry) or raises `GuardRejected`. Only a
        guard that waits (`limit`) reads `timeout_s`, and it waits no longer than that."""

    @abc.abstractmethod
    def state(self) -> dict[str, float]:
        """The guard's live state, for metrics and timelines; admits and refuses nothing."""

    @property
    def spec(self) -> str:
        return self.short_spec(None)

    def short_spec(self, given: Collection[str] | None) -> str:
        """The canonical spec keeping only the parameters in `given` (all when None) and every
        bare word: `limit:aimd,max=100` for a user who wrote `limit:aimd,max=100`."""
        parts = [
            word if value is None else f"{word}={value}"
            for word, value in self.spec_items()
            if value is None or given is None or word in given
        ]
        return f"{self.name}:{','.join(parts)}" if parts else self.name

    def _reject(self, reason: str) -> NoReturn:
        self.rejected += 1
        raise GuardRejected(self.name, reason)
