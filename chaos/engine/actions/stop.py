"""`stop SERVICE`: a graceful stop, as a deploy does it. The service gets SIGTERM: its health
turns NOT_SERVING, new calls are refused, every connection gets GOAWAY, and calls in flight have
the service's grace (`--grace`) to finish; the target waits until it has exited (at most its
grace plus `chaos.lab.backends.base.STOP_MARGIN_S`, then SIGKILL, said as `forced`).

A trial times it as an outage of kind "stop", which `restore` and `heal` end as they end a kill.
The service's records are read just before the SIGTERM: what it does while draining is not in
them (its admin plane refuses calls from then on)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chaos.engine.actions.base import (
    SERVICE,
    Action,
    Arg,
    Target,
    absent,
    killed_before,
    service_name,
)
from chaos.engine.registry import ACTIONS

if TYPE_CHECKING:
    from chaos.engine.model import Experiment


@dataclass(frozen=True)
class Stop(Action):
    service: str
    usage = "stop db|cache|cache-N|redis"
    summary = (
        "SIGTERM a service, as a deploy does: it drains (GOAWAY; calls in flight finish within "
        "its grace) and exits. SIGKILL if not gone 5s past its grace (forced)."
    )
    args = (Arg("service", SERVICE),)
    needs = "service"

    def problem(self, experiment: Experiment, down: set[str]) -> str | None:
        problem = absent(experiment, self.service) or killed_before(self.service, down)
        if problem is None:
            down.add(self.service)
        return problem

    def said(self) -> str:
        return f"{service_name(self.service)} stopped"

    async def run(self, target: Target) -> dict[str, Any]:
        return await target.stop(self.service)


ACTIONS.register("stop", Stop)
