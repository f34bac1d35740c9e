"""Guard sets: guards composed in order, and the spec grammar that names them.

    set     := "none" | "recommended" | guard ("+" guard)*
    guard   := name [":" part ("," part)*]
    part    := word | key "=" value          (a bare word only where the guard takes one: the
                                              limit's algorithm, first after ":")
    sets    := set ("," set)*                 (parse_guard_sets, for sweeps)

Every place that takes a guard set reads this grammar with `parse_guard_set`. Where guards are
given one at a time (a repeated `--guard` flag of the cache or of `chaos herd`, a list in an
experiment file) each item is a guard or a set, and the items are one set joined by "+" in
order (`guard_set_spec`): `--guard limit:n=20 --guard breaker`, `--guard limit:n=20+breaker`,
`guards = ["limit:n=20", "breaker"]` and `guards = "limit:n=20+breaker"` are the same set.

Durations are written as `herdlab.config.parse_duration` reads them (`500ms`, `30s`, `2m`).
Commas both separate sets and parameters; parse_guard_sets resolves it thus: a comma-separated
piece whose first guard part (the text before any "+") is a `k=v` pair, i.e. contains "=" and
no ":", continues the previous set's last guard's parameters; any other piece starts a new set.
So `none,throttle:k=2,window=30s,limit:n=20` is three sets, and a bare word (`aimd`) after a
comma always starts a set, which is why the limit's algorithm comes first after ":".

A set's `spec` is the canonical short form of what the user wrote: each guard's name, its
algorithm, and only the parameters given, in the guard's order and canonical formatting
(`throttle:window=0.5m,k=1.50` -> `throttle:k=1.5,window=30s`); `recommended` is replaced by
the set it stands for, so a recorded spec says what ran. `Guard.spec` has every parameter.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence

from herdlab.guards import registry
from herdlab.guards.base import CallbackPermit, Clock, Guard, Outcome, Permit

RECOMMENDED = "limit:n=20+breaker"
"""The lab's recommended set for the retry storm (10,000 keys, full-jitter retries, a DB of 20
slots x 100 ms, a 10 s outage). Chosen for what reaches the DB (about one attempt per key, the
restored DB met at exactly its capacity) with recovery within 1.2x of the physical limit; the
measured sweep is in the README ("Stopping the storm") and BENCHMARKS.md.

A static limit of 20 calls in flight is the DB's real concurrency (Little's law: 20 slots x
100 ms = 200/s): after the restore the DB's arrivals are its completions whatever the retry
rate, and the other fetches wait here within their own budget. The breaker turns the outage's
failures into local refusals after 5 and probes once a second, so the fetches waiting for a slot
do not spend the outage failing fast against a dead DB.

The adaptive limits find a limit without being told, at a cost measured beside it: loss-based
AIMD learns only from drops, and a DB with a deep queue drops nothing until deadlines pass, so
AIMD climbs towards its maximum (recovery as fast, but two attempts per key and 2.75x the
DB's capacity in its busiest 100 ms); Vegas reads queueing from latency, which the event loops'
jitter makes noisy (one attempt per key, but up to 3.25x capacity). Use them where the capacity
is unknown; a static limit where it is known.

The limit comes first: a guard set asks its guards in order, so in `breaker+limit` the breaker
decides when a call joins the limit's queue, and every call already queued when the DB fails is
still sent after the breaker opened (up to the 10,000 keys); in `limit+breaker` the breaker
decides as each call leaves the queue, so an open breaker refuses them
(test_guards.py: test_the_breaker_decides_at_send_time_only_after_the_limit)."""


class GuardSet:
    """Guards applied in order; the empty set (spec `none`) admits everything.

    `acquire` asks each guard in turn with what is left of `timeout_s` (measured on `clock`),
    so a guard that waited shrinks the time the next one may wait. If guard i refuses, or the
    caller is cancelled while it waits, the permits of guards 0..i-1 are reported
    `done(IGNORE, 0)` (the call was never sent) and the error propagates. The set's permit
    reports to every guard's permit, last guard first. Single-threaded, like its guards.
    """

    def __init__(
        self, guards: Sequence[Guard], *, clock: Clock = time.monotonic, spec: str | None = None
    ) -> None:
        self.guards = tuple(guards)
        self.spec = spec or ("+".join(g.spec for g in self.guards) or "none")
        self._clock = clock

    async def acquire(self, *, retry: bool, timeout_s: float) -> Permit:
        deadline = self._clock() + timeout_s
        permits: list[Permit] = []
        try:
            for guard in self.guards:
                remaining = max(0.0, deadline - self._clock())
                permits.append(await guard.acquire(retry=retry, timeout_s=remaining))
        except BaseException:
            for permit in reversed(permits):
                permit.done(Outcome.IGNORE, 0.0)
            raise
        return CallbackPermit(lambda outcome, rtt_s: _done_all(permits, outcome, rtt_s))

    @property
    def rejected(self) -> int:
        return sum(g.rejected for g in self.guards)

    def state(self) -> dict[str, float]:
        return {
            f"{guard.name}_{key}": value
            for guard in self.guards
            for key, value in guard.state().items()
        }


def _done_all(permits: list[Permit], outcome: Outcome, rtt_s: float) -> None:
    for permit in reversed(permits):
        permit.done(outcome, rtt_s)


def _split_guard(text: str, set_text: str) -> tuple[str, tuple[str, ...], dict[str, str]]:
    name, colon, rest = (part.strip() for part in text.partition(":"))
    if not name:
        raise ValueError(f"guard set {set_text!r}: a guard name is missing")
    words: list[str] = []
    params: dict[str, str] = {}
    if colon:
        for part in (p.strip() for p in rest.split(",")):
            key, equals, value = (x.strip() for x in part.partition("="))
            if not key or (equals and not value):
                raise ValueError(
                    f"guard {name!r}: empty parameter in {text.strip()!r}; write {name}:k=v,k=v"
                )
            if not equals:
                if params:
                    raise ValueError(
                        f"guard {name!r}: {key!r} must come first after ':', before the k=v "
                        "parameters"
                    )
                words.append(key)
            elif key in params:
                raise ValueError(f"guard {name!r}: {key} is given twice")
            else:
                params[key] = value
    return name, tuple(words), params


def guard_set_spec(items: Sequence[str]) -> str:
    """Guards (or sets) given one at a time, as the one set spec they make: joined by "+" in
    order; none given: `none`."""
    return "+".join(items) or "none"


def guard_texts(text: str) -> list[str]:
    """The guards of the set spec `text`, each as written, in order (`none`: none): what
    `guard_set_spec` joins back, one per `--guard` flag."""
    stripped = text.strip()
    return [] if stripped in ("", "none") else stripped.split("+")


def parse_guard_set(
    text: str, *, clock: Clock = time.monotonic, rng: random.Random | None = None
) -> GuardSet:
    """`none`, `recommended`, `budget`, `budget+limit:aimd`, `limit:n=20`,
    `throttle:k=1.5,window=30s` -> a GuardSet whose guards read `clock` and share `rng` (a new
    unseeded one when None). Raises a one-line ValueError naming the guard, the parameter and
    its allowed range."""
    stripped = text.strip()
    if stripped == "recommended":
        stripped = RECOMMENDED
    if not stripped:
        raise ValueError(
            "empty guard set; write none, recommended or guards joined by '+', "
            "e.g. budget+limit:aimd"
        )
    if stripped == "none":
        return GuardSet((), clock=clock)
    source = rng if rng is not None else random.Random()
    guards: list[Guard] = []
    shorts: list[str] = []
    for part in guard_texts(stripped):
        name, words, params = _split_guard(part, stripped)
        if name in ("none", "recommended"):
            raise ValueError(f"guard set {stripped!r}: {name} stands alone, not joined with '+'")
        if any(g.name == name for g in guards):
            raise ValueError(f"guard set {stripped!r}: guard {name!r} appears twice")
        guard = registry.build(registry.GuardArgs(name, words, params, clock, source))
        guards.append(guard)
        shorts.append(guard.short_spec(params.keys()))
    return GuardSet(guards, clock=clock, spec="+".join(shorts))


def parse_guard_sets(text: str) -> list[str]:
    """`none,budget,limit:aimd,recommended` -> each set as written, validated (see the module
    docstring for how commas are told apart). Written, not canonical, so a sweep's rows carry
    the names the user gave (`recommended`); `parse_guard_set(s).spec` says what ran."""
    sets: list[str] = []
    for piece in (p.strip() for p in text.split(",")):
        first = piece.split("+", 1)[0]
        if "=" in first and ":" not in first:
            if not sets or ":" not in sets[-1].rsplit("+", 1)[-1]:
                raise ValueError(
                    f"guard sets {text!r}: {first!r} follows no guard's ':'; "
                    "write guard:k=v (e.g. throttle:k=2,window=30s)"
                )
            sets[-1] = f"{sets[-1]},{piece}"
        elif piece:
            sets.append(piece)
    if not sets:
        raise ValueError("no guard set named; e.g. none,budget,limit:aimd,recommended")
    for spec in sets:
        parse_guard_set(spec)
    return sets
