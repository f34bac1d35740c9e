"""`latency db 300ms [SPREAD] [--for D]`: the DB's base latency per query, at runtime."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chaos.engine.actions.base import DB_ONLY, Action, Arg, Target
from chaos.engine.actions.faults import FOR, for_detail, set_faults
from chaos.engine.registry import ACTIONS
from db_service.settings import MAX_LATENCY_S
from herdlab.config import DURATION
from protos import admin_pb2


def _bounded(value: float) -> str | None:
    return f"must be at most {MAX_LATENCY_S:g}s, got {value:g}s" if value > MAX_LATENCY_S else None


@dataclass(frozen=True)
class Latency(Action):
    service: str
    latency: float
    spread: float | None
    for_s: float | None
    usage = "latency db DURATION [SPREAD]"
    summary = "Set the DB's base latency per query (runtime, through its admin service)."
    args = (
        Arg("service", DB_ONLY),
        Arg("latency", DURATION, check=_bounded),
        Arg(
            "spread",
            DURATION,
            "Extra latency, uniform in [0, spread] [default: unchanged].",
            "--spread",
            required=False,
            check=_bounded,
        ),
        FOR,
    )

    def described(self) -> dict[str, Any]:
        details: dict[str, Any] = {"latency_ms": self.latency * 1000}
        if self.spread is not None:
            details["spread_ms"] = self.spread * 1000
        return details | for_detail(self.for_s)

    async def run(self, target: Target) -> dict[str, Any]:
        faults = admin_pb2.Faults(latency_ms=self.latency * 1000)
        if self.spread is not None:
            faults.spread_ms = self.spread * 1000
        state = await set_faults(target, faults, self.for_s)
        return {"capacity_per_s": round(state.capacity_per_s, 1)}


ACTIONS.register("latency", Latency)
