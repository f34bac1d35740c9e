"""The metastable failure: load below capacity, a trigger, the trigger gone, the overload kept.

An open loop asks the cache for fresh keys (`distribution = "unique"`: every request a miss, so
the DB sees the load) at `rate_per_s`, 80% of the DB's 200/s by default, for the whole run. After
`before_s` of healthy traffic a trigger hits the DB for `trigger_s` (a latency spike to
`spike_latency_s`, or an outage), then it is gone; the run goes on for `after_s`. Each
configuration (the cache's guards towards the DB, the DB's queue discipline) runs on a fresh
stack from the folder's `experiment.toml`, whose numbers were tuned
on a 2-core machine (see `MetastableConfig`).

Why FIFO stays collapsed (the sustaining effect is the cache's retries, and it is honest: no
query the DB could have finished is thrown away by the lab):

- during the trigger every fetch fails and retries (500 ms attempts, 50..200 ms backoff, 3 s per
  fetch), so about rate x 3 s = 480 fetches are alive, each attempting about 1.5 times a second:
  ~700 attempts/s, against a DB that serves 200 queries/s;
- once the trigger is gone the FIFO queue still stands at the attempt deadline: the queries at
  its head have waited nearly 500 ms. The DB drops at dequeue those with less than its base
  latency (50 ms) left; the next ones have barely more than 50 ms left and start, but a query
  takes 50..150 ms, so most are cut by their deadline mid-service (stage `work`): slot time
  spent for nothing, a failed attempt, a retry. The DB gets through ~400 such queries a second,
  fewer than the retries bring, so the queue never drains and almost no fetch succeeds;
- the users wait 500 ms, less than the cache's fetch budget: a fetch goes on after its user has
  gone, which is what makes the cache's backlog outlive the users who asked.

The cures end it without knowing the trigger: CoDel sheds queries that join a standing queue
after 5 ms, so those served have their whole deadline ahead; adaptive LIFO serves the newest
first; a static concurrency limit of 20 (the DB's real concurrency, by Little's law) that refuses
rather than queues keeps the DB's queue empty. The lab's `recommended` set (an AIMD limit with a
FIFO wait, and a breaker) is run beside them: its wait moves the standing queue from the DB into
the cache, where fetches reach the head with their budget nearly spent.

Measures (one file each under `chaos/engine/measures/`): `goodput_per_s` (answers that reached
a waiting user, per 100 ms, as a rate), `collapsed_s`, `back_to_90pct_s` (from the trigger's
end, in 1 s windows), `attempts` at each hop, `drops_by_stage` at the DB, `lost`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from chaos.engine.bounds import out_of_range
from chaos.engine.kinds import Column, Kind, Plot, Row, fault_window, from_options
from chaos.engine.model import Experiment
from chaos.engine.registry import KINDS
from chaos.scenarios.metastable.plot import plot_metastable
from herdlab import queueing
from herdlab.config import format_duration
from herdlab.guards import parse_guard_set

SCENARIO = "metastable"
TRIGGERS = ("latency", "outage")
# The DB's base latency in the shipped file: a latency spike returns to it.
DB_LATENCY_S = 0.05
DEFAULT_CONFIGURATIONS: tuple[tuple[str, str], ...] = (
    ("none", "fifo"),
    ("none", "codel"),
    ("none", "lifo"),
    ("recommended", "fifo"),
    ("limit:n=20,queue=0+breaker", "fifo"),
)
MAX_CONFIGURATIONS = 8
MAX_RATE_PER_S = 1000.0
MAX_RUN_S = 3600.0


def parse_configuration(text: str) -> tuple[str, str]:
    """`GUARDS/QUEUE` (e.g. `none/fifo`, `limit:n=20+breaker/fifo`) -> (guards, queue);
    ValueError naming what is allowed."""
    guards, sep, queue = text.strip().rpartition("/")
    if not sep or not guards.strip():
        raise ValueError(f"configuration {text!r}: write GUARDS/QUEUE, e.g. none/fifo")
    if queue not in queueing.NAMES:
        raise ValueError(
            f"configuration {text!r}: queue must be one of {', '.join(queueing.NAMES)}"
        )
    parse_guard_set(guards.strip())
    return guards.strip(), queue


@dataclass(frozen=True)
class MetastableConfig:
    """The scenario's knobs, each bounded (`problems()`); the stack's tuned numbers are the
    shipped file's (`[params]`). Tuned on 2 cores:

    - 160 arrivals/s (80% of 200/s): healthy goodput ~160/s, p99 well under the users' 500 ms;
    - a 5 s spike to 1 s latency: longer than the cache's 3 s fetch budget, so the backlog of
      failing fetches is at its largest when the trigger ends (2 s already does it);
    - 60 s after it: enough to see that FIFO does not come back by itself.
    """

    configurations: tuple[tuple[str, str], ...] = DEFAULT_CONFIGURATIONS
    rate_per_s: float = 160.0
    trigger: str = "latency"
    trigger_s: float = 5.0
    before_s: float = 5.0
    after_s: float = 60.0
    spike_latency_s: float = 1.0
    seed: int = 42

    @property
    def duration_s(self) -> float:
        return self.before_s + self.trigger_s + self.after_s

    def problems(self) -> list[str]:
        found = []
        if not 1 <= len(self.configurations) <= MAX_CONFIGURATIONS:
            found.append(f"name 1..{MAX_CONFIGURATIONS} configurations")
        if len(set(self.configurations)) != len(self.configurations):
            found.append("each configuration may be named once")
        for guards, queue in self.configurations:
            try:
                parse_configuration(f"{guards}/{queue}")
            except ValueError as exc:
                found.append(str(exc))
        found += out_of_range("rate", self.rate_per_s, f"(0, {MAX_RATE_PER_S:g}]/s")
        if self.trigger not in TRIGGERS:
            found.append(f"trigger must be one of {', '.join(TRIGGERS)}, got {self.trigger!r}")
        found += out_of_range("trigger duration", self.trigger_s, "[100ms, 60s]")
        found += out_of_range("time before the trigger", self.before_s, "[1s, 60s]")
        found += out_of_range("time after the trigger", self.after_s, "[5s, 10m]")
        spike = f"({format_duration(DB_LATENCY_S, short=True)}, 60s]"
        return found + out_of_range("spike latency", self.spike_latency_s, spike)

    def command(self) -> str:
        """The `chaos` command line that runs this configuration."""
        parts = [
            "chaos scenario metastable",
            *(f"--configuration '{g}/{q}'" for g, q in self.configurations),
            f"--rate {self.rate_per_s:g}",
            f"--trigger {self.trigger}",
            f"--for {self.trigger_s:g}s",
            f"--after {self.after_s:g}s",
            f"--seed {self.seed}",
        ]
        return " ".join(parts)

    def trigger_actions(self) -> tuple[str, str]:
        """The timeline's two actions: the trigger and its end."""
        if self.trigger == "outage":
            return "kill db", "restore db"
        return (
            f"latency db {format_duration(self.spike_latency_s)}",
            f"latency db {format_duration(DB_LATENCY_S)}",
        )

    def params(self) -> dict[str, Any]:
        """The shipped experiment's params for this configuration."""
        start, end = self.trigger_actions()
        return {
            "configurations": [
                {"cache.guards": g, "db.queue_discipline": q} for g, q in self.configurations
            ],
            "rate": self.rate_per_s,
            "duration": format_duration(self.duration_s),
            "before": format_duration(self.before_s),
            "trigger_for": format_duration(self.trigger_s),
            "trigger": start,
            "trigger_end": end,
            "db_latency": format_duration(DB_LATENCY_S),
            "seed": self.seed,
        }


def _config(experiment: Experiment) -> dict[str, Any]:
    db, cache, herd = experiment.db, experiment.cache, experiment.herd
    trigger_at_s, trigger_for_s = fault_window(experiment)
    return {
        "rate_per_s": herd.rate_per_s,
        "duration_s": herd.duration_s,
        "trigger": [s.do for s in experiment.timeline],
        "trigger_at_s": trigger_at_s,
        "trigger_for_s": trigger_for_s,
        "db_capacity_per_s": db.capacity_per_s,
        "db": {k: v for k, v in asdict(db).items() if k != "queue_discipline"},
        "cache": {k: v for k, v in asdict(cache).items() if k != "guards"},
        "herd_deadline_s": herd.deadline_s,
    }


def _label(variant: Mapping[str, Any]) -> str:
    guards = variant.get("cache.guards", "none")
    queue = variant.get("db.queue_discipline", "fifo")
    rest = [
        f"{k}={v}" for k, v in variant.items() if k not in ("cache.guards", "db.queue_discipline")
    ]
    return ", ".join([f"{guards}/{queue}", *rest])


def _announce(experiment: Experiment, variant: Mapping[str, Any]) -> str:
    db, _, herd = experiment.settings_for(variant)
    return (
        f"Metastable: {_label(variant)} ({herd.rate_per_s or 0:g} arrivals/s, "
        f"DB {db.capacity_per_s:g}/s, trigger {' then '.join(s.do for s in experiment.timeline)})"
    )


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:g} s"


def _describe(row: Row) -> list[str]:
    attempts = row["attempts"]
    return [
        f"  {row['configuration']}: collapsed {_seconds(row['collapsed_s'])} after the trigger, "
        f"back to 90% {_seconds(row['back_to_90pct_s'])}; attempts herd {attempts['herd']:,}, "
        f"cache->DB {attempts['cache_to_db']:,}; DB drops {row['drops_by_stage']}; "
        f"lost {row['lost']}"
    ]


COLUMNS = (
    Column("configuration", format="text"),
    Column("policy", format="text"),
    Column("collapsed_s", format="num1"),
    Column("back_to_90pct_s", format="num1"),
    Column("attempts.herd", "herd_attempts"),
    Column("attempts.cache_to_db", "cache_db_attempts"),
    Column("drops_by_stage", "db_drops", "drops"),
    Column("drops_by_stage.rejected", "db_rejected", default=0),
    Column("errors", format="sum"),
    Column("lost"),
)
READING = (
    "Each row is one configuration on its own fresh stack, 100 ms per bar, as a rate "
    "per second. Bars are goodput: answers that reached a user still waiting. The step line "
    "is every query that reached the DB, the dashed line what the DB can serve, the shaded "
    "band the trigger. Under FIFO the DB stays busy after the trigger is gone, at several "
    "times its capacity in arrivals, while goodput stays near zero: the queue stands at the "
    "cache's attempt deadline, the queries served are cut by it mid-service, and their "
    "retries keep the queue standing. `collapsed_s` is the time after the trigger's end that "
    "goodput spent below half the DB's capacity (1 s windows, up to the run's end), "
    "`back_to_90pct_s` the time to the first window at 90% of the arrival rate. DB drops "
    "are by stage: deadline (too little time "
    "left at dequeue), work (cut mid-service), queue (caller gone while waiting), codel "
    "(shed)."
)


def configure(values: Mapping[str, Any]) -> MetastableConfig:
    """`chaos scenario metastable`'s options (no `--configuration`: the default ones)."""
    parsed = tuple(parse_configuration(c) for c in values["configurations"])
    return from_options(
        MetastableConfig,
        values,
        configurations=parsed or DEFAULT_CONFIGURATIONS,
        trigger=values["trigger_kind"],
        trigger_s=values["trigger_for"],
    )


KIND = KINDS.register(
    SCENARIO,
    Kind(
        SCENARIO,
        fields=(
            "policy",
            "guards",
            "queue",
            "collapsed_s",
            "back_to_90pct_s",
            "attempts",
            "drops_by_stage",
            "lost",
            "errors",
            "guards_spec",
            "arrival_rate_per_s",
            "herd_deadline_s",
            "db_capacity_per_s",
            "trigger_s",
            "reconnect_lag_s",
            "slot_time_amplification",
            "goodput_per_s",
            "db_arrivals_per_s",
            "guard_timeline",
        ),
        config=_config,
        announce=_announce,
        describe=_describe,
        derive=lambda row: {"configuration": f"{row['guards']}/{row['queue']}"},
        title="Metastable failure: the trigger gone, the overload kept by retries",
        columns=COLUMNS,
        plots=(Plot(plot_metastable, "Goodput and DB arrivals per 100 ms, per configuration"),),
        reading=READING,
        configure=configure,
    ),
)
