"""`capacity --concurrency N --queue M`: the DB's capacity at runtime (queries served at once
and the wait-queue bound)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import click

from chaos.engine.actions.base import Action, Arg, Target
from chaos.engine.registry import ACTIONS
from protos import admin_pb2


@dataclass(frozen=True)
class Capacity(Action):
    concurrency: int | None
    queue: int | None
    usage = "capacity [--concurrency N] [--queue M]"
    summary = "Set the DB's capacity at runtime: queries served at once and the wait-queue bound."
    args = (
        Arg("concurrency", click.IntRange(1, 1_000_000), "DB slots.", "--concurrency", False),
        Arg("queue", click.IntRange(0, 10_000_000), "DB wait queue.", "--queue", False),
    )

    def validate(self) -> None:
        if self.concurrency is None and self.queue is None:
            raise ValueError("give --concurrency, --queue or both")

    def described(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in (("concurrency", self.concurrency), ("queue", self.queue))
            if v is not None
        }

    async def run(self, target: Target) -> dict[str, Any]:
        async with target.admin() as admin:
            state = await admin.set_capacity(
                admin_pb2.Capacity(concurrency=self.concurrency, queue=self.queue)
            )
        return {"capacity_per_s": round(state.capacity_per_s, 1)}


ACTIONS.register("capacity", Capacity)
