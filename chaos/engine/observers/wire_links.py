"""`wire_links`: the wire proxy's own record of its connections on the cache's link (accepted,
passed to the cache, answered by it, abandoned, refused; in total and per second,
`chaos.wire.stats`), read once the herd has ended. None when the stack has no proxy in front of
the cache."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from chaos.engine.registry import OBSERVERS
from chaos.wire.admin import WireClient
from chaos.wire.stats import BIN_MS

if TYPE_CHECKING:
    from chaos.engine.trial import Trial


@dataclass(frozen=True)
class LinkRecord:
    totals: dict[str, int]
    bins: list[tuple[int, dict[str, int]]] = field(default_factory=list)  # (unix ms, counts)

    def per_bin(self, name: str, start_ns: int, end_ns: int) -> list[int]:
        """`name`'s count in each 100 ms bin from the one holding `start_ns` to the one holding
        `end_ns`, zeros included."""
        counted = {start_ms: counts.get(name, 0) for start_ms, counts in self.bins}
        first, last = start_ns // 1_000_000 // BIN_MS, end_ns // 1_000_000 // BIN_MS
        return [counted.get(index * BIN_MS, 0) for index in range(first, last + 1)]

    def per_second(self, name: str, start_ns: int, end_ns: int) -> list[int]:
        """`name`'s count in each second from `start_ns` on (the last second may be partial)."""
        bins = self.per_bin(name, start_ns, end_ns)
        per = 1000 // BIN_MS
        return [sum(bins[i : i + per]) for i in range(0, len(bins), per)]

    def total(self, name: str, start_ns: int, end_ns: int) -> int:
        return sum(self.per_bin(name, start_ns, end_ns))


class WireLinksObserver:
    def __init__(self, trial: Trial) -> None:
        self.trial = trial

    async def start(self) -> None:
        return None

    def on_release(self) -> None:
        return None

    async def finish(self) -> LinkRecord | None:
        if self.trial.wire_address is None or "cache" not in self.trial.wire.proxied():
            return None
        async with WireClient(self.trial.wire_address) as wire:
            link = next(link for link in await wire.links() if link.name == "cache")
        return LinkRecord(
            totals=dict(link.counts),
            bins=[(b.unix_ms, dict(b.counts)) for b in link.bins],
        )

    async def close(self) -> None:
        return None


OBSERVERS.register("wire_links", WireLinksObserver)
