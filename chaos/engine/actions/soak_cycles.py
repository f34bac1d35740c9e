"""`soak-cycles N outage DURATION cache-kills K warmup W`: fault cycles under steady traffic.

One cycle is four faults in turn, each followed by recovery (the `probe` observer gets a
never-seen key served through the cache from the DB) and by at least `users` more herd requests:

1. `db kill`: SIGKILL the DB, wait the outage, restore it serving the next data version (the
   probe's freshness oracle is told, so a value older than the TTL becomes visible as such);
2. `db pause`: SIGSTOP the DB for the outage, then SIGCONT;
3. `cache pause`: the same for the cache;
4. `cache kill`: SIGKILL the cache, wait the outage, restore it (only in the first K cycles).

The herd must run in rounds (`[herd] rounds = true`): it is held between two rounds to read the
cache at a quiescent point. A killed and restored cache is a new process, so leaks show only in
one long-lived process: the cache is killed in the first K cycles and never again; its first W
cycles are its warm-up. Its RSS and fds are read at the end of the warm-up and of the last cycle,
both at rest (`chaos/engine/cache_resources.py`), and its RSS at the end of each of its cycles
(herd running) to show the trend. The action reports all of it to the journal, where the soak's
measures read it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chaos.engine.actions.base import Action
from chaos.engine.bounds import out_of_range
from chaos.engine.cache_resources import Resources, at_rest, rss
from chaos.engine.checked_client import CheckedClient
from chaos.engine.herd_rounds import HerdRounds
from chaos.engine.observers.probe import ProbeObserver
from chaos.engine.registry import ACTIONS
from herdlab.config import parse_duration

if TYPE_CHECKING:
    from chaos.engine.model import Experiment
    from chaos.engine.trial import Trial

NAME = "soak-cycles"
STEPS = ("db kill", "db pause", "cache pause", "cache kill")
MAX_CYCLES = 10_000
MAX_OUTAGE_S = 60.0
# The cache holds exactly these connections at rest: the probe's and the reading admin's.
OWN_CONNECTIONS = 2


@dataclass(frozen=True)
class Cycles:
    """How many cycles, each fault's length, the cycles that kill the cache, the long-lived
    cache's warm-up."""

    cycles: int
    outage_s: float
    cache_kills: int
    warmup: int

    @property
    def from_cycle(self) -> int:
        """The cycle at whose end the long-lived cache's `before` figures are read."""
        return self.cache_kills + self.warmup

    def problems(self) -> list[str]:
        found = out_of_range("cycles", self.cycles, f"1..{MAX_CYCLES}")
        if not 0 <= self.cache_kills < max(self.cycles, 1):
            found.append(
                f"cache kill cycles must be in 0..cycles-1 (the last cycle keeps its cache), "
                f"got {self.cache_kills}"
            )
        if not 1 <= self.warmup <= self.cycles - self.cache_kills:
            found.append(
                f"warm-up cycles must be in 1..(cycles - cache kill cycles), got {self.warmup}"
            )
        return found + out_of_range("outage", self.outage_s, f"(0, {MAX_OUTAGE_S:g}s]")


@dataclass(frozen=True)
class SoakCycles(Action):
    plan: Cycles
    usage = f"{NAME} N outage DURATION cache-kills K warmup W"

    @classmethod
    def parse(cls, args: list[str]) -> Action:
        words = dict(zip(args[1::2], args[2::2], strict=False))
        if len(args) != 7 or set(words) != {"outage", "cache-kills", "warmup"}:
            raise ValueError(f"usage: {cls.usage}")
        try:
            plan = Cycles(
                cycles=int(args[0]),
                outage_s=parse_duration(words["outage"]),
                cache_kills=int(words["cache-kills"]),
                warmup=int(words["warmup"]),
            )
        except ValueError as exc:
            raise ValueError(f"usage: {cls.usage} ({exc})") from None
        problems = plan.problems()
        if problems:
            raise ValueError("; ".join(problems))
        return cls(plan)

    def problem(self, experiment: Experiment, down: set[str]) -> str | None:
        if "stale_values" not in experiment.measures:
            return f"{NAME} reads through the probe: measure stale_values"
        if not experiment.herd.rounds:
            return f"{NAME} holds the herd between rounds: set [herd] rounds = true"
        return None

    def said(self) -> str:
        return f"{self.plan.cycles} soak cycles done"

    async def run(self, trial: Trial) -> dict[str, Any]:
        probe = trial.observers.get("probe")
        if not isinstance(probe, ProbeObserver) or probe.client is None:
            raise RuntimeError(f"{NAME} reads through the probe: measure stale_values")
        if trial.rounds is None:
            raise RuntimeError(f"{NAME} holds the herd between rounds: set [herd] rounds = true")
        return await _Soak(self.plan, trial, probe.client, trial.rounds).run()


@dataclass
class _Counts:
    db_restarts: int = 0
    cache_restarts: int = 0
    recovery: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STEPS})


class _Soak:
    """The cycles over a trial whose herd runs in rounds and whose probe is reading."""

    def __init__(
        self, plan: Cycles, trial: Trial, client: CheckedClient, rounds: HerdRounds
    ) -> None:
        self.plan = plan
        self.trial = trial
        self.client = client
        self.rounds = rounds
        self.counts = _Counts()

    async def run(self) -> dict[str, Any]:
        plan, trial = self.plan, self.trial
        await self.client.until_served("start")
        await self.rounds.until_more(trial.herd.users, "start")
        before: Resources | None = None
        after: Resources | None = None
        rss_by_cycle = []
        for cycle in range(1, plan.cycles + 1):
            steps = STEPS if cycle <= plan.cache_kills else STEPS[:-1]
            took = {}
            for step in steps:
                took[step] = await self._fault(step, f"cycle {cycle}'s {step}")
            if cycle > plan.cache_kills:  # the long-lived cache's cycles
                rss_by_cycle.append(rss(self._cache_pid()))
            if cycle == plan.from_cycle:
                before = await self._at_rest()
            if cycle == plan.cycles:
                after = before if cycle == plan.from_cycle else await self._at_rest()
            r = self.rounds
            trial.emit(
                f"cycle {cycle}/{plan.cycles}: "
                + ", ".join(f"{step} {s:.2f}s" for step, s in took.items())
                + f" (recovery); herd {r.sent:,} sent, {r.ok:,} ok, {r.lost.total()} lost"
            )
            if trial.on_progress is not None:
                trial.on_progress(cycle, plan.cycles)
        assert before is not None and after is not None  # plan.problems() holds
        return {
            "cycles": plan.cycles,
            "db_restarts": self.counts.db_restarts,
            "db_version_last": self.client.freshness.current,
            "cache_restarts": self.counts.cache_restarts,
            "recovery_s": {
                step: {"count": len(times), "max": round(max(times), 3)}
                for step, times in self.counts.recovery.items()
                if times
            },
            "cache": {
                "before": before.to_json(),
                "after": after.to_json(),
                "from_end_of_cycle": plan.from_cycle,
                "to_end_of_cycle": plan.cycles,
                "rss_by_cycle": rss_by_cycle,
            },
        }

    async def _fault(self, step: str, what: str) -> float:
        """One fault, then recovery; returns seconds from the service's return to recovery."""
        trial, service, action = self.trial, *step.split()
        if action == "kill":
            await trial.kill(service)
            await asyncio.sleep(self.plan.outage_s)
            if service == "db":
                version = self.client.freshness.current + 1
                await trial.restore("db", ["--data-version", str(version)])
                self.client.freshness.serving(version, time.monotonic())
                self.counts.db_restarts += 1
            else:
                await trial.restore("cache")
                self.counts.cache_restarts += 1
        else:
            await trial.pause(service)
            await asyncio.sleep(self.plan.outage_s)
            await trial.resume(service)
        back = time.monotonic()
        await self.client.until_served(what)
        recovered = time.monotonic() - back
        self.counts.recovery[step].append(recovered)
        await self.rounds.until_more(trial.herd.users, what)
        return recovered

    async def _at_rest(self) -> Resources:
        """The cache's resources with the herd held between rounds and only the probe's and an
        admin connection open."""
        await self.rounds.hold()
        try:
            async with self.trial.admin() as admin:
                await admin.cache_state()  # its connection is open while the cache is read
                port = int(self.trial.targets["cache"].rsplit(":", 1)[1])
                return await at_rest(self._cache_pid(), port, OWN_CONNECTIONS)
        finally:
            self.rounds.release()

    def _cache_pid(self) -> int:
        pid = self.trial.pids.get("cache")
        if pid is None:
            raise RuntimeError(f"{NAME}: the cache is not running")
        return pid


ACTIONS.register(NAME, SoakCycles)
