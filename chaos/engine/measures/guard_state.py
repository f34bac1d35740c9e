"""`guard_timeline`: the state of the cache's guards over time (tokens, rejection probability,
breaker state, current limit, calls in flight and waiting), sampled from the cache's own
`/metrics` (`herdlab_guard_state{side="cache"}`) every 100 ms from the herd's release.

Sampled by an observer thread, so a busy event loop does not skew the sampling; a scrape that
fails (the cache killed or paused) is a gap, not an error. Bounded by the experiment's limit.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING, Any

from chaos.engine.measures.base import measure
from chaos.engine.observations import Observations
from chaos.engine.registry import OBSERVERS
from herdlab.metrics import GUARD_STATE, sample
from herdlab.scrape import Scrape, read

if TYPE_CHECKING:
    from chaos.engine.trial import Trial

SAMPLE_S = 0.1
SCRAPE_TIMEOUT_S = 0.5


def guard_state(scrape: Scrape) -> dict[str, float]:
    """The cache side's guard state in a /metrics page, as {"<guard>_<key>": value}."""
    return {
        f"{s.labels['guard']}_{s.labels['key']}": s.value
        for s in scrape.select(sample(GUARD_STATE), side="cache")
    }


class GuardSampler:
    """Scrapes the cache's guard state every SAMPLE_S from the release to the trial's end."""

    def __init__(self, trial: Trial) -> None:
        self.trial = trial
        self.samples: list[tuple[int, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread: asyncio.Future[None] | None = None

    async def start(self) -> None:
        self._url = self.trial.metrics_urls["cache"]

    def on_release(self) -> None:
        self._thread = asyncio.ensure_future(asyncio.to_thread(self._run))

    def _run(self) -> None:
        deadline = time.monotonic() + self.trial.experiment.end_limit_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                state = guard_state(read("cache", self._url, SCRAPE_TIMEOUT_S))
            except OSError:
                state = None
            if state:
                self.samples.append((time.time_ns(), state))
            self._stop.wait(SAMPLE_S)

    async def finish(self) -> list[tuple[int, dict[str, float]]]:
        await self.close()
        return self.samples

    async def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await self._thread


OBSERVERS.register("guard_state", GuardSampler)


@measure("guard_timeline", needs=("guard_state",))
def guard_timeline(obs: Observations) -> dict[str, Any]:
    """{"t_s": [...], "<guard>_<key>": [...]}: each sample's time from the herd's release and
    every state value at it; empty lists when the cache ran no guard."""
    samples = obs.series.get("guard_state", [])
    keys = sorted({k for _, state in samples for k in state})
    timeline: dict[str, Any] = {"t_s": [round((t - obs.t0_ns) / 1e9, 3) for t, _ in samples]}
    for key in keys:
        timeline[key] = [state.get(key) for _, state in samples]
    return timeline
