"""A lab process's memory and file descriptors, read at a quiescent point.

Comparing two readings says something about leaks only if both are taken in the same state: the
caller holds its traffic (no herd connection open) and `at_rest` waits until a cache holds
exactly the caller's own connections to its gRPC port (`own`), every other socket closed.
"""

from __future__ import annotations

import asyncio
import gc
from dataclasses import asdict, dataclass
from typing import Any

import psutil

SETTLE_TIMEOUT_S = 15.0  # waiting for the cache's connections to settle before reading its fds
POLL_S = 0.02


@dataclass(frozen=True)
class Resources:
    pid: int
    rss: int  # bytes resident
    fds: int  # open file descriptors
    connections: int  # of them, established TCP connections (listeners excluded)
    settled: bool  # a cache held only the caller's connections when read (others: True)

    @property
    def other_fds(self) -> int:
        """Descriptors other than established connections: files, pipes, listeners, sockets
        closing. A client's pool (redis-py's, up to its bound) keeps as many idle connections
        as it last needed at once, so connections are counted on their own."""
        return self.fds - self.connections

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def cache_connections(pid: int, port: int) -> tuple[int, int]:
    """(established, other) TCP sockets the process holds on `port`, listener excluded."""
    established = other = 0
    for conn in psutil.Process(pid).net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status != psutil.CONN_LISTEN:
            if conn.status == psutil.CONN_ESTABLISHED:
                established += 1
            else:
                other += 1
    return established, other


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


async def at_rest(pid: int, expected: tuple[int, int] | None = None) -> Resources:
    """RSS and fds of the process `pid`; with `expected` (port, own), once it holds `own`
    established connections on `port` and no other (or after SETTLE_TIMEOUT_S, `settled`
    False)."""
    # A closed channel's connection stays open while calls that failed on it are still
    # referenced, and failed calls sit in reference cycles (exception, traceback, retry state)
    # until the cycle collector runs: collect now, or the herd's last round can hold its
    # connections to the cache for many seconds after it has ended.
    gc.collect()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_TIMEOUT_S
    settled = expected is None or cache_connections(pid, expected[0]) == (expected[1], 0)
    while not settled and loop.time() <= deadline:
        await asyncio.sleep(POLL_S)
        settled = expected is None or cache_connections(pid, expected[0]) == (expected[1], 0)
    process = psutil.Process(pid)
    connections = sum(
        1 for c in process.net_connections(kind="tcp") if c.status == psutil.CONN_ESTABLISHED
    )
    return Resources(
        pid=pid,
        rss=process.memory_info().rss,
        fds=process.num_fds(),
        connections=connections,
        settled=settled,
    )
