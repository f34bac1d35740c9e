"""`errors db 0.2 [--for D]`: the DB fails this fraction of queries with UNAVAILABLE."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chaos.engine.actions.base import DB_ONLY, Action, Arg, Target
from chaos.engine.actions.faults import FOR, for_detail, set_faults
from chaos.engine.registry import ACTIONS
from herdlab.config import PROBABILITY
from protos import admin_pb2


@dataclass(frozen=True)
class Errors(Action):
    service: str
    rate: float
    for_s: float | None
    usage = "errors db RATE (0 to 1)"
    summary = "Make the DB fail this fraction of queries with UNAVAILABLE (0 turns it off)."
    args = (Arg("service", DB_ONLY), Arg("rate", PROBABILITY), FOR)

    def described(self) -> dict[str, Any]:
        return {"error_rate": self.rate} | for_detail(self.for_s)

    async def run(self, target: Target) -> dict[str, Any]:
        await set_faults(target, admin_pb2.Faults(error_rate=self.rate), self.for_s)
        return {"error_rate": self.rate}


ACTIONS.register("errors", Errors)
