"""`nap 1s` (`chaos nap 1s`): a toy action that only waits, proving one file makes a verb."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from chaos.engine.actions.base import Action, Arg, Target, positive_duration
from chaos.engine.registry import ACTIONS
from herdlab.config import DURATION


@dataclass(frozen=True)
class Nap(Action):
    seconds: float
    usage = "nap DURATION"
    summary = "Wait a while (a toy)."
    args = (Arg("seconds", DURATION, check=positive_duration),)

    def acts_on(self) -> str:
        return "stack"

    async def run(self, target: Target) -> dict[str, Any]:
        await asyncio.sleep(self.seconds)
        return {}


ACTIONS.register("nap", Nap)
