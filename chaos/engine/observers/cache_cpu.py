"""`cache_cpu`: the cache process's CPU time, sampled every `INTERVAL_S` from the herd's start
to its end, across restarts (each sample names the process it read). What a connection storm
costs the server, from its own process, not from the host's load."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import TYPE_CHECKING

import psutil

from chaos.engine.registry import OBSERVERS

if TYPE_CHECKING:
    from chaos.engine.trial import Trial

INTERVAL_S = 0.1
MAX_SAMPLES = 36_000  # an hour of samples: any run (at most 1 h) fits

# (wall clock ns, pid, user + system CPU seconds of that process so far)
Sample = tuple[int, int, float]


def cpu_peak(samples: list[Sample], start_ns: int, window_s: float = 1.0) -> float | None:
    """The most CPU the process used in any `window_s` from `start_ns` on, in cores (CPU
    seconds per second), each window within one incarnation and at least half as long; None
    without such a window."""
    peak = None
    later = [s for s in samples if s[0] >= start_ns]
    first = 0
    for last in range(len(later)):
        while (
            later[last][0] - later[first][0] > window_s * 1e9 or later[first][1] != later[last][1]
        ):
            first += 1
        if last > first and later[last][0] - later[first][0] >= window_s * 1e9 * 0.5:
            used = (later[last][2] - later[first][2]) / ((later[last][0] - later[first][0]) / 1e9)
            peak = used if peak is None else max(peak, used)
    return peak


def cpu_used(samples: list[Sample], start_ns: int, end_ns: int) -> float | None:
    """The process's CPU from `start_ns` to `end_ns`, in cores, from the samples within (one
    incarnation: the last sample's); None without two of them."""
    within = [s for s in samples if start_ns <= s[0] < end_ns]
    within = [s for s in within if within and s[1] == within[-1][1]]
    if len(within) < 2 or within[-1][0] == within[0][0]:
        return None
    return (within[-1][2] - within[0][2]) / ((within[-1][0] - within[0][0]) / 1e9)


class CacheCpuObserver:
    def __init__(self, trial: Trial) -> None:
        self.trial = trial
        self.samples: deque[Sample] = deque(maxlen=MAX_SAMPLES)
        self._sampling: asyncio.Task[None] | None = None

    def _read(self) -> Sample | None:
        pid = self.trial.pids.get(self.trial.caches[0])
        if pid is None:
            return None
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            return None  # killed, or not yet started again
        return time.time_ns(), pid, times.user + times.system

    async def _sample(self) -> None:
        while True:
            sample = await asyncio.to_thread(self._read)
            if sample is not None:
                self.samples.append(sample)
            await asyncio.sleep(INTERVAL_S)

    async def start(self) -> None:
        self._sampling = asyncio.create_task(self._sample())

    def on_release(self) -> None:
        return None

    async def finish(self) -> list[Sample]:
        await self.close()
        return list(self.samples)

    async def close(self) -> None:
        if self._sampling is not None and not self._sampling.done():
            self._sampling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampling


OBSERVERS.register("cache_cpu", CacheCpuObserver)
