"""Runtime faults through the DB's admin plane: `latency db 300ms [SPREAD]`, `errors db 0.2`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chaos.engine.actions.base import Action
from chaos.engine.registry import ACTIONS
from db_service.settings import MAX_LATENCY_S
from herdlab.config import parse_duration
from protos import admin_pb2

if TYPE_CHECKING:
    from chaos.engine.trial import Trial


@dataclass(frozen=True)
class Latency(Action):
    latency_s: float
    spread_s: float | None
    usage = "latency db DURATION [SPREAD]"

    @classmethod
    def parse(cls, args: list[str]) -> Action:
        if len(args) not in (2, 3) or args[0] != "db":
            raise ValueError(f"usage: {cls.usage}")
        values = [parse_duration(a) for a in args[1:]]
        if any(v > MAX_LATENCY_S for v in values):
            raise ValueError(f"latency and spread must be at most {MAX_LATENCY_S:g}s")
        return cls(values[0], values[1] if len(values) == 2 else None)

    async def run(self, trial: Trial) -> dict[str, Any]:
        faults = admin_pb2.Faults(latency_ms=self.latency_s * 1000)
        if self.spread_s is not None:
            faults.spread_ms = self.spread_s * 1000
        async with trial.admin() as admin:
            state = await admin.set_faults(faults)
        return {"capacity_per_s": round(state.capacity_per_s, 1)}


@dataclass(frozen=True)
class Errors(Action):
    rate: float
    usage = "errors db RATE (0 to 1)"

    @classmethod
    def parse(cls, args: list[str]) -> Action:
        try:
            rate = float(args[1]) if len(args) == 2 and args[0] == "db" else -1.0
        except ValueError:
            rate = -1.0
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"usage: {cls.usage}")
        return cls(rate)

    async def run(self, trial: Trial) -> dict[str, Any]:
        async with trial.admin() as admin:
            await admin.set_faults(admin_pb2.Faults(error_rate=self.rate))
        return {"error_rate": self.rate}


ACTIONS.register("latency", Latency)
ACTIONS.register("errors", Errors)
