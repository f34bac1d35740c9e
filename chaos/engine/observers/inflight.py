"""`inflight`: the cache's coalescer entries once the herd has ended, after waiting (at most the
cache's whole fetch budget and a margin) for fetches that outlived their callers to end. 0 means
nothing leaks in flight."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from chaos.engine.registry import OBSERVERS

if TYPE_CHECKING:
    from chaos.engine.trial import Trial

MARGIN_S = 5.0
POLL_S = 0.02


class InflightObserver:
    def __init__(self, trial: Trial) -> None:
        self.trial = trial

    async def start(self) -> None:
        return None

    def on_release(self) -> None:
        return None

    async def finish(self) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.trial.cache.retry_total_s + MARGIN_S
        async with self.trial.admin() as admin:
            in_flight = (await admin.cache_state()).in_flight_keys
            while in_flight and loop.time() <= deadline:
                await asyncio.sleep(POLL_S)
                in_flight = (await admin.cache_state()).in_flight_keys
        return int(in_flight)

    async def close(self) -> None:
        return None


OBSERVERS.register("inflight", InflightObserver)
