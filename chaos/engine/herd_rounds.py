"""The herd in rounds: steady traffic that a timeline can run under for as long as it takes.

Round after round of the same herd (each `users` x `requests_per_user`, a seed of its own) until
`stop()`; the round in progress then ends on its own, so the traffic is always bounded by its
requests' deadlines. Between rounds the herd can be held (`hold`, `release`): a quiescent point
where no herd connection is open. `until_more(n)` returns once n more requests have finished.

The result is one `HerdResult` over every round (the first round's release is the herd's), so
the same measures read a herd that ran once or in rounds. It keeps every request's outcome (about
half a kilobyte each): a three-minute soak's ~100,000 requests take ~50 MB.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

from chaos.engine.herd import HerdConfig, HerdHooks, HerdResult, Outcome, run_herd

MAX_ROUNDS = 1_000_000
WAIT_TIMEOUT_S = 60.0  # `until_more` fails the run if the herd is this slow


@dataclass
class RoundsResult(HerdResult):
    rounds: int = 0


class HerdRounds:
    def __init__(self, config: HerdConfig, on_release: Callable[[], None] | None = None) -> None:
        self.config = config
        self.on_release = on_release
        self.rounds = 0
        self.done = 0  # requests finished, over all rounds
        self._done_before_round = 0
        self.sent = 0
        self.ok = 0
        self.lost: Counter[str] = Counter()
        self._outcomes: list[Outcome] = []
        self._wrong = 0
        self._first_errors: dict[str, str] = {}
        self._first: HerdResult | None = None
        self._go = asyncio.Event()
        self._go.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        self._targets: list[tuple[int, asyncio.Event]] = []

    def _progress(self, done_in_round: int, _total: int) -> None:
        self._advance(self._done_before_round + done_in_round)

    def _advance(self, done: int) -> None:
        self.done = done
        for target, reached in self._targets:
            if done >= target:
                reached.set()

    def _add(self, result: HerdResult) -> None:
        summary = result.summary()
        self.sent += summary["sent"]
        self.ok += summary["ok"]
        self.lost.update(result.lost)
        self._wrong += result.wrong_values
        for code, message in result.first_errors.items():
            self._first_errors.setdefault(code, message)
        self._outcomes += result.outcomes
        self._first = self._first or result
        self._done_before_round += summary["sent"]
        self._advance(self._done_before_round)

    async def run(self) -> RoundsResult:
        """Runs rounds until `stop()`; returns what every round saw."""
        started = time.monotonic()
        for number in range(MAX_ROUNDS):
            # Not just one wait: `hold` may clear the event again after it woke this loop.
            while not self._go.is_set():
                await self._go.wait()
            if self._stopping:
                break
            self._idle.clear()
            try:
                seed = None if self.config.seed is None else self.config.seed + number
                on_release = self.on_release if number == 0 else None
                hooks = HerdHooks(on_progress=self._progress, on_release=on_release)
                self._add(await run_herd(replace(self.config, seed=seed), hooks))
                self.rounds += 1
            finally:
                self._idle.set()
        return self._result(time.monotonic() - started)

    def _result(self, seconds: float) -> RoundsResult:
        first = self._first
        return RoundsResult(
            users=self.config.users,
            outcomes=self._outcomes,
            release_ns=first.release_ns if first else 0,
            release_spread_s=first.release_spread_s if first else 0.0,
            lost=self.lost,
            wrong_values=self._wrong,
            seconds=seconds,
            first_errors=self._first_errors,
            connected_channels=first.connected_channels if first else 0,
            rounds=self.rounds,
        )

    async def hold(self) -> None:
        """Lets the current round finish and starts no other until `release`."""
        self._go.clear()
        await self._idle.wait()

    def release(self) -> None:
        self._go.set()

    def stop(self) -> None:
        """Starts no other round; `run` returns once the current one has ended."""
        self._stopping = True
        self._go.set()

    async def until_more(self, requests: int, what: str) -> None:
        """Returns once `requests` more herd requests have finished."""
        reached = asyncio.Event()
        entry = (self.done + requests, reached)
        self._targets.append(entry)
        try:
            await asyncio.wait_for(reached.wait(), WAIT_TIMEOUT_S)
        except TimeoutError:
            raise RuntimeError(
                f"the herd finished fewer than {requests} requests within "
                f"{WAIT_TIMEOUT_S:g}s after {what}"
            ) from None
        finally:
            self._targets.remove(entry)
