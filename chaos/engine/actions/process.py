"""Process faults: kill (SIGKILL), restore (start again, same address), pause (SIGSTOP),
resume (SIGCONT). Kill and restore are the trial's own, so every outage is timed one way.

A service is `db`, `cache`, a replica `cache-N` or `redis`; `kill lease-holder` kills the replica
that holds a lease at that moment (the replicas scenario's fault), found by its lease counter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chaos.engine.actions.base import Action, absent, one_service, service_name
from chaos.engine.registry import ACTIONS

if TYPE_CHECKING:
    from chaos.engine.spec import Experiment
    from chaos.engine.trial import Trial


@dataclass(frozen=True)
class _ProcessAction(Action):
    service: str

    @classmethod
    def parse(cls, args: list[str]) -> Action:
        return cls(one_service(args, cls.usage))


LEASE_HOLDER = "lease-holder"


class Kill(_ProcessAction):
    @classmethod
    def parse(cls, args: list[str]) -> Action:
        if args == [LEASE_HOLDER]:
            return cls(LEASE_HOLDER)
        return cls(one_service(args, cls.usage))

    def problem(self, experiment: Experiment, down: set[str]) -> str | None:
        if self.service == LEASE_HOLDER:
            return absent(experiment, "redis")
        missing = absent(experiment, self.service)
        if missing:
            return missing
        if self.service in down:
            return f"{self.service} is already killed by an earlier step"
        down.add(self.service)
        return None

    def said(self) -> str:
        return f"{service_name(self.service)} killed"

    usage = "kill db|cache|cache-N|redis|lease-holder"

    async def run(self, trial: Trial) -> dict[str, Any]:
        if self.service == LEASE_HOLDER:
            holder = await trial.lease_holder()
            await trial.kill(holder)
            return {"service": holder}
        await trial.kill(self.service)
        return {}


class Restore(_ProcessAction):
    def problem(self, experiment: Experiment, down: set[str]) -> str | None:
        missing = absent(experiment, self.service)
        if missing:
            return missing
        if self.service not in down:
            return f"restore {self.service} needs an earlier step that kills it"
        down.discard(self.service)
        return None

    def said(self) -> str:
        return f"{service_name(self.service)} restored"

    usage = "restore db|cache|cache-N|redis"

    async def run(self, trial: Trial) -> dict[str, Any]:
        outage = await trial.restore(self.service)
        assert outage.up_ns is not None and outage.restart_ns is not None
        return {"listening_after_s": round((outage.up_ns - outage.restart_ns) / 1e9, 3)}


class Pause(_ProcessAction):
    def problem(self, experiment: Experiment, down: set[str]) -> str | None:
        missing = absent(experiment, self.service)
        if missing:
            return missing
        return f"{self.service} is killed at that point" if self.service in down else None

    def said(self) -> str:
        return f"{service_name(self.service)} paused"

    usage = "pause db|cache|cache-N|redis"

    async def run(self, trial: Trial) -> dict[str, Any]:
        await trial.pause(self.service)
        return {}


class Resume(_ProcessAction):
    def said(self) -> str:
        return f"{service_name(self.service)} resumed"

    usage = "resume db|cache|cache-N|redis"

    async def run(self, trial: Trial) -> dict[str, Any]:
        await trial.resume(self.service)
        return {}


ACTIONS.register("kill", Kill)
ACTIONS.register("restore", Restore)
ACTIONS.register("pause", Pause)
ACTIONS.register("resume", Resume)
