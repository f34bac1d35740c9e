"""Overload-control guards around a client's calls, composable with every retry policy.

A guard decides before a call whether it may be sent (`acquire` -> `Permit`, or
`GuardRejected`) and learns from how it ended (`Permit.done(Outcome, rtt_s)`). A `GuardSet`
applies several in order; `parse_guard_set` builds one from a spec such as `budget+limit:aimd`
(grammar in `herdlab.guards.guard_set`).

    budget     retry budget: gRFC A6 token bucket or Finagle's RetryBudget   (budget.py)
    throttle   client-side adaptive throttling, Google SRE book              (throttle.py)
    breaker    circuit breaker with a ~1 s reset and bounded probes         (breaker.py)
    limit      concurrency limit with FIFO waiting: static, AIMD, Vegas     (limit.py)

Each guard module registers itself (`herdlab.guards.registry`); importing them here is what
makes their names usable: the four above in this order, then every other module of this package,
so that a new guard is one file (plus its test).
"""

from herdlab.guards import budget, throttle, breaker, limit  # noqa: I001  (registration order)
from herdlab.guards.base import Guard, GuardRejected, Outcome, Permit
from herdlab.guards.guard_set import (
    RECOMMENDED,
    GuardSet,
    guard_set_spec,
    guard_texts,
    parse_guard_set,
    parse_guard_sets,
)
from herdlab.guards.registry import names, usage
from herdlab.registry import load_package

load_package(__name__)

GUARD_NAMES: tuple[str, ...] = names()
# How each guard is written, for help texts: `budget, throttle, breaker, limit[:aimd|vegas|n=N]`.
GUARD_USAGE = usage()

__all__ = [
    "GUARD_NAMES",
    "GUARD_USAGE",
    "RECOMMENDED",
    "Guard",
    "GuardRejected",
    "GuardSet",
    "Outcome",
    "Permit",
    "breaker",
    "budget",
    "guard_set_spec",
    "guard_texts",
    "limit",
    "parse_guard_set",
    "parse_guard_sets",
    "throttle",
]
