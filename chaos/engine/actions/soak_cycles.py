"""`soak-cycles N outage DURATION cache-kills K warmup W`: fault cycles under steady traffic.

One cycle is these faults in turn, each followed by recovery (the `probe` observer gets a
never-seen key served through the cache from the DB) and by at least `users` more herd requests:

1. `db kill`: SIGKILL the DB, wait the outage, restore it serving the next data version (the
   probe's freshness oracle is told, so a value older than the TTL becomes visible as such);
2. `db pause`: SIGSTOP the DB for the outage, then SIGCONT;
3. `cache pause`: the same for the cache (with replicas, for each in turn, one per cycle);
4. `cache kill`: SIGKILL the cache (the first replica), wait the outage, restore it (only in the
   first K cycles);
5. `redis kill`, 6. `redis pause`: the same for the shared store's redis-server (a stack with
   `[stack] store = "redis"`); it comes back empty (no persistence);
7. `db partition`: the DB's wire-proxy link blackholed both ways for the outage, then healed;
8. `db reset`: every connection on that link reset at once (TCP RST) (7 and 8 on a stack with
   `[stack] proxy = "db"`).

The herd must run in rounds (`[herd] rounds = true`): it is held between two rounds to read the
lab's processes at a quiescent point. A killed and restored process is a new one, so leaks show
best in a long-lived one: the cache (its first replica) is killed in the first K cycles and never
again, and its first W cycles are its warm-up. At the end of the warm-up every lab process (DB,
redis, wire proxy, each cache replica) is read at rest (RSS and fds,
`chaos/engine/cache_resources.py`), and again at the end of every later cycle: each reading is
compared with its service's first, as `drift` (the largest |after / before - 1| of RSS and of
the fds other than established connections, whose number a client's pool sets). The long-lived
cache's RSS is also read at the end of each of its cycles (herd running) to show the trend. The
action reports all of it to the journal, where the soak's measures read it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chaos.engine.actions.base import Action
from chaos.engine.actions.wire import Partition, put
from chaos.engine.bounds import out_of_range
from chaos.engine.cache_resources import Resources, at_rest, rss
from chaos.engine.checked_client import CheckedClient
from chaos.engine.herd_rounds import HerdRounds
from chaos.engine.observers.probe import ProbeObserver
from chaos.engine.registry import ACTIONS
from herdlab.config import parse_duration
from protos import wire_pb2

if TYPE_CHECKING:
    from chaos.engine.model import Experiment
    from chaos.engine.trial import Trial

NAME = "soak-cycles"
STEPS = (
    "db kill",
    "db pause",
    "cache pause",
    "cache kill",
    "redis kill",
    "redis pause",
    "db partition",
    "db reset",
)
MAX_CYCLES = 10_000
MAX_OUTAGE_S = 60.0
# The first cache replica holds exactly these connections at rest: the probe's and the reading
# admin's; every other replica, the probe's (its channel balances over all of them).
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
    redis_restarts: int = 0
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

    def steps(self, cycle: int) -> list[str]:
        """The faults of `cycle` on this stack: redis's with a shared store, the DB link's with
        the wire proxy in front of the DB, the cache's kill in the first K cycles."""
        trial = self.trial
        found = [
            step
            for step in STEPS
            if not (step == "cache kill" and cycle > self.plan.cache_kills)
            and not (step.startswith("redis") and "redis" not in trial.targets)
            and not (step in ("db partition", "db reset") and not self._proxied())
        ]
        return found

    def _proxied(self) -> bool:
        return self.trial.wire_address is not None and "db" in self.trial.wire.proxied()

    async def run(self) -> dict[str, Any]:
        plan, trial = self.plan, self.trial
        await self.client.until_served("start")
        await self.rounds.until_more(trial.herd.users, "start")
        first: dict[str, Resources] = {}
        last: dict[str, Resources] = {}
        drift: dict[str, dict[str, Any]] = {}
        rss_by_cycle = []
        for cycle in range(1, plan.cycles + 1):
            took = {}
            for step in self.steps(cycle):
                took[step] = await self._fault(step, cycle, f"cycle {cycle}'s {step}")
            if cycle > plan.cache_kills:  # the long-lived cache's cycles
                rss_by_cycle.append(rss(self._pid(self.trial.caches[0])))
            if cycle >= plan.from_cycle:
                last = await self._at_rest()
                first = first or last
                _drift(drift, first, last, cycle)
            r = self.rounds
            trial.emit(
                f"cycle {cycle}/{plan.cycles}: "
                + ", ".join(f"{step} {s:.2f}s" for step, s in took.items())
                + f" (recovery); herd {r.sent:,} sent, {r.ok:,} ok, {r.lost.total()} lost"
            )
            if trial.on_progress is not None:
                trial.on_progress(cycle, plan.cycles)
        cache = trial.caches[0]
        return {
            "cycles": plan.cycles,
            "db_restarts": self.counts.db_restarts,
            "db_version_last": self.client.freshness.current,
            "cache_restarts": self.counts.cache_restarts,
            "redis_restarts": self.counts.redis_restarts,
            "recovery_s": {
                step: {"count": len(times), "max": round(max(times), 3)}
                for step, times in self.counts.recovery.items()
                if times
            },
            "cache": {
                "before": first[cache].to_json(),
                "after": last[cache].to_json(),
                "from_end_of_cycle": plan.from_cycle,
                "to_end_of_cycle": plan.cycles,
                "rss_by_cycle": rss_by_cycle,
            },
            "processes": drift,
        }

    async def _fault(self, step: str, cycle: int, what: str) -> float:
        """One fault, then recovery; returns seconds from the service's return to recovery."""
        trial, (service, action) = self.trial, step.split()
        if service == "cache":  # with replicas: killed, the first; paused, each in turn
            caches = trial.caches
            service = caches[0] if action == "kill" else caches[(cycle - 1) % len(caches)]
        if action == "kill":
            await trial.kill(service)
            await asyncio.sleep(self.plan.outage_s)
            if service == "db":
                version = self.client.freshness.current + 1
                await trial.restore("db", ["--data-version", str(version)])
                self.client.freshness.serving(version, time.monotonic())
                self.counts.db_restarts += 1
            else:
                await trial.restore(service)
                if service == "redis":
                    self.counts.redis_restarts += 1
                else:
                    self.counts.cache_restarts += 1
        elif action == "pause":
            await trial.pause(service)
            await asyncio.sleep(self.plan.outage_s)
            await trial.resume(service)
        elif action == "partition":
            await Partition(service, None).run(trial)
            await asyncio.sleep(self.plan.outage_s)
            await trial.heal(service)
        else:  # reset: every connection on the link now, once
            await put(trial, RESET)
        back = time.monotonic()
        await self.client.until_served(what)
        recovered = time.monotonic() - back
        self.counts.recovery[step].append(recovered)
        await self.rounds.until_more(trial.herd.users, what)
        return recovered

    async def _at_rest(self) -> dict[str, Resources]:
        """Every lab process's resources with the herd held between rounds and only the probe's
        connections (and, on the first replica, an admin's) open to the caches."""
        trial = self.trial
        await self.rounds.hold()
        try:
            async with trial.admin() as admin:
                await admin.cache_state()  # its connection is open while the caches are read
                found = {}
                for name in trial.targets:
                    own = OWN_CONNECTIONS if name == trial.caches[0] else 1
                    port = int(trial.targets[name].rsplit(":", 1)[1])
                    # The caches settle to the probe's connections; the others are read as
                    # they are then (the DB and redis hold what the caches keep open).
                    expected = (port, own) if name in trial.caches else None
                    found[name] = await at_rest(self._pid(name), expected)
                return found
        finally:
            self.rounds.release()

    def _pid(self, service: str) -> int:
        pid = self.trial.pids.get(service)
        if pid is None:
            raise RuntimeError(f"{NAME}: {service} is not running")
        return pid


def _drift(
    drift: dict[str, dict[str, Any]],
    first: dict[str, Resources],
    now: dict[str, Resources],
    cycle: int,
) -> None:
    """Adds the readings `now` (at the end of `cycle`) to each process's record in `drift`: its
    first reading, its last, the largest change of RSS and of fds other than established
    connections (`Resources.other_fds`) from the first, as a fraction, and at which cycle's end
    each was seen; the most established connections it held at rest."""
    for name, reading in now.items():
        base = first[name]
        record = drift.setdefault(
            name,
            {
                "first": base.to_json(),
                "rss_drift": 0.0,
                "rss_drift_cycle": cycle,
                "fds_drift": 0.0,
                "fds_drift_cycle": cycle,
                "processes": 1,
                "settled": True,
            },
        )
        if reading.pid != record.get("last", record["first"])["pid"]:
            record["processes"] += 1
        record["last"] = reading.to_json()
        record["settled"] = record["settled"] and reading.settled
        record["connections_max"] = max(record.get("connections_max", 0), reading.connections)
        for figure, attribute in (("rss", "rss"), ("fds", "other_fds")):
            change = round(abs(getattr(reading, attribute) / getattr(base, attribute) - 1.0), 4)
            if change > record[f"{figure}_drift"]:
                record[f"{figure}_drift"] = change
                record[f"{figure}_drift_cycle"] = cycle


RESET = wire_pb2.Fault(name="db-reset", link="db", kind="reset", stream="both", once=True)


ACTIONS.register(NAME, SoakCycles)
