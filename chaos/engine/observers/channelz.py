"""`channelz`: every reconnect attempt of the herd's channels, from gRPC's own channelz trace.

A channel's state alone cannot show reconnect attempts: after the first failure pick_first stays
in TRANSIENT_FAILURE ("sticky") while its subchannel keeps retrying, so a channel watcher sees one
CONNECTING per outage. Each subchannel's trace records every CONNECTING transition, but keeps
only the last ~20 events, so it is read every `POLL_S` in a thread of its own (a busy event loop
cannot delay it); `gaps` counts reads where events may have been evicted unread (0 in a sound
run).
"""

from __future__ import annotations

import asyncio
import bisect
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from chaos.engine.registry import OBSERVERS
from herdlab import channelz
from herdlab.channelz import channels_to

if TYPE_CHECKING:
    from chaos.engine.trial import Trial

_CONNECTING = "Subchannel connectivity state changed to CONNECTING"
POLL_S = 0.05
# The reader outlives the trial's limit by at most this much if nobody stops it.
MARGIN_S = 60.0


def parse_timestamp(text: str) -> int:
    """channelz's RFC 3339 timestamp (`2026-01-02T03:04:05.123456789Z`) in ns since the epoch."""
    whole, _, fraction = text.rstrip("Z").partition(".")
    seconds = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    return int(seconds) * 1_000_000_000 + int((fraction or "0")[:9].ljust(9, "0"))


class ReconnectProbe:
    """Collects the CONNECTING transitions of the subchannels of new channels to `target`.

    `attach()` (when the herd is released) takes the channels to `target` that did not exist at
    construction: the herd's. `poll()` reads their subchannels' traces and keeps every CONNECTING
    event once. channelz renders an event's time afresh on every read, a few ns apart from one
    read to the next, so an event is recognised by its subchannel and a time within
    `SAME_EVENT_NS` of one already kept (gRPC spaces one subchannel's attempts >= 100 ms apart)."""

    SAME_EVENT_NS = 10_000_000

    def __init__(self, target: str) -> None:
        self.target = target
        self._before = set(channels_to(target))
        self.channel_ids: list[int] = []
        self.attempts: dict[int, list[int]] = {}  # subchannel id -> sorted CONNECTING times, ns
        self.gaps = 0
        self._newest: dict[int, int] = {}

    def attach(self) -> int:
        self.channel_ids = sorted(set(channels_to(self.target)) - self._before)
        return len(self.channel_ids)

    def poll(self) -> None:
        for channel_id in self.channel_ids:
            node = channelz.channel(channel_id).get("channel", {})
            for subchannel_id in channelz.subchannel_ids(node):
                self.read_subchannel(subchannel_id, self._subchannel_events)

    @staticmethod
    def _subchannel_events(subchannel_id: int) -> list[dict[str, Any]]:
        doc = channelz.subchannel(subchannel_id)
        events: list[dict[str, Any]] = (
            doc.get("subchannel", {}).get("data", {}).get("trace", {}).get("events", [])
        )
        return events

    def read_subchannel(
        self, subchannel_id: int, events_of: Callable[[int], list[dict[str, Any]]]
    ) -> None:
        """Keeps the new CONNECTING events of one subchannel's trace (`events_of` reads it)."""
        events = events_of(subchannel_id)
        if not events:
            return
        times = [parse_timestamp(e["timestamp"]) for e in events]
        newest = self._newest.get(subchannel_id)
        if newest is not None and min(times) > newest + self.SAME_EVENT_NS:
            self.gaps += 1  # nothing we saw last time is left: events may have gone unread
        self._newest[subchannel_id] = max(times)
        kept = self.attempts.setdefault(subchannel_id, [])
        for event, t_ns in zip(events, times, strict=True):
            if event.get("description", "").startswith(_CONNECTING) and not self._known(kept, t_ns):
                bisect.insort(kept, t_ns)

    def _known(self, kept: list[int], t_ns: int) -> bool:
        i = bisect.bisect_left(kept, t_ns - self.SAME_EVENT_NS)
        return i < len(kept) and kept[i] <= t_ns + self.SAME_EVENT_NS

    def run(self, stop: threading.Event, bound_s: float) -> None:
        """Polls every POLL_S until `stop` is set or `bound_s` has passed."""
        deadline = time.monotonic() + bound_s
        while not stop.wait(POLL_S) and time.monotonic() < deadline:
            self.poll()

    def attempt_times(self) -> list[int]:
        return sorted(t for times in self.attempts.values() for t in times)


@dataclass(frozen=True)
class Reconnects:
    """What the `channelz` observer saw: the herd's channels it found at the release, their
    subchannels, reads that may have missed events, and every reconnect attempt (ns, sorted)."""

    channels: int
    subchannels: int
    gaps: int
    attempt_times_ns: tuple[int, ...]


class ChannelzObserver:
    """Reads the herd's channels' reconnect attempts during a trial (see the module)."""

    def __init__(self, trial: Trial) -> None:
        self.trial = trial
        self.probe: ReconnectProbe | None = None
        self.channels = 0
        self._stop = threading.Event()
        self._poller: asyncio.Future[None] | None = None

    async def start(self) -> None:
        self.probe = ReconnectProbe(self.trial.herd_target)
        bound_s = self.trial.experiment.end_limit_s + MARGIN_S
        self._poller = asyncio.ensure_future(asyncio.to_thread(self.probe.run, self._stop, bound_s))

    def on_release(self) -> None:
        assert self.probe is not None
        self.channels = self.probe.attach()

    async def finish(self) -> Reconnects:
        await self.close()
        assert self.probe is not None and self._poller is not None
        failure = self._poller.exception()
        if failure is not None:
            raise RuntimeError(f"the channelz reader failed: {failure!r}") from failure
        return Reconnects(
            channels=self.channels,
            subchannels=len(self.probe.attempts),
            gaps=self.probe.gaps,
            attempt_times_ns=tuple(self.probe.attempt_times()),
        )

    async def close(self) -> None:
        self._stop.set()
        if self._poller is not None:
            await asyncio.gather(self._poller, return_exceptions=True)  # ends within a poll


OBSERVERS.register("channelz", ChannelzObserver)
