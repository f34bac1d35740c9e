"""What every action is: parsed from its words at check time, run against a trial."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from chaos.lab.backends.base import is_service

if TYPE_CHECKING:
    from chaos.engine.spec import Experiment
    from chaos.engine.trial import Trial


class Action(ABC):
    usage: str  # e.g. "kill db|cache"

    @classmethod
    @abstractmethod
    def parse(cls, args: list[str]) -> Action:
        """The action for these words; ValueError naming what is allowed otherwise."""

    @abstractmethod
    async def run(self, trial: Trial) -> dict[str, Any]:
        """Does it; returns what the journal records of it."""

    def problem(self, experiment: Experiment, down: set[str]) -> str | None:
        """What this action cannot do in `experiment`, checked before anything starts, with
        `down` the services killed by earlier steps (an action that kills or restores updates
        it). None: nothing."""
        return None

    def said(self) -> str | None:
        """How the run's narration says it was done (None: the action's words as written)."""
        return None


def service_name(service: str) -> str:
    """How narration names a service: the DB, the cache."""
    return "DB" if service == "db" else service


def absent(experiment: Experiment, service: str) -> str | None:
    """Why no row of `experiment` has `service` (e.g. `redis` without the shared store), or
    None when some row has it."""
    stacks = [experiment.stack_for(v) for v in experiment.combinations()]
    if service == "redis" and all(s.store != "redis" for s in stacks):
        return 'no row runs redis; set [stack] store = "redis"'
    if service == "cache" and all(s.replicas > 1 for s in stacks):
        return "with replicas the cache's services are cache-1 .. cache-R"
    if service.startswith("cache-") and all(int(service[6:]) > s.replicas for s in stacks):
        return f"no row has a replica {service}; set [stack] replicas"
    return None


def one_service(args: list[str], usage: str) -> str:
    if len(args) != 1 or not is_service(args[0]):
        raise ValueError(f"usage: {usage}")
    return args[0]
