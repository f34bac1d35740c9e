"""`outage db 10s`: kill a service, keep it down that long, restore it (one step)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chaos.engine.actions.base import Action
from chaos.engine.registry import ACTIONS
from chaos.lab.backends.base import SERVICES
from herdlab.config import parse_duration

if TYPE_CHECKING:
    from chaos.engine.spec import Experiment
    from chaos.engine.trial import Trial

MAX_OUTAGE_S = 3600.0


@dataclass(frozen=True)
class Outage(Action):
    service: str
    seconds: float
    usage = "outage db|cache DURATION"

    @classmethod
    def parse(cls, args: list[str]) -> Action:
        if len(args) != 2 or args[0] not in SERVICES:
            raise ValueError(f"usage: {cls.usage}")
        seconds = parse_duration(args[1])
        if not 0 < seconds <= MAX_OUTAGE_S:
            raise ValueError(f"outage must be in (0s, {MAX_OUTAGE_S:g}s], got {args[1]}")
        return cls(args[0], seconds)

    def problem(self, experiment: Experiment, down: set[str]) -> str | None:
        return (
            f"{self.service} is already killed by an earlier step" if self.service in down else None
        )

    async def run(self, trial: Trial) -> dict[str, Any]:
        outage = await trial.kill(self.service)
        await asyncio.sleep(max(0.0, self.seconds - (time.time_ns() - outage.down_ns) / 1e9))
        await trial.restore(self.service)
        assert outage.up_ns is not None
        return {"down_s": round((outage.up_ns - outage.down_ns) / 1e9, 3)}


ACTIONS.register("outage", Outage)
