"""Connection admission in the proxy: a gate decides, for each new connection, before the proxy
opens its twin to the service, whether it passes now, waits (is held), or is refused.

A gate is the live state of one admission toxic while it is in force (`Toxic.gate`: `admit`,
`stage`). The proxy asks every gate in force (`admit`) and reports to each how fast the service
answered a connection it let through (`answered`: from the upstream connect until the service's
first byte, for gRPC its HTTP/2 SETTINGS, sent once its loop has taken the connection up).

The proxy then ends each connection a gate let through once: `settle` when it reached the
service (answered, or ended unanswered: its connect failed, its client left first), `withdraw`
when it never did (a later gate refused it, its client left while held at one).

What a gate does with a connection that may not pass now is common to every gate: with a
`max_wait_s` of 0 it is refused at once (the client sees its connection reset and backs off);
otherwise it is held (accepted by the proxy, no upstream yet) until the gate lets it through or
`max_wait_s` has passed (then it is reset too), or the gate is removed (then it passes). A gate
that can tell how long a newcomer would wait (`wait_s`: the tokens owed to those in line before
it, the waves before its group's) refuses at once the one that would wait longer than
`max_wait_s`: held, it would only be reset later, and refused now its client's backoff runs
while the gate lets others through, so the clients come back while the gate still has work. Every
gate counts what it did: admitted (passed to the service, at once or after a wait), held (had to
wait), refused (at once), expired (held past the wait), queued (held now) and pending (passed
and not yet answered: the proxy `settle`s each passed connection once, at the service's first
byte or at its end without one).

A gate that meters the service (`admit`: a rate, handshakes in flight) also holds while the
service is down: once a connection it let through found the service refusing connections
(`unreachable`), it lets one through each `PROBE_S` to try it, and holds the rest, until the
service answers one. The clients wait in its line through a restart instead of being reset into
their backoff, and the line is there, in order, when the service is back.

Time is the link's clock (`time.monotonic` unless a test injects one): a gate's arithmetic
(tokens, waves) reads it, and its waits sleep what the arithmetic says.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Clock = Callable[[], float]
COUNTS = ("admitted", "held", "refused", "expired", "queued", "pending")
CEILING = 1_000_000.0  # connections a second: the most any admission rate is raised to
PROBE_S = 0.25  # while the service is down, one connection is let through this often to try it


@dataclass(frozen=True)
class Holding:
    """What every gate is given: the link's clock, how long a connection may be held (0:
    refuse at once), and what to call whenever a count changes."""

    clock: Clock
    max_wait_s: float
    changed: Callable[[], None]


class Gate:
    """One admission toxic's state while in force. Subclasses say whether a connection may pass
    now (`passes`) and wait for their turn (`turn`)."""

    def __init__(self, holding: Holding) -> None:
        self.clock = holding.clock
        self.max_wait_s = holding.max_wait_s
        self.changed = holding.changed
        self.counts = dict.fromkeys(COUNTS, 0)
        self.opened = asyncio.Event()  # set when the gate is removed: every held one passes

    def passes(self, peer: str) -> bool:
        """Whether a connection from `peer` may pass now (taking what passing costs)."""
        raise NotImplementedError

    def join(self, peer: str) -> object:
        """A connection from `peer` starts to wait: its ticket (its place in a line), taken at
        once, so a connection arriving in the same moment finds it there."""
        return None

    async def turn(self, peer: str, ticket: object) -> None:
        """Returns once the held connection with `ticket` may pass (having taken what it
        costs)."""
        raise NotImplementedError

    def leave(self, ticket: object) -> None:
        """The connection with `ticket` stops waiting (it passed, expired or is gone); once."""

    def wait_s(self, peer: str) -> float:
        """How long a connection from `peer` arriving now would wait for its turn (0: unknown,
        it is held)."""
        return 0.0

    def answered(self, seconds: float) -> None:
        """The service answered a connection this long after the proxy connected to it."""

    def settle(self) -> None:
        """A connection this gate passed reached the service and was answered, or ended
        unanswered (its connect failed, or its client left first)."""
        self._count("pending", -1)

    def withdraw(self) -> None:
        """A connection this gate passed never reached the service (a later gate refused it,
        or its client left before): no longer pending, and nothing said of the service."""
        self._count("pending", -1)

    def unreachable(self) -> None:
        """A connection this gate passed found the service down (its connect was refused):
        settled, unanswered."""
        self.settle()

    def open(self) -> None:
        """The gate is removed: what it holds passes."""
        self.opened.set()

    def _count(self, name: str, by: int = 1) -> None:
        self.counts[name] += by
        self.changed()

    async def admit(self, peer: str) -> bool:
        """True: the connection from `peer` passes (now or after a wait), counted `pending`
        until the proxy settles it; False: refuse it. Cancelled (its client left) after its
        turn came, it is settled here."""
        if self.opened.is_set() or self.passes(peer):
            self._passed()
            return True
        if self.max_wait_s <= 0 or self.wait_s(peer) > self.max_wait_s:
            self._count("refused")
            return False
        self._count("held")
        self._count("queued")
        ticket = self.join(peer)
        turn = asyncio.ensure_future(self._turn(peer, ticket))
        opened = asyncio.ensure_future(self.opened.wait())
        try:
            await asyncio.wait(
                {turn, opened}, timeout=self.max_wait_s, return_when=asyncio.FIRST_COMPLETED
            )
        except asyncio.CancelledError:
            if self._stop_waiting(turn, opened, ticket):
                self.withdraw()  # its turn came as its client left
            raise
        if self._stop_waiting(turn, opened, ticket):
            return True  # counted by its turn
        if _succeeded(opened):
            self._passed()
            return True
        self._count("expired")
        return False

    async def _turn(self, peer: str, ticket: object) -> None:
        await self.turn(peer, ticket)
        # Counted before the next in line is let go (`leave`), so it sees this one pending.
        self._count("queued", -1)
        self._passed()

    def _stop_waiting(
        self, turn: asyncio.Future[None], opened: asyncio.Future[Any], ticket: object
    ) -> bool:
        """Ends the wait in one step, with no await in which the waiting connection's client
        could leave between its turn coming and the turn being accounted for: whether the turn
        came is decided now (one not done now is cancelled and never counts itself passed),
        the ticket leaves the line, and the cancelled waits finish on their own. True if the
        turn came (counted pending by it)."""
        came = _succeeded(turn)
        turn.cancel()
        opened.cancel()
        self.leave(ticket)
        if not came:
            self._count("queued", -1)
        return came

    def _passed(self) -> None:
        self._count("admitted")
        self._count("pending")


def _succeeded(future: asyncio.Future[Any]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


class TokenBucket(Gate):
    """At most `rate` connections a second, `burst` at once, and with `max_pending` > 0 at most
    that many passed and not yet answered (handshakes the service has yet to answer: bounding
    them passes connections as fast as the service answers, whatever its capacity, and keeps
    each answer within max_pending / capacity); the held ones pass in the order they came (one
    waits for the next token and a free place, the others for it to pass)."""

    def __init__(
        self, holding: Holding, *, rate: float, burst: float, max_pending: int = 0
    ) -> None:
        super().__init__(holding)
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = holding.clock()
        self.line: deque[asyncio.Future[None]] = deque()
        # Tickets that left from mid-line (expired, their client gone): dropped when they reach
        # the head, so a leave costs O(1) however long the line. The head is never one of them.
        self.gone: set[asyncio.Future[None]] = set()
        self.max_pending = max_pending
        self.place = asyncio.Event()  # set when a pending connection settles
        self.probe_at = 0.0  # the service is down: the next probe is due then (0: it is up)

    def _free(self) -> bool:
        if self.probe_at:
            return self.counts["pending"] == 0 and self.clock() >= self.probe_at
        return not self.max_pending or self.counts["pending"] < self.max_pending

    def unreachable(self) -> None:
        self.probe_at = self.clock() + PROBE_S
        super().unreachable()

    def settle(self) -> None:
        super().settle()
        self.place.set()

    def withdraw(self) -> None:
        super().withdraw()
        self.place.set()

    def answered(self, seconds: float) -> None:
        self.probe_at = 0.0

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def _take(self) -> bool:
        self._refill()
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def passes(self, peer: str) -> bool:
        return not self.line and self._free() and self._take()

    def wait_s(self, peer: str) -> float:
        """The tokens owed to those in line and to the newcomer, at the fixed rate. The wait
        for a free place among the pending ones is not told: it lasts as long as the service
        takes to answer, and that is slowest just when the gate refuses most. An estimate from
        the answers' recent rate refused at once the connections it said would wait past the
        hold, their clients came back from their backoffs to be refused again, and the
        refusals took the CPU the service needed to answer: 20,349 refusals for 9,000
        connections, the cache at 0.3 to 0.5 of a core, in reconnect-at-scale's kill/pending row.
        Held to the hold instead, a connection is reset at most once each `max_wait_s`."""
        self._refill()
        ahead = len(self.line) - len(self.gone) + 1
        return max(0.0, ahead - self.tokens) / self.rate

    def join(self, peer: str) -> object:
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.line.append(mine)
        if self.line[0] is mine:
            mine.set_result(None)
        return mine

    def leave(self, ticket: object) -> None:
        assert isinstance(ticket, asyncio.Future)
        if self.line and self.line[0] is ticket:
            self.line.popleft()
        else:
            self.gone.add(ticket)
        while self.line and self.line[0] in self.gone:
            self.gone.discard(self.line.popleft())
        if self.line and not self.line[0].done():
            self.line[0].set_result(None)

    async def turn(self, peer: str, ticket: object) -> None:
        assert isinstance(ticket, asyncio.Future)
        await ticket  # first in line
        while True:
            if not self._free():
                self.place.clear()
                if self.probe_at and not self.counts["pending"]:
                    # The service is down and no probe is out: woken when the next one is due.
                    # (asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel
                    # that meets the wait's end, and a cancelled turn must never pass.)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(max(0.001, self.probe_at - self.clock())):
                            await self.place.wait()
                else:
                    await self.place.wait()
                continue
            if self._take():
                return
            # A timer, not a condition anyone sets: the next token is due in this long.
            await asyncio.sleep((1 - self.tokens) / self.rate)


class AdaptiveBucket(TokenBucket):
    """A token bucket whose rate follows how fast the service answers: every `period_s` it is
    multiplied by `RISE` if connections waited for tokens, the service answered some, and every
    answer in the period came within `keeps_up_s`, and by `FALL` if one did not; kept within
    [`floor`, `ceiling`]. A period without answers (the service down: connections let through
    fail to connect) changes nothing, so an outage neither raises the rate nor sinks it. Started
    at `rate`, it climbs to what the service's handshakes keep up with and backs off when
    answers queue (an AIMD-like search without a fixed capacity)."""

    RISE = 1.25
    FALL = 0.7
    period_s = 1.0

    def __init__(
        self,
        holding: Holding,
        *,
        rate: float,
        burst: float,
        keeps_up_s: float,
        floor: float,
        max_pending: int = 0,
    ) -> None:
        super().__init__(holding, rate=rate, burst=burst, max_pending=max_pending)
        self.keeps_up_s = keeps_up_s
        self.floor = min(floor, rate)
        self.ceiling = CEILING
        self.period_start = holding.clock()
        self.slow = False  # an answer in this period took longer than keeps_up_s
        self.waited = False  # a connection waited for a token in this period
        self.heard = False  # the service answered a connection in this period

    def _adjust(self) -> None:
        now = self.clock()
        if now - self.period_start < self.period_s:
            return
        if self.slow:
            self._refill()
            self.rate = max(self.floor, self.rate * self.FALL)
        elif self.waited and self.heard:
            self._refill()
            self.rate = min(self.ceiling, self.rate * self.RISE)
        self.period_start, self.slow, self.waited, self.heard = now, False, False, False
        self.changed()

    def _take(self) -> bool:
        self._adjust()
        taken = super()._take()
        self.waited = self.waited or not taken
        return taken

    def answered(self, seconds: float) -> None:
        super().answered(seconds)
        self.heard = True
        if seconds > self.keeps_up_s:
            self.slow = True


class Waves(Gate):
    """Staged re-admission: peers fall in `groups` groups by a hash; group 1 passes from when
    the gate is put in force, and one more group each `every_s`, as long as the service kept up
    during the last wave, until all pass. It kept up when at least `KEEPS_UP_SHARE` of the
    connections that reached it in the wave were answered (within `keeps_up_s` if that is not
    0). A wave of failed connects (the service still down) holds the next one back; a few
    clients that gave up first, or one slow answer among thousands, do not: at thousands of
    connections a wave without one never comes, and every held group's clients would be
    refused into longer and longer backoffs."""

    KEEPS_UP_SHARE = 0.9

    def __init__(self, holding: Holding, *, groups: int, every_s: float, keeps_up_s: float) -> None:
        super().__init__(holding)
        self.groups = groups
        self.every_s = every_s
        self.keeps_up_s = keeps_up_s
        self.open_groups = 1
        self.widened_at = holding.clock()
        self.in_time = 0  # connections answered within keeps_up_s since the last widening
        self.answers = 0  # connections answered since the last widening
        self.settles = 0  # connections let through that ended waiting, answered or not

    @staticmethod
    def group_of(peer: str, groups: int) -> int:
        """The group (0-based) of `peer`: a stable hash (not Python's salted one)."""
        return zlib.crc32(peer.encode()) % groups

    def _widen(self) -> None:
        now = self.clock()
        while self.open_groups < self.groups and now - self.widened_at >= self.every_s:
            reached = max(self.settles, self.answers)
            kept_up = self.in_time >= self.KEEPS_UP_SHARE * reached
            self.in_time, self.answers, self.settles = 0, 0, 0
            if not kept_up:
                # A slow wave: the next one waits a whole period of answers within the bound.
                self.widened_at = now
                return
            self.open_groups += 1
            self.widened_at += self.every_s
            self.changed()

    def answered(self, seconds: float) -> None:
        self.answers += 1
        if not self.keeps_up_s or seconds <= self.keeps_up_s:
            self.in_time += 1

    def settle(self) -> None:
        super().settle()
        self.settles += 1

    def passes(self, peer: str) -> bool:
        self._widen()
        return self.group_of(peer, self.groups) < self.open_groups

    def wait_s(self, peer: str) -> float:
        self._widen()
        waves = self.group_of(peer, self.groups) - self.open_groups + 1
        return max(0.0, self.widened_at + waves * self.every_s - self.clock())

    async def turn(self, peer: str, ticket: object) -> None:
        # A timer, not a condition anyone sets: the next wave is due in this long.
        while not self.passes(peer):  # noqa: ASYNC110
            await asyncio.sleep(max(0.001, self.widened_at + self.every_s - self.clock()))
