"""Wire faults in a timeline: `partition cache` (both directions of the cache's proxy link
blackholed), `fault cache` (what `[stack] fault` says: partition or kill, so the two can
be swept side by side), `heal cache` (undo either)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chaos.engine.actions.base import Action, one_service, service_name
from chaos.engine.registry import ACTIONS

if TYPE_CHECKING:
    from chaos.engine.spec import Experiment
    from chaos.engine.trial import Trial


def _needs_proxy(experiment: Experiment, service: str, partition: bool) -> str | None:
    proxied = {
        name
        for variant in experiment.combinations() or [{}]
        for name in experiment.wire_for(variant).proxied()
    }
    needed = partition or any(
        experiment.wire_for(v).fault == "partition" for v in experiment.combinations() or [{}]
    )
    if needed and service not in proxied:
        return f'partitioning {service} needs [stack] proxy = "{service}"'
    return None


@dataclass(frozen=True)
class Partition(Action):
    service: str
    usage = "partition db|cache"

    @classmethod
    def parse(cls, args: list[str]) -> Action:
        return cls(one_service(args, cls.usage))

    def problem(self, experiment: Experiment, down: set[str]) -> str | None:
        if self.service in down:
            return f"{self.service} is already down at that point"
        down.add(self.service)
        return _needs_proxy(experiment, self.service, partition=True)

    def said(self) -> str:
        return f"{service_name(self.service)} partitioned"

    async def run(self, trial: Trial) -> dict[str, Any]:
        await trial.partition(self.service)
        return {}


@dataclass(frozen=True)
class Fault(Action):
    service: str
    usage = "fault db|cache"

    @classmethod
    def parse(cls, args: list[str]) -> Action:
        return cls(one_service(args, cls.usage))

    def problem(self, experiment: Experiment, down: set[str]) -> str | None:
        if self.service in down:
            return f"{self.service} is already down at that point"
        down.add(self.service)
        return _needs_proxy(experiment, self.service, partition=False)

    async def run(self, trial: Trial) -> dict[str, Any]:
        if trial.wire.fault == "kill":
            await trial.kill(self.service)
        else:
            await trial.partition(self.service)
        return {"fault": trial.wire.fault}


@dataclass(frozen=True)
class Heal(Action):
    service: str
    usage = "heal db|cache"

    @classmethod
    def parse(cls, args: list[str]) -> Action:
        return cls(one_service(args, cls.usage))

    def problem(self, experiment: Experiment, down: set[str]) -> str | None:
        if self.service not in down:
            return f"heal {self.service} needs an earlier step that partitions or kills it"
        down.discard(self.service)
        return None

    def said(self) -> str:
        return f"{service_name(self.service)} healed"

    async def run(self, trial: Trial) -> dict[str, Any]:
        outage = await trial.heal(self.service)
        assert outage.up_ns is not None
        return {"down_s": round((outage.up_ns - outage.down_ns) / 1e9, 3)}


ACTIONS.register("partition", Partition)
ACTIONS.register("fault", Fault)
ACTIONS.register("heal", Heal)
