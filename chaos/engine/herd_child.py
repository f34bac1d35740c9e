"""One Locust worker's share of the herd, run by the asyncio herd core in a process of its own.

Locust's workers run on gevent, under which `grpc.aio` does not run. A gevent gRPC user (sync
stubs under `grpc.experimental.gevent`) sends more requests per CPU second than this design, but
releases a 10,000-user burst 2.4 times less tightly, and would be a second herd with the policies,
guards, value checks and `lost` accounting written again (README, "The herd on Locust"). So a
worker (`chaos.engine.locustfile`) starts this module as its child,

    python -m chaos.engine.herd_child

and talks to it over the child's stdin and stdout in frames (`write_frame`: a 4-byte length, then
a pickle; both ends are the lab's own processes on one host):

- in: the share's `HerdConfig`; then, for the burst, `("go", release_ns)`: the instant, by this
  host's clock, at which every user is released (the master's one release instant, shifted by
  the clock offset it measured for this worker);
- out: `("ready", connected)` once every user waits at the barrier with the channels connected;
  `("outcomes", rows)` as requests finish (`outcome_row`), in batches; then `("done", fields)`
  (`done_fields`: what the rows do not carry, and this process's cost: its peak RSS before and
  after the herd, and its CPU seconds from the release to the end) or `("error", text)`.

The child ends by itself when its stdin closes (the worker is gone, killed or not): it does not
outlive its worker.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import queue
import resource
import struct
import sys
import threading
import time
from typing import IO, Any, Protocol

from chaos.engine.herd import HerdConfig, HerdHooks, HerdResult, Outcome, run_herd
from herdlab import loop
from herdlab.limits import raise_open_files

_LENGTH = struct.Struct("!I")
# Outcomes are sent when this many are waiting, or every FLUSH_S.
BATCH = 500
FLUSH_S = 0.1
# The child's exit status when its worker went away.
ORPHANED = 3


def write_frame(stream: IO[bytes], message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LENGTH.pack(len(data)) + data)
    stream.flush()


class Readable(Protocol):
    def read(self, size: int, /) -> bytes | None: ...


def _read_exactly(stream: Readable, size: int) -> bytes:
    """`size` bytes (a pipe under gevent may give fewer per read); EOFError if it ends first."""
    parts: list[bytes] = []
    left = size
    while left:
        part = stream.read(left)
        if not part:
            raise EOFError
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def read_frame(stream: Readable) -> Any:
    """The next frame's message; EOFError when the stream ends."""
    (size,) = _LENGTH.unpack(_read_exactly(stream, _LENGTH.size))
    return pickle.loads(_read_exactly(stream, size))


OutcomeRow = tuple[int, str, str | None, str | None, int, int, int, float | None]


def outcome_row(outcome: Outcome) -> OutcomeRow:
    """An outcome as plain values (what Locust's messages carry)."""
    return (
        outcome.user,
        outcome.key,
        outcome.source,
        outcome.code,
        outcome.attempts,
        outcome.sent_ns,
        outcome.done_ns,
        outcome.stale_age_s,
    )


def peak_rss_bytes() -> int:
    """This process's peak resident set so far (Linux reports it in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def done_fields(result: HerdResult, cost: dict[str, float] | None = None) -> dict[str, Any]:
    """Everything of a share's result but its outcomes, as plain values, and `cost` (what
    running it took: `rss_before_bytes`, `rss_peak_bytes`, `cpu_s`)."""
    return {
        **(cost or {}),
        "first_send_ns": result.first_send_ns,
        "users": result.users,
        "release_ns": result.release_ns,
        "release_spread_s": result.release_spread_s,
        "lost": dict(result.lost),
        "wrong_values": result.wrong_values,
        "seconds": result.seconds,
        "attempt_times_ns": result.attempt_times_ns,
        "connected_channels": result.connected_channels,
        "connections": result.connections,
        "connect_start_ns": result.connect_start_ns,
        "channel_events": [list(event) for event in result.channel_events],
        "first_errors": result.first_errors,
    }


def _stdin_reader(stream: IO[bytes], inbox: queue.Queue[Any]) -> None:
    """Passes the worker's frames on; when the worker is gone, ends this process at once."""
    while True:
        try:
            inbox.put(read_frame(stream))
        except (EOFError, OSError):
            os._exit(ORPHANED)


def main() -> None:
    raise_open_files()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but frames on the worker's pipe
    config: HerdConfig = read_frame(stdin)
    inbox: queue.Queue[Any] = queue.Queue()
    threading.Thread(target=_stdin_reader, args=(stdin, inbox), daemon=True).start()
    batch: list[OutcomeRow] = []
    last_flush = time.monotonic()

    def flush() -> None:
        nonlocal last_flush
        if batch:
            write_frame(stdout, ("outcomes", list(batch)))
            batch.clear()
        last_flush = time.monotonic()

    def on_outcome(outcome: Outcome) -> None:
        batch.append(outcome_row(outcome))
        if len(batch) >= BATCH or time.monotonic() - last_flush >= FLUSH_S:
            flush()

    cpu_at_release = time.process_time()

    async def gate(connected: int) -> None:
        nonlocal cpu_at_release
        write_frame(stdout, ("ready", connected))
        _, release_ns = await asyncio.get_running_loop().run_in_executor(None, inbox.get)
        await asyncio.sleep(max(0.0, (release_ns - time.time_ns()) / 1e9))
        cpu_at_release = time.process_time()

    rss_before = peak_rss_bytes()
    try:
        result = loop.run(run_herd(config, HerdHooks(gate=gate, on_outcome=on_outcome)))
    except Exception as exc:
        write_frame(stdout, ("error", f"{type(exc).__name__}: {exc}"))
        return
    cost = {
        "rss_before_bytes": rss_before,
        "rss_peak_bytes": peak_rss_bytes(),
        "cpu_s": time.process_time() - cpu_at_release,
    }
    flush()
    write_frame(stdout, ("done", done_fields(result, cost)))


if __name__ == "__main__":
    main()
    # Not through the interpreter's shutdown, which would wait on the stdin reader's lock.
    sys.stderr.flush()
    os._exit(0)
