"""`stage`: staged re-admission, bringing a fleet back slowly. Peers are put in `groups` groups
by a hash of their address as the proxy sees it (host:port: in the lab every client is on
127.0.0.1, so a client that reconnects from a new port draws again); from when the fault is put
in force (at a restore, by the timeline) group 1 passes, then one more group each `every_ms`
while the service keeps up (90% of the last wave's connections that reached it answered,
within `keeps_up_ms` if that is not 0), until all pass. Connections of groups not yet admitted
are held for at most `hold_ms` (then reset), or with `hold_ms` 0 refused at once. Counts:
`chaos.wire.gate`."""

from __future__ import annotations

from collections.abc import Callable

from chaos.wire.gate import Clock, Gate, Holding, Waves
from chaos.wire.toxics.base import MAX_MS, Toxic, attribute


class Stage(Toxic):
    kind = "stage"
    summary = "Admit clients in this many waves."
    option = "groups"
    groups: float = attribute(4.0, 1.0, 1024.0, "Groups of clients, one per wave.", whole=True)
    every_ms: float = attribute(1000.0, 0.0, MAX_MS, "Time between waves, ms.")
    keeps_up_ms: float = attribute(
        0.0,
        0.0,
        MAX_MS,
        "A wave widens only if 90% of its connections were answered within this, ms.",
    )
    hold_ms: float = attribute(
        10_000.0, 0.0, MAX_MS, "Longest a connection waits for its wave (0: refuse), ms."
    )

    def gate(self, clock: Clock, changed: Callable[[], None]) -> Gate:
        return Waves(
            Holding(clock, self.hold_ms / 1000, changed),
            groups=int(self.groups),
            every_s=self.every_ms / 1000,
            keeps_up_s=self.keeps_up_ms / 1000,
        )
