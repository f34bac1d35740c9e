"""`set db.concurrency 40`, `set db.queue_discipline codel`, `set cache.coalescing false`,
`set cache.stale_if_error 30s`: change a service's setting while it runs, through its admin
plane.

The settings that can change at runtime, and the admin field each becomes. The value is written
as on the service's command line and checked against the setting's declared bounds when the
file is read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from cache_service.settings import CacheSettings
from chaos.engine.actions.base import Action
from chaos.engine.registry import ACTIONS
from db_service.settings import DbSettings
from herdlab.settings import Setting, by_key
from protos import admin_pb2

if TYPE_CHECKING:
    from chaos.engine.model import Experiment
    from chaos.engine.trial import Trial

# db key -> how its value becomes an admin request (SetFaults or SetCapacity).
_DB: dict[str, Callable[[Any], admin_pb2.Faults | admin_pb2.Capacity]] = {
    "latency": lambda v: admin_pb2.Faults(latency_ms=v * 1000),
    "spread": lambda v: admin_pb2.Faults(spread_ms=v * 1000),
    "error_rate": lambda v: admin_pb2.Faults(error_rate=v),
    "concurrency": lambda v: admin_pb2.Capacity(concurrency=v),
    "queue": lambda v: admin_pb2.Capacity(queue=v),
    "queue_discipline": lambda v: admin_pb2.Capacity(discipline=v),
    "codel_target": lambda v: admin_pb2.Capacity(codel_target_ms=v * 1000),
    "codel_interval": lambda v: admin_pb2.Capacity(codel_interval_ms=v * 1000),
}
# cache key -> how its value becomes a SetFreshness request.
_CACHE: dict[str, Callable[[Any], admin_pb2.Freshness]] = {
    "stale_while_revalidate": lambda v: admin_pb2.Freshness(stale_while_revalidate_s=v),
    "stale_if_error": lambda v: admin_pb2.Freshness(stale_if_error_s=v),
    "beta": lambda v: admin_pb2.Freshness(beta=v),
    "ttl_jitter": lambda v: admin_pb2.Freshness(ttl_jitter_pct=v),
}
RUNTIME = (*(f"db.{k}" for k in _DB), "cache.coalescing", *(f"cache.{k}" for k in _CACHE))


def _word(spec: Setting, word: str) -> Any:
    """A command-line word as the setting's typed value (ValueError if it is not one)."""
    if spec.kind == "int":
        return int(word)
    if spec.kind in ("probability", "float"):
        return float(word)
    return spec.parse(word)


@dataclass(frozen=True)
class Set(Action):
    target: str  # e.g. "db.concurrency"
    value: Any
    usage = "set SETTING VALUE, SETTING one of " + ", ".join(RUNTIME)

    @classmethod
    def parse(cls, args: list[str]) -> Action:
        if len(args) != 2 or args[0] not in RUNTIME:
            raise ValueError(f"usage: {cls.usage}")
        target, word = args
        if target == "cache.coalescing":
            if word not in ("true", "false"):
                raise ValueError(f"coalescing must be true or false, got {word!r}")
            return cls(target, word == "true")
        section, key = target.split(".", 1)
        spec = by_key(DbSettings if section == "db" else CacheSettings)[key][1]
        try:
            value = _word(spec, word)
        except ValueError as exc:
            raise ValueError(f"{target}: {exc}") from None
        problem = spec.problem(value)
        if problem:
            raise ValueError(f"{target}: {problem}")
        return cls(target, value)

    def problem(self, experiment: Experiment, down: set[str]) -> str | None:
        """The DB's settings with this value must hold together (CoDel's target within its
        interval, say), as the admin plane will check them."""
        if self.target.startswith("cache."):
            return None  # each freshness setting is bounded alone, checked when parsed
        key = self.target.split(".", 1)[1]
        db = replace(experiment.db, **{by_key(DbSettings)[key][0]: self.value})
        problems = db.problems()
        return f"{self.target}: {problems[0]}" if problems else None

    async def run(self, trial: Trial) -> dict[str, Any]:
        async with trial.admin() as admin:
            if self.target == "cache.coalescing":
                await admin.set_coalescing(bool(self.value))
                return {}
            if self.target.startswith("cache."):
                await admin.set_freshness(_CACHE[self.target.split(".", 1)[1]](self.value))
                return {}
            request = _DB[self.target.split(".", 1)[1]](self.value)
            if isinstance(request, admin_pb2.Faults):
                state = await admin.set_faults(request)
            else:
                state = await admin.set_capacity(request)
        return {"capacity_per_s": round(state.capacity_per_s, 1)}


ACTIONS.register("set", Set)
