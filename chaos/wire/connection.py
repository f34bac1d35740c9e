"""One proxied connection: a client's socket and its upstream twin, and the ways to end them
(FIN, or RST for the `reset` fault). Faults act on it; the proxy pumps its bytes."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chaos.wire.gate import Gate


class Connection:
    """One client connection and its upstream twin. Closing either side ends both pumps."""

    def __init__(
        self,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.client_reader, self.client_writer = client
        self.upstream_reader, self.upstream_writer = upstream
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

    def close(self) -> None:
        """Closes both sides (FIN); the pumps end."""
        if self.closed:
            return
        self.closed = True
        for writer in (self.client_writer, self.upstream_writer):
            writer.close()

    def reset(self) -> None:
        """Closes the client's side with a TCP RST (SO_LINGER 0), the upstream side with FIN."""
        if self.closed:
            return
        self.closed = True
        reset(self.client_writer)
        self.upstream_writer.close()

    def close_after_write(self) -> None:
        """Closes the connection once the chunk in hand is written (the `limit` toxic)."""
        self.close_pending = True


def reset(writer: asyncio.StreamWriter) -> None:
    """Closes `writer`'s socket with a TCP RST: SO_LINGER 0, then abort."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
