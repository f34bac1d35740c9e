"""What a link saw of its connections, counted as they happen: the proxy's own record of a
reconnect storm, read by the admin plane (`GetLinks`).

Counts, cumulative since the link started and per wall-clock tenth of a second (`BIN_MS`; the
last `BINS_KEPT`, an hour):

- `accepted`: connections the proxy accepted (every client's connect attempt reaches it);
- `passed`: connections handed to the service (its upstream twin opened): what reached it;
- `answered`: passed connections the service answered (its first byte: for gRPC its HTTP/2
  SETTINGS, over TLS its handshake flight, sent once it has done the handshake's work);
- `abandoned`: passed connections whose client left before the service answered: the service
  takes up a connection whose ClientHello it has already been sent, so its handshake work for
  it is wasted;
- `refused`: connections reset without reaching the service (a gate refused them or held them
  past their wait, the service was down, or the link held `MAX_CONNECTIONS`);
- `left`: connections whose client gave up while a gate held them (the service never saw
  them).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

COUNTS = ("accepted", "passed", "answered", "abandoned", "refused", "left")
BIN_MS = 100
BINS_KEPT = 36_000  # an hour of bins: any experiment's run (at most 1 h) fits


class LinkStats:
    """A link's counts, in total and per bin (`bins`: (bin's start in unix ms, counts), oldest
    first, only bins in which something was counted)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.totals = dict.fromkeys(COUNTS, 0)
        self.bins: deque[tuple[int, dict[str, int]]] = deque(maxlen=BINS_KEPT)

    def count(self, name: str) -> None:
        self.totals[name] += 1
        start_ms = int(self.clock() * 1000) // BIN_MS * BIN_MS
        if not self.bins or self.bins[-1][0] != start_ms:
            self.bins.append((start_ms, dict.fromkeys(COUNTS, 0)))
        self.bins[-1][1][name] += 1
