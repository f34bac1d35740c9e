"""`reset`: the stack back to its start settings: paused services resumed, killed ones restored,
the DB's latency, error rate and capacity and every cache replica's coalescing as the stack
started them, wire faults removed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chaos.engine.actions.base import Action, Target
from chaos.engine.registry import ACTIONS
from protos import admin_pb2

if TYPE_CHECKING:
    from chaos.engine.model import Experiment


@dataclass(frozen=True)
class Reset(Action):
    usage = "reset"
    summary = (
        "Return the stack to its start settings: wire faults removed, the DB's latency, error "
        "rate and capacity and the cache's coalescing as 'chaos up' set them, paused services "
        "resumed, killed ones restored."
    )
    needs = "start"

    def acts_on(self) -> str:
        return "stack"

    def problem(self, experiment: Experiment, down: set[str]) -> str | None:
        down.clear()
        return None

    def said(self) -> str:
        return "stack reset to its start settings"

    async def run(self, target: Target) -> dict[str, Any]:
        states = target.states()
        done: dict[str, Any] = {"resumed": [], "restored": [], "wire_removed": []}
        for name, state in states.items():
            if state == "paused":
                await target.resume(name)
                done["resumed"].append(name)
        for name, state in states.items():
            if state == "stopped" and name != "wire":
                await target.restore(name)
                done["restored"].append(name)
        db, cache = target.start_settings()
        async with target.admin() as admin:
            await admin.set_faults(
                admin_pb2.Faults(
                    latency_ms=db.latency_s * 1000,
                    spread_ms=db.spread_s * 1000,
                    error_rate=db.error_rate,
                )
            )
            await admin.set_capacity(
                admin_pb2.Capacity(
                    concurrency=db.concurrency,
                    queue=db.queue,
                    discipline=db.queue_discipline,
                    codel_target_ms=db.codel_target_s * 1000,
                    codel_interval_ms=db.codel_interval_s * 1000,
                )
            )
        async for replica in target.cache_admins():
            await replica.set_coalescing(cache.coalescing)
        done["wire_removed"] = await target.clear_wire()
        return done


ACTIONS.register("reset", Reset)
