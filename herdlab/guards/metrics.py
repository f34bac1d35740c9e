"""Guard metrics, read at scrape time: nothing is counted or set on the request path.

    herdlab_guard_state{side,guard,key}        gauge, one per key of each guard's `state()`
                                               (tokens, rejection_probability, state, limit,
                                               in_flight, waiting)
    herdlab_guard_rejected_total{side,guard}   counter, calls the guard refused

`side` says whose calls are guarded: `cache` (the cache's DB client) or `herd` (the chaos
clients). The guard set is read through a getter, so a set replaced at runtime is what the next
scrape shows; an empty set exports no samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from herdlab.guards.guard_set import GuardSet
from herdlab.metrics import GUARD_REJECTED, GUARD_STATE

SIDES = ("cache", "herd")


class GuardCollector(Collector):
    """A custom collector (prometheus client_python's `Collector`) that registers itself on
    `registry` and reads `guard_set_getter()` on every scrape."""

    def __init__(
        self, guard_set_getter: Callable[[], GuardSet], registry: CollectorRegistry, side: str
    ) -> None:
        if side not in SIDES:
            raise ValueError(f"guard metrics side must be one of {', '.join(SIDES)}, got {side!r}")
        self._get = guard_set_getter
        self._side = side
        registry.register(self)

    def _families(self) -> tuple[GaugeMetricFamily, CounterMetricFamily]:
        return (
            GaugeMetricFamily(
                GUARD_STATE,
                "A guard's live state, one series per state key.",
                labels=["side", "guard", "key"],
            ),
            CounterMetricFamily(
                GUARD_REJECTED,
                "Calls a guard refused (nothing was sent).",
                labels=["side", "guard"],
            ),
        )

    def describe(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        """The metric names, without reading the guard set (registration calls this)."""
        return self._families()

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        state, rejected = self._families()
        for guard in self._get().guards:
            for key, value in guard.state().items():
                state.add_metric([self._side, guard.name, key], value)
            rejected.add_metric([self._side, guard.name], guard.rejected)
        return state, rejected
