"""`probe`: a checked client reading the herd's keys throughout the trial, on its own connection.

Every value it gets is checked for being its key's value at its version and for being no older
than the freshness oracle allows (the cache's TTL after a DB of a newer version came up); an
action that restores the DB at a new data version tells the oracle (`freshness.serving`). Its
never-seen keys (`until_served`) tell when a fault is over. `finish()` gives its counts. Over
several cache replicas it reads through each in turn (round_robin), as the herd does.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from chaos.engine.checked_client import CheckedClient
from chaos.engine.freshness_oracle import Freshness
from chaos.engine.herd import replicas_target
from chaos.engine.registry import OBSERVERS

if TYPE_CHECKING:
    from chaos.engine.trial import Trial


class ProbeObserver:
    def __init__(self, trial: Trial) -> None:
        self.trial = trial
        self.client: CheckedClient | None = None
        self._reading: asyncio.Task[None] | None = None

    async def start(self) -> None:
        trial = self.trial
        self.client = CheckedClient(
            replicas_target([trial.targets[name] for name in trial.caches]),
            keys=trial.herd.keys,
            key_prefix=trial.herd_config().key_prefix,
            freshness=Freshness(trial.cache.ttl_s, first_version=trial.db.version),
            deadline_s=trial.herd.deadline_s,
            tls_ca=trial.tls_ca,
        )

    def on_release(self) -> None:
        assert self.client is not None
        self._reading = asyncio.create_task(self.client.run())

    async def finish(self) -> dict[str, Any]:
        assert self.client is not None
        self.client.stop()
        if self._reading is not None:
            await self._reading
        return self.client.summary()

    async def close(self) -> None:
        if self._reading is not None and not self._reading.done():
            self._reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reading
        if self.client is not None:
            await self.client.close()


OBSERVERS.register("probe", ProbeObserver)
