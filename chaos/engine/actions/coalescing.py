"""`coalescing on|off`: the cache's single-flight coalescing, at runtime."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import click

from chaos.engine.actions.base import Action, Arg, Target
from chaos.engine.registry import ACTIONS


@dataclass(frozen=True)
class Coalescing(Action):
    state: str
    usage = "coalescing on|off"
    summary = "Turn the cache's single-flight coalescing on or off (runtime)."
    args = (Arg("state", click.Choice(("on", "off"))),)

    def acts_on(self) -> str:
        return "cache"

    def described(self) -> dict[str, Any]:
        return {"coalescing": self.state}

    async def run(self, target: Target) -> dict[str, Any]:
        async with target.admin() as admin:
            await admin.set_coalescing(self.state == "on")
        return {}


ACTIONS.register("coalescing", Coalescing)
