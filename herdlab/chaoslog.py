"""`herdlab_chaos_actions_total{verb,target}`: the chaos actions a service has been told of.

A chaos verb is a command that runs for a moment and exits, so Prometheus never scrapes it. The
services are what Prometheus scrapes, so they keep the count: after acting, the controller calls
`ChaosLog.NoteAction` on every lab service that can still answer (`chaos.cli.verbs`), and each
service counts it here. A killed or paused service cannot count what was done to it; the
survivors do. One action is therefore counted by every service that heard of it: queries take
`max by (verb, target)`, and `increase()` (which survives a restarted service's reset), never a
sum across services.

Every known verb and target is exported at 0 from the start, so the first action is an increase
Prometheus can see (a series born at 1 has no increase). Names outside that set are accepted if
well-formed, up to `MAX_PAIRS` distinct pairs in all, so a newer controller's verb is counted
without letting callers grow the label set without bound.
"""

from __future__ import annotations

import re

import grpc
from prometheus_client import CollectorRegistry, Counter

from herdlab.grpcutil import Context, Service
from herdlab.metrics import CHAOS_ACTIONS
from protos import chaos_pb2, chaos_pb2_grpc

# The controller's verbs (`chaos.cli.verbs.COMMANDS`, generated from the engine's actions, and
# the wire verbs of `chaos.cli.wire`) and the services they act on.
VERBS = (
    "kill",
    "stop",
    "restore",
    "pause",
    "resume",
    "outage",
    "flap",
    "latency",
    "errors",
    "queue",
    "expire",
    "coalescing",
    "capacity",
    "freshness",
    "partition",
    "wire",
    "heal",
    "reset",
)
TARGETS = ("db", "cache")
MAX_PAIRS = 256
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")


class ChaosActions:
    """The counter, with every known (verb, target) pair at 0."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.counter = Counter(
            CHAOS_ACTIONS,
            "Chaos actions this service was told of, by verb and target service (a killed or "
            "paused target cannot count its own; the other services do).",
            ["verb", "target"],
            registry=registry,
        )
        self._counts: dict[tuple[str, str], int] = {}
        for verb in VERBS:
            for target in TARGETS:
                self._child(verb, target)

    def _child(self, verb: str, target: str) -> None:
        self.counter.labels(verb, target)
        self._counts.setdefault((verb, target), 0)

    def problem(self, verb: str, target: str) -> tuple[grpc.StatusCode, str] | None:
        for field, value in (("verb", verb), ("target", target)):
            if not _NAME.fullmatch(value):
                return (
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"{field} {value[:40]!r}: want a lower-case name of 1 to 32 characters "
                    "(letters, digits, '_', '-')",
                )
        if (verb, target) not in self._counts and len(self._counts) >= MAX_PAIRS:
            return (
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"already {MAX_PAIRS} distinct (verb, target) pairs counted",
            )
        return None

    def note(self, verb: str, target: str) -> int:
        """Counts one action (the pair must have passed `problem`); returns the pair's count."""
        self._child(verb, target)
        self.counter.labels(verb, target).inc()
        self._counts[(verb, target)] += 1
        return self._counts[(verb, target)]


class ChaosLogServicer(chaos_pb2_grpc.ChaosLogServicer):
    def __init__(self, actions: ChaosActions) -> None:
        self.actions = actions

    async def NoteAction(
        self, request: chaos_pb2.ChaosAction, context: Context
    ) -> chaos_pb2.ChaosActionCount:
        problem = self.actions.problem(request.verb, request.target)
        if problem is not None:
            await context.abort(*problem)
        return chaos_pb2.ChaosActionCount(count=self.actions.note(request.verb, request.target))


def chaos_log_service(registry: CollectorRegistry) -> Service:
    """The `ChaosLog` service of a lab server, counting into `registry`."""
    return Service(
        ChaosLogServicer(ChaosActions(registry)), chaos_pb2.DESCRIPTOR.services_by_name["ChaosLog"]
    )
