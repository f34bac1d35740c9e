"""One proxied connection: a client's socket and its upstream twin, the bytes between them, and
the ways to end them (FIN, or RST for the `reset` fault). Faults act on it; the proxy's link
decides, chunk by chunk, whether a direction relays straight through or through its pump.

Each socket is an asyncio transport with a `Side` protocol. A chunk that arrives while no fault
is in force on its direction, and while nothing of that direction waits in its pump, is written
to the other socket's transport at once, inside the event loop's read callback: no task, no
future, no copy in Python (`Side.data_received`). Otherwise it joins the direction's buffer,
which its pump reads chunk by chunk through the faults (`Direction.read`), so a fault put in force
on a live connection takes effect from the next chunk, and chunks keep their order across the
switch either way. Backpressure is the transports' own: a side whose peer's write buffer is full
stops reading until it drains, and a buffer past `BUFFER_LIMIT` stops its side reading too.

Why not streams: `asyncio.StreamReader` costs a future, a task step and a copy per chunk, and it
owns its transport's pause state, which the straight path needs to share. Without them the
proxy's CPU per request on the hit path fell from 82 to 72 us at 64 callers and from 106 to 80 us
at one (adjacent runs of BENCHMARKS.md's wire_proxy section, same machine). What remains is mostly
the kernel's (perf): the proxy's wakeups and the two extra loopback hops of every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from chaos.wire.gate import Gate
    from chaos.wire.stats import LinkStats

# Bytes a direction buffers for its pump before its side stops reading.
BUFFER_LIMIT = 256 * 1024


class Direction:
    """The bytes one way of a connection: from `source`'s socket to `sink`'s."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.source: Side | None = None
        self.sink: Side | None = None
        self.buffer = bytearray()
        self.eof = False
        self.busy = False  # the pump holds a chunk it has not written yet
        self._waiter: asyncio.Future[None] | None = None

    def feed(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > BUFFER_LIMIT and self.source is not None:
            self.source.hold("buffer")
        self._wake()

    def feed_eof(self) -> None:
        self.eof = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def read(self, limit: int) -> bytes:
        """Up to `limit` bytes from the buffer, waiting for some; b"" at EOF with none left.
        The pump is `busy` from here until it asks again."""
        self.busy = False
        while not self.buffer and not self.eof:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunk = bytes(self.buffer[:limit])
        del self.buffer[:limit]
        if len(self.buffer) <= BUFFER_LIMIT and self.source is not None:
            self.source.release("buffer")
        self.busy = bool(chunk)
        return chunk

    def idle(self) -> bool:
        """Nothing of this direction waits in its pump: a chunk may go straight through."""
        return not self.buffer and not self.busy

    async def drain(self) -> None:
        """Until the sink's write buffer is below its high-water mark (or the sink is gone)."""
        if self.sink is not None:
            await self.sink.writable()


class Side(asyncio.Protocol):
    """One socket of a connection: what it reads goes `out`; `into` is what writes to it."""

    def __init__(
        self,
        out: Direction,
        into: Direction,
        straight: Callable[[], bool],
        made: Callable[[Side], None] | None = None,
    ) -> None:
        self.out, self.into = out, into
        out.source, into.sink = self, self
        self.straight = straight  # whether no fault acts on the bytes going `out` (the link's)
        self.made = made  # called once the socket is connected (the proxy's accept)
        self.transport: asyncio.Transport | None = None
        self.conn: Connection | None = None
        self._holds: set[str] = set()  # why reading is paused: "buffer", "peer"
        self._writable = asyncio.Event()  # clear while the transport's write buffer is full
        self._writable.set()
        self.gone = asyncio.Event()  # set once the socket is closed
        self.ended = asyncio.Event()  # set once the peer is done sending (EOF) or gone
        self.heard = False  # bytes came from the peer (before its Connection was made too)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's are not asyncio.Transport subclasses, only alike).
        self.transport = cast(asyncio.Transport, transport)
        if self.made is not None:
            self.made(self)

    def data_received(self, data: bytes) -> None:
        self.heard = True
        conn = self.conn
        if conn is not None:
            conn.active_at = time.monotonic()
            if conn.answered_at is None and self.out.name == "downstream":
                conn.answer()
            sink = self.out.sink
            if (
                self.straight()
                and self.out.idle()
                and sink is not None
                and sink.transport is not None
                and not sink.transport.is_closing()
            ):
                sink.transport.write(data)
                return
        self.out.feed(data)

    def eof_received(self) -> bool:
        self.ended.set()
        self.out.feed_eof()
        return True  # half-closed until the connection closes both sides

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended.set()
        self.gone.set()
        self.out.feed_eof()
        self._writable.set()
        source = self.into.source
        if source is not None:
            source.release("peer")

    def pause_writing(self) -> None:
        self._writable.clear()
        source = self.into.source
        if source is not None:
            source.hold("peer")

    def resume_writing(self) -> None:
        self._writable.set()
        source = self.into.source
        if source is not None:
            source.release("peer")

    async def writable(self) -> None:
        await self._writable.wait()

    def write(self, data: bytes) -> None:
        """Writes `data` to this socket unless it is closing (then it is dropped)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def hold(self, reason: str) -> None:
        """Stops reading for `reason` (reading resumes once every reason is released)."""
        if not self._holds and self._open():
            assert self.transport is not None
            self.transport.pause_reading()
        self._holds.add(reason)

    def release(self, reason: str) -> None:
        if reason not in self._holds:
            return
        self._holds.discard(reason)
        if not self._holds and self._open():
            assert self.transport is not None
            self.transport.resume_reading()

    def _open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()


class Connection:
    """One client connection and its upstream twin. Closing either side ends both pumps."""

    def __init__(self, client: Side, upstream: Side) -> None:
        self.client, self.upstream = client, upstream
        self.directions = {"upstream": client.out, "downstream": upstream.out}
        client.conn = upstream.conn = self
        self.counters: dict[int, int] = {}  # a toxic's own count on this connection, by id
        self.touched: dict[str, bool] = {}  # fault name -> drawn against its toxicity
        self.holds: dict[str, asyncio.Task[None]] = {}  # fault name -> its hold
        self.pumps: list[asyncio.Task[None]] = []
        self.closed = False
        self.close_pending = False
        self.dropped = 0  # bytes read and not passed on (blackhole, timeout)
        self.active_at = time.monotonic()  # when bytes last passed either way (the `age` toxic)
        self.connecting_at = self.active_at  # when the proxy began connecting upstream
        self.unanswered: list[Gate] = []  # gates to tell when the service's first byte arrives
        self.answered_at: float | None = None  # when the service's first byte arrived
        self.stats: LinkStats | None = None  # its link's record, told of the answer

    def answer(self) -> None:
        """Records the service's first byte and tells the gates that let this connection
        through how long the service took to send it."""
        self.answered_at = self.active_at
        if self.stats is not None:
            self.stats.count("answered")
        for gate in self.unanswered:
            gate.answered(self.active_at - self.connecting_at)
        self.settle()

    def settle(self) -> None:
        """Tells the gates that let this connection through that it is no longer pending
        (answered, or ended without an answer); once."""
        for gate in self.unanswered:
            gate.settle()
        self.unanswered = []

    def close(self) -> None:
        """Closes both sides (FIN, after what is written so far); the pumps end."""
        if self.closed:
            return
        self.closed = True
        for side in (self.client, self.upstream):
            if side.transport is not None:
                side.transport.close()
            side.out.feed_eof()

    def reset(self) -> None:
        """Closes the client's side with a TCP RST (SO_LINGER 0), the upstream side with FIN."""
        if self.closed:
            return
        if self.client.transport is not None:
            reset(self.client.transport)
        self.close()

    def close_after_write(self) -> None:
        """Closes the connection once the chunk in hand is written (the `limit` toxic)."""
        self.close_pending = True


def reset(transport: asyncio.Transport) -> None:
    """Closes `transport`'s socket with a TCP RST: SO_LINGER 0, then abort."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
