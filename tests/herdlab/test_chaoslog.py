"""`herdlab_chaos_actions_total`: what a service accepts to count, and that every verb the
controller has is exported from the start."""

from __future__ import annotations

import grpc
from prometheus_client import CollectorRegistry

from chaos.cli.verbs import COMMANDS
from chaos.cli.wire import COMMANDS as WIRE_COMMANDS
from herdlab.chaoslog import MAX_PAIRS, TARGETS, VERBS, ChaosActions


def _value(registry: CollectorRegistry, verb: str, target: str) -> float | None:
    return registry.get_sample_value(
        "herdlab_chaos_actions_total", {"verb": verb, "target": target}
    )


def test_every_verb_of_the_controller_starts_at_zero() -> None:
    registry = CollectorRegistry()
    ChaosActions(registry)
    # `faults` only lists; `proxy` runs a proxy of its own in front of a user's service, outside
    # the lab's stack, whose processes the action counter is sent to.
    names = {command.name for command in (*COMMANDS, *WIRE_COMMANDS)}
    assert names - {"faults", "proxy"} <= set(VERBS)
    for verb in VERBS:
        for target in TARGETS:
            assert _value(registry, verb, target) == 0


def test_counts_well_formed_pairs_and_refuses_bad_names() -> None:
    registry = CollectorRegistry()
    actions = ChaosActions(registry)
    assert actions.problem("kill", "db") is None
    assert actions.note("kill", "db") == 1
    assert actions.note("kill", "db") == 2
    assert _value(registry, "kill", "db") == 2
    assert actions.problem("newverb", "cache-2") is None, "a newer controller's verb is counted"
    assert actions.note("newverb", "cache-2") == 1
    for verb, target in (("Kill", "db"), ("", "db"), ("kill", "db x"), ("k" * 33, "db")):
        problem = actions.problem(verb, target)
        assert problem is not None and problem[0] == grpc.StatusCode.INVALID_ARGUMENT


def test_distinct_pairs_are_bounded() -> None:
    actions = ChaosActions(CollectorRegistry())
    added = 0
    for i in range(MAX_PAIRS + 1):
        problem = actions.problem(f"v{i}", "db")
        if problem is not None:
            assert problem[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
            break
        actions.note(f"v{i}", "db")
        added += 1
    assert added == MAX_PAIRS - len(VERBS) * len(TARGETS)
    assert actions.problem("kill", "db") is None, "known pairs are still counted"
