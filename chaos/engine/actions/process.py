"""Process faults: kill (SIGKILL), restore (start again, same address), pause (SIGSTOP),
resume (SIGCONT), done by the target (the trial times each outage; the live stack's backend).

A service is `db`, `cache`, a replica `cache-N` or `redis`; `kill lease-holder` kills the replica
that holds a lease at that moment (the replicas scenario's fault), found by its lease counter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import click

from chaos.engine.actions.base import (
    SERVICE,
    Action,
    Arg,
    Target,
    absent,
    brought_back,
    killed_before,
    service_name,
)
from chaos.engine.registry import ACTIONS

if TYPE_CHECKING:
    from chaos.engine.model import Experiment

LEASE_HOLDER = "lease-holder"


class _Killable(click.ParamType):  # type: ignore[type-arg]
    """A service, or the replica holding a lease when the kill is done."""

    name = "SERVICE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        return LEASE_HOLDER if value == LEASE_HOLDER else SERVICE.convert(value, param, ctx)

    def get_metavar(self, param: click.Parameter, ctx: click.Context) -> str:
        return "[db|cache|cache-N|redis|lease-holder]"


@dataclass(frozen=True)
class _ProcessAction(Action):
    service: str
    args = (Arg("service", SERVICE),)
    needs = "service"
    done: ClassVar[str]  # how narration says it

    def said(self) -> str:
        return f"{service_name(self.service)} {self.done}"


class Kill(_ProcessAction):
    usage = "kill db|cache|cache-N|redis|lease-holder"
    summary = "SIGKILL a service: it is gone at once; connections reset."
    args = (Arg("service", _Killable()),)
    done = "killed"

    def problem(self, experiment: Experiment, down: set[str]) -> str | None:
        if self.service == LEASE_HOLDER:
            return absent(experiment, "redis")
        problem = absent(experiment, self.service) or killed_before(self.service, down)
        if problem is None:
            down.add(self.service)
        return problem

    async def run(self, target: Target) -> dict[str, Any]:
        if self.service == LEASE_HOLDER:
            holder = await target.lease_holder()
            await target.kill(holder)
            return {"service": holder}
        return await target.kill(self.service)


class Restore(_ProcessAction):
    usage = "restore db|cache|cache-N|redis"
    summary = "Start a killed or stopped service again on the same address; wait for SERVING."
    done = "restored"

    def problem(self, experiment: Experiment, down: set[str]) -> str | None:
        missing = absent(experiment, self.service)
        return missing or brought_back("restore", self.service, down, "kills or stops")

    async def run(self, target: Target) -> dict[str, Any]:
        return await target.restore(self.service)


class Pause(_ProcessAction):
    usage = "pause db|cache|cache-N|redis"
    summary = "SIGSTOP a service: it hangs; its callers wait until their deadlines."
    done = "paused"

    def problem(self, experiment: Experiment, down: set[str]) -> str | None:
        killed = f"{self.service} is killed at that point" if self.service in down else None
        return absent(experiment, self.service) or killed

    async def run(self, target: Target) -> dict[str, Any]:
        return await target.pause(self.service)


class Resume(_ProcessAction):
    usage = "resume db|cache|cache-N|redis"
    summary = "SIGCONT a paused service."
    done = "resumed"

    async def run(self, target: Target) -> dict[str, Any]:
        return await target.resume(self.service)


ACTIONS.register("kill", Kill)
ACTIONS.register("restore", Restore)
ACTIONS.register("pause", Pause)
ACTIONS.register("resume", Resume)
