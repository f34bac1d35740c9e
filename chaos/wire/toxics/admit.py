"""`admit`: connection admission at a rate, as an overload manager in front of a server does: at
most `rate` new connections a second reach the service (a token bucket holding `burst`: tokens
a busy event loop could not hand out at once are kept up to it); the
excess is held, the upstream connect delayed until a token is free, for at most `max_wait_ms`
(then reset), or with `max_wait_ms` 0 refused at once (reset: the client sees a failed connect
and backs off). gRPC has no server option for this; the proxy sees every connection first.

With `pending` > 0 at most that many connections let through are not yet answered: the service
is handed new handshakes as fast as it answers them, whatever its capacity, and none waits in its
queue longer than pending / capacity, so a client that was let through is answered before it
gives up (the other bound, `rate`, may then be high).

With `answer_within_ms` > 0 the rate is adaptive: it starts at `rate` and follows the service's
measured capacity, rising x1.25 each second in which connections waited for tokens and every one
let through was answered (its first byte, for TLS the server's handshake flight) within
`answer_within_ms`, falling x0.7 in a second in which one was not, never below `floor`.
Counts: `chaos.wire.gate`."""

from __future__ import annotations

from collections.abc import Callable

from chaos.wire.gate import AdaptiveBucket, Clock, Gate, Holding, TokenBucket
from chaos.wire.toxics.base import MAX_MS, Toxic, attribute


class Admit(Toxic):
    kind = "admit"
    summary = "New connections per second at most."
    option = "rate"
    rate: float = attribute(100.0, 0.001, 1_000_000.0, "New connections passed per second.")
    burst: float = attribute(
        10.0, 1.0, 1_000_000.0, "Connections passed at once when idle.", whole=True
    )
    max_wait_ms: float = attribute(
        10_000.0, 0.0, MAX_MS, "Longest a connection is held for a token (0: refuse), ms."
    )

    answer_within_ms: float = attribute(
        0.0, 0.0, MAX_MS, "Adaptive rate: answers within this keep it rising (0: fixed), ms."
    )
    floor: float = attribute(1.0, 0.001, 1_000_000.0, "Adaptive rate: never below this.")
    pending: float = attribute(
        0.0, 0.0, 1_000_000.0, "Passed and not yet answered at most (0: no bound).", whole=True
    )

    def gate(self, clock: Clock, changed: Callable[[], None]) -> Gate:
        holding = Holding(clock, self.max_wait_ms / 1000, changed)
        if self.answer_within_ms:
            return AdaptiveBucket(
                holding,
                rate=self.rate,
                burst=self.burst,
                keeps_up_s=self.answer_within_ms / 1000,
                floor=self.floor,
                max_pending=int(self.pending),
            )
        return TokenBucket(holding, rate=self.rate, burst=self.burst, max_pending=int(self.pending))
