"""An experiment's wire settings, keys of `[stack]` (or, the same keys, of a `[stack.wire]`
table): which services the trial's stack puts the wire-fault proxy in front of, and what the
timeline's `fault SERVICE` step does, so kill, partition and a graceful stop can be swept side
by side (`"wire.fault" = ["kill", "partition"]`, `["kill", "stop"]`).

`fault` is timeline behaviour kept as a setting on purpose: a setting is what a sweep, a
configuration and a step's or an expectation's `variant` can name, and documents record rows
by it."""

from __future__ import annotations

from dataclasses import dataclass

from chaos.wire.proxy import LINK_NAMES
from herdlab.settings import Settings, setting

FAULTS = ("partition", "kill")  # what the partition scenario compares
STOP = "stop"  # a graceful stop (SIGTERM: drain, GOAWAY), a choice of `fault` beside FAULTS


@dataclass(frozen=True)
class WireSettings(Settings):
    proxy: str = setting(
        "",
        "proxy",
        "text",
        "Services behind the wire proxy: db, cache or db,cache (empty: no proxy).",
    )
    fault: str = setting(
        "partition",
        "fault",
        "choice",
        "What a `fault SERVICE` step does: partition it on the wire (connections left "
        "half-open, both directions blackholed; needs the proxy), kill it (SIGKILL: "
        "connections reset) or stop it (SIGTERM: it drains, GOAWAY). `heal SERVICE` undoes "
        "any of them.",
        choices=(*FAULTS, STOP),
    )

    connect_pending: int = setting(
        0,
        "connect_pending",
        "int",
        "While the herd first connects (until its release) the proxy in front of the cache "
        "lets at most this many connections be unanswered (an admit gate's pending bound, "
        "holding the rest up to 3/4 of the herd's connect timeout, removed at the release): "
        "the cache works at its handshake capacity and answers every client it is handed "
        "before it gives up, so its capacity is measured clean (0: no gate).",
        lo=0,
        hi=1_000_000,
    )

    def proxied(self) -> tuple[str, ...]:
        return tuple(name for name in self.proxy.split(",") if name)

    def problems(self) -> list[str]:
        found = super().problems()
        unknown = [name for name in self.proxied() if name not in LINK_NAMES]
        if unknown:
            found.append(f"proxy must name {' and/or '.join(LINK_NAMES)}, got {self.proxy!r}")
        if self.connect_pending and "cache" not in self.proxied():
            found.append('connect_pending needs the proxy in front of the cache (proxy = "cache")')
        return found
