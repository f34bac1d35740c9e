"""`warm`: fill the cache with every key of the herd, quickly, before the experiment starts.

A round-robin burst asks once for each key (one user per key, whatever the experiment's herd is,
an open loop too) while the DB has a slot per key, then the DB's concurrency goes back to its
setting: every key is written at about the same moment. Typically followed by `expire all`, so the
herd meets warm connections and a cold cache.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from chaos.engine.actions.base import Action
from chaos.engine.herd import run_herd
from chaos.engine.registry import ACTIONS
from herdlab.retry import RetryPolicy

if TYPE_CHECKING:
    from chaos.engine.model import Experiment
    from chaos.engine.trial import Trial

WARM_DEADLINE_S = 60.0
MAX_WARM_KEYS = 100_000  # one user per key, and a herd has at most this many users


@dataclass(frozen=True)
class Warm(Action):
    usage = "warm"

    @classmethod
    def parse(cls, args: list[str]) -> Action:
        if args:
            raise ValueError(f"usage: {cls.usage}")
        return cls()

    def problem(self, experiment: Experiment, down: set[str]) -> str | None:
        if experiment.herd.keys > MAX_WARM_KEYS:
            keys = experiment.herd.keys
            return f"warm asks for each key once: at most {MAX_WARM_KEYS} keys, got {keys}"
        return None

    async def run(self, trial: Trial) -> dict[str, Any]:
        keys = trial.herd.keys
        await trial.set_db_capacity(concurrency=max(keys, trial.db.concurrency))
        config = replace(
            trial.herd_config(),
            users=keys,
            distribution="round-robin",
            requests_per_user=1,
            think_s=0.0,
            open_loop=None,  # an open-loop experiment's herd warms as a burst too
            channels=min(trial.herd.channel_count, keys),
            policy=RetryPolicy(
                name="none", max_total_s=WARM_DEADLINE_S, attempt_timeout_s=WARM_DEADLINE_S
            ),
        )
        result = await run_herd(config)
        await trial.set_db_capacity(concurrency=trial.db.concurrency)
        summary = result.summary()
        return {"ok": summary["ok"], "errors": summary["errors"]}


ACTIONS.register("warm", Warm)
