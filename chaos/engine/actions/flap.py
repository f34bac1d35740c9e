"""`flap db 1s 2s 5`: outage after outage, down, up, down, up ... for N cycles."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from chaos.engine.actions.base import SERVICE, Action, Arg, Target, killed_before, positive_duration
from chaos.engine.actions.outage import down_for
from chaos.engine.registry import ACTIONS
from herdlab.config import DURATION

if TYPE_CHECKING:
    from chaos.engine.model import Experiment

MAX_CYCLES = 1000


@dataclass(frozen=True)
class Flap(Action):
    service: str
    down_s: float
    up_s: float
    cycles: int
    usage = "flap db|cache DOWN UP [CYCLES]"
    summary = "Outage after outage: down, up, down, up ... for N cycles."
    needs = "service"
    args = (
        Arg("service", SERVICE),
        Arg("down_s", DURATION, "Time down per cycle.", "--down", check=positive_duration),
        Arg("up_s", DURATION, "Time up per cycle.", "--up", check=positive_duration),
        Arg(
            "cycles",
            click.IntRange(1, MAX_CYCLES),
            "How many outages.",
            "--cycles",
            required=False,
            default=5,
            show_default=True,
        ),
    )

    def problem(self, experiment: Experiment, down: set[str]) -> str | None:
        return killed_before(self.service, down)

    def described(self) -> dict[str, Any]:
        return {"down_s": self.down_s, "up_s": self.up_s, "cycles": self.cycles}

    async def run(self, target: Target) -> dict[str, Any]:
        outages = []
        for cycle in range(self.cycles):
            outages.append(await down_for(target, self.service, self.down_s))
            if cycle + 1 < self.cycles:
                await asyncio.sleep(self.up_s)
        return {"outages": outages}


ACTIONS.register("flap", Flap)
