"""`outage db 10s`: kill a service, keep it down that long, restore it (one step); the service
is restored even when the wait is interrupted. After a DB outage the command line also reports the
reconnect lag: from the restore to the first request that reached the DB again."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chaos.engine.actions.base import SERVICE, Action, Arg, Target, killed_before, positive_duration
from chaos.engine.registry import ACTIONS
from herdlab.config import DURATION

if TYPE_CHECKING:
    from chaos.engine.model import Experiment


async def down_for(target: Target, service: str, seconds: float) -> tuple[float, float]:
    """Kill, wait, restore; returns when it went down and came back (wall-clock seconds). The
    time down counts from the kill's start: a trial reads the service's records before the
    SIGKILL, and that time is part of the outage, not added to it."""
    down_at = time.time()
    await target.kill(service)
    target.note("kill", service, within="outage")
    try:
        await asyncio.sleep(max(0.0, seconds - (time.time() - down_at)))
    finally:
        await target.restore(service)
        target.note("restore", service, within="outage")
    return down_at, time.time()


@dataclass(frozen=True)
class Outage(Action):
    service: str
    seconds: float
    usage = "outage db|cache DURATION"
    summary = "Kill a service, keep it down for a while, restore it (same address)."
    needs = "service"
    args = (
        Arg("service", SERVICE),
        Arg("seconds", DURATION, "How long it stays down.", "--for", check=positive_duration),
    )

    def problem(self, experiment: Experiment, down: set[str]) -> str | None:
        return killed_before(self.service, down)

    def described(self) -> dict[str, Any]:
        return {"seconds": self.seconds}

    async def run(self, target: Target) -> dict[str, Any]:
        down_at, up_at = await down_for(target, self.service, self.seconds)
        done = {"down_at": down_at, "up_at": up_at, "down_s": round(up_at - down_at, 3)}
        return done | (await target.reconnect_lag(up_at) if self.service == "db" else {})


ACTIONS.register("outage", Outage)
