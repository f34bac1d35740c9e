"""The bare relay: TCP on 127.0.0.1 passed to one upstream and nothing else, the limit the
wire-fault proxy is compared with (`benchmarks.wire_proxy`), as the bare server is the cache's.

Two ways of moving the bytes, `--mode`:

- `copy`: each socket an event-loop protocol; a chunk read from one is written to the other from
  the read callback. What the proxy does with no fault in force, without its records (when
  bytes last passed, the service's first answer, the faults' switch);
- `splice`: the loop only watches the sockets; the kernel moves the bytes from one socket to the
  other through a pipe (`os.splice`), never copied into Python.

Written here because it is a measuring stick of a few dozen lines whose every step must be known:
a relay library would bring its own per-chunk work, which is what this measures the absence of.
Bounded: a side whose peer's buffer is full stops reading (copy: the transports' high-water
mark; splice: at most a pipe's capacity in flight per direction).

    python -m benchmarks.bare_relay --port P --upstream HOST:PORT [--mode copy|splice] [--loop L]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
from typing import cast

from herdlab import loop

MODES = ("copy", "splice")
CONNECT_TIMEOUT_S = 5.0
SPLICE_BYTES = 1 << 16  # what one splice asks for: a pipe's default capacity
EARLY_LIMIT = 1 << 20  # bytes kept from a client before its upstream is open


class _Copy(asyncio.Protocol):
    """One socket of a copied connection; `peer` is the other one's protocol."""

    def __init__(self, upstream: tuple[str, int], tasks: set[asyncio.Task[None]]) -> None:
        self.upstream, self.tasks = upstream, tasks
        self.peer: _Copy | None = None
        self.transport: asyncio.Transport | None = None
        # What a client sent before its upstream was open (the loop starts reading a socket it
        # accepted after `connection_made`, so pausing there does not hold it): one flight.
        self.early: list[bytes] | None = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self.peer is None:  # a client's socket: upstream opens now
            task = asyncio.create_task(self._connect())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _connect(self) -> None:
        assert self.transport is not None
        loop_ = asyncio.get_running_loop()
        other = _Copy(self.upstream, self.tasks)
        other.peer = self
        try:
            await asyncio.wait_for(
                loop_.create_connection(lambda: other, *self.upstream), CONNECT_TIMEOUT_S
            )
        except (OSError, TimeoutError):
            self.transport.abort()
            return
        if self.transport.is_closing():
            assert other.transport is not None
            other.transport.close()
            return
        self.peer = other
        assert other.transport is not None
        other.transport.write(b"".join(self.early or ()))
        self.early = None

    def data_received(self, data: bytes) -> None:
        peer = self.peer.transport if self.peer is not None else None
        if peer is None:
            if self.early is not None and sum(map(len, self.early)) < EARLY_LIMIT:
                self.early.append(data)
            return
        if not peer.is_closing():
            peer.write(data)

    def eof_received(self) -> bool:
        peer = self.peer.transport if self.peer is not None else None
        if peer is not None and peer.can_write_eof():
            peer.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class _Splice:
    """One direction of a spliced connection: `src` -> pipe -> `dst`, driven by readiness."""

    def __init__(self, src: socket.socket, dst: socket.socket, ends: list[socket.socket]) -> None:
        self.src, self.dst, self.ends = src, dst, ends
        self.read_end, self.write_end = os.pipe()
        self.in_pipe = 0
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(src.fileno(), self._read)

    def _read(self) -> None:
        try:
            moved = os.splice(
                self.src.fileno(), self.write_end, SPLICE_BYTES, flags=os.SPLICE_F_NONBLOCK
            )
        except BlockingIOError:
            return
        except OSError:
            moved = 0
        if moved == 0:
            self.close()
            return
        self.in_pipe += moved
        self._write()

    def _write(self) -> None:
        try:
            while self.in_pipe:
                self.in_pipe -= os.splice(
                    self.read_end, self.dst.fileno(), self.in_pipe, flags=os.SPLICE_F_NONBLOCK
                )
        except BlockingIOError:
            # The peer's buffer is full: stop reading until the pipe is drained into it.
            self.loop.remove_reader(self.src.fileno())
            self.loop.add_writer(self.dst.fileno(), self._drained)
        except OSError:
            self.close()

    def _drained(self) -> None:
        self.loop.remove_writer(self.dst.fileno())
        self._write()
        if not self.in_pipe and self.src.fileno() >= 0:
            self.loop.add_reader(self.src.fileno(), self._read)

    def close(self) -> None:
        for end in self.ends:
            if end.fileno() >= 0:
                self.loop.remove_reader(end.fileno())
                self.loop.remove_writer(end.fileno())
                end.close()
        for fd in (self.read_end, self.write_end):
            with contextlib.suppress(OSError):
                os.close(fd)


async def _splice_one(client: socket.socket, upstream: tuple[str, int]) -> None:
    loop_ = asyncio.get_running_loop()
    up = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    up.setblocking(False)
    try:
        await asyncio.wait_for(loop_.sock_connect(up, upstream), CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError):
        up.close()
        client.close()
        return
    ends = [client, up]
    for sock in ends:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    _Splice(client, up, ends)
    _Splice(up, client, ends)


async def serve(port: int, upstream: tuple[str, int], mode: str) -> None:
    loop_ = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop_.add_signal_handler(signum, stop.set)
    tasks: set[asyncio.Task[None]] = set()
    if mode == "copy":
        server = await loop_.create_server(
            lambda: _Copy(upstream, tasks), "127.0.0.1", port, backlog=4096
        )
        await stop.wait()
        server.close()
        return
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(4096)
    listener.setblocking(False)
    accepting = asyncio.create_task(_accept(listener, upstream, tasks))
    await stop.wait()
    accepting.cancel()
    listener.close()


async def _accept(
    listener: socket.socket, upstream: tuple[str, int], tasks: set[asyncio.Task[None]]
) -> None:
    loop_ = asyncio.get_running_loop()
    while True:
        client, _ = await loop_.sock_accept(listener)
        client.setblocking(False)
        task = asyncio.create_task(_splice_one(client, upstream))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="HOST:PORT")
    parser.add_argument("--mode", choices=MODES, default="copy")
    parser.add_argument("--loop", choices=loop.NAMES, default=loop.chosen())
    args = parser.parse_args()
    host, _, port = args.upstream.rpartition(":")
    loop.run(serve(args.port, (host, int(port)), args.mode), args.loop)


if __name__ == "__main__":
    main()
