"""A burst over several herd processes: C connections where one process cannot hold them all,
or a herd kept apart from the process that observes it (an experiment's `[herd] processes`).

Every connection is an open file, so one herd process holds at most `per_process(soft)`
connections: its open-files soft limit (raised to the hard one, `herdlab.limits`) less
`FILES_RESERVED` for everything else it opens. `run_fleet` splits a burst's users and connections
near-evenly over P child processes, each running the herd core (`run_herd`) on its share. Each
child reports ready once all its users wait at its barrier with its channels connected, then
waits; when every child is ready the parent releases them all at one instant, and merges their
results into one `HerdResult` (outcomes, errors, lost, attempts and channel state changes;
latency percentiles are then taken over the merged outcomes).

Children are spawned, not forked (gRPC core's threads do not survive a fork), so each starts a
fresh interpreter with the parent's environment. An open loop runs in one process.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any

from chaos.engine.herd import (
    LOST_MARGIN_S,
    HerdConfig,
    HerdHooks,
    HerdResult,
    connect_timeout_s,
    run_herd,
)
from herdlab import loop
from herdlab.limits import raise_open_files

# Open files a herd process keeps for other than its connections (gRPC core's own, the
# interpreter's, its pipe to the parent).
FILES_RESERVED = 256
# A child's start: a fresh interpreter and its imports; then its connecting (`connect_timeout_s`).
START_TIMEOUT_S = 60.0
POLL_S = 0.1  # how often a wait for a child looks at its stop event


class FleetError(RuntimeError):
    """A herd process failed, or did not report in time."""


def per_process(open_files: int) -> int:
    """Connections one herd process may hold under an open-files limit of `open_files`."""
    return max(1, open_files - FILES_RESERVED)


def processes_for(connections: int, open_files: int) -> int:
    """The fewest herd processes that hold `connections` under `open_files` each."""
    return math.ceil(connections / per_process(open_files))


def _share(total: int, parts: int, index: int) -> int:
    return total // parts + (index < total % parts)


def split(config: HerdConfig, processes: int) -> list[HerdConfig]:
    """The burst `config` as `processes` herds: users and connections near-evenly (larger shares
    first, so each part has at least as many users as connections), key draws continuing where
    the previous part's end, seeds `seed + i`."""
    parts = []
    first_user = 0
    for index in range(processes):
        users = _share(config.users, processes, index)
        parts.append(
            replace(
                config,
                users=users,
                channels=_share(config.channels, processes, index),
                first_draw=config.first_draw + first_user * config.requests_per_user,
                seed=None if config.seed is None else config.seed + index,
            )
        )
        first_user += users
    return parts


def _child(config: HerdConfig, parent: Connection) -> None:
    """One herd process: runs its part, gated on the parent's release, and sends its result."""
    raise_open_files()

    async def gate(connected: int) -> None:
        parent.send(("ready", connected))
        await asyncio.get_running_loop().run_in_executor(None, parent.recv)

    try:
        result = loop.run(run_herd(config, HerdHooks(gate=gate)))
    except Exception as exc:
        parent.send(("error", f"{type(exc).__name__}: {exc}"))
    else:
        parent.send(("done", result))


def _receive(child: Connection, expected: str, deadline: float, stop: threading.Event) -> Any:
    """The payload of the child's next message, which must be `expected`, by `deadline`;
    FleetError as soon as `stop` is set."""
    while not child.poll(min(POLL_S, max(0.0, deadline - time.monotonic()))):
        if stop.is_set():
            raise FleetError("the herd was stopped")
        if time.monotonic() >= deadline:
            raise FleetError(f"a herd process did not report {expected} in time")
    try:
        kind, payload = child.recv()
    except EOFError:
        raise FleetError("a herd process ended without reporting") from None
    if kind != expected:
        raise FleetError(f"a herd process failed: {payload}")
    return payload


def run_fleet(
    config: HerdConfig,
    processes: int,
    on_release: Callable[[], None] | None = None,
    stop: threading.Event | None = None,
) -> HerdResult:
    """Runs the burst `config` over `processes` child processes released together; one result.
    `on_release` is called (in this thread) at the release. FleetError when a child fails or
    does not report within its bound, or once `stop` is set (the children are then killed at
    once)."""
    stop = stop or threading.Event()
    parts = split(config, processes)
    # gRPC core in a spawned child logs at INFO to stderr (a GOAWAY per connection in a storm)
    # unless told otherwise; the children inherit this, a user's own setting wins.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    context = multiprocessing.get_context("spawn")
    children: list[Connection] = []
    workers = []
    try:
        for part in parts:
            ours, theirs = context.Pipe()
            worker = context.Process(target=_child, args=(part, theirs), daemon=True)
            worker.start()
            theirs.close()
            children.append(ours)
            workers.append(worker)
        deadline = time.monotonic() + START_TIMEOUT_S + connect_timeout_s(parts[0].channels)
        for child in children:
            _receive(child, "ready", deadline, stop)
        release_ns = time.time_ns()
        started = time.monotonic()
        for child in children:
            child.send("go")
        if on_release is not None:
            on_release()
        # Every request ends within its deadline + margin; a user's requests follow each other;
        # then the channels close, which takes about as long as opening them.
        per_user_s = config.policy.max_total_s + LOST_MARGIN_S + config.think_s
        closing_s = START_TIMEOUT_S + connect_timeout_s(parts[0].channels)
        deadline = time.monotonic() + config.requests_per_user * per_user_s + closing_s
        results = [_receive(child, "done", deadline, stop) for child in children]
        return merge(results, release_ns, time.monotonic() - started)
    finally:
        for worker in workers:
            worker.join(timeout=0 if stop.is_set() else 5)
            if worker.is_alive():
                worker.kill()
                worker.join()
        for child in children:
            child.close()


def merge(results: list[HerdResult], release_ns: int, seconds: float) -> HerdResult:
    """The results of a burst's parts as one: users and channel indices numbered on across the
    parts, counts added, the release at `release_ns` (the parent's) and its spread to the last
    first send in any part."""
    merged = HerdResult(
        users=0,
        outcomes=[],
        release_ns=release_ns,
        release_spread_s=0.0,
        lost=Counter(),
        wrong_values=0,
        seconds=seconds,
        connect_start_ns=min(result.connect_start_ns for result in results),
    )
    for result in results:
        for outcome in result.outcomes:
            outcome.user += merged.users
            merged.outcomes.append(outcome)
        merged.channel_events += [
            (at_ns, channel + merged.connections, state)
            for at_ns, channel, state in result.channel_events
        ]
        last_send_ns = result.release_ns + result.release_spread_s * 1e9
        merged.release_spread_s = max(merged.release_spread_s, (last_send_ns - release_ns) / 1e9)
        merged.users += result.users
        merged.connections += result.connections
        merged.connected_channels += result.connected_channels
        merged.lost += result.lost
        merged.wrong_values += result.wrong_values
        merged.attempt_times_ns += result.attempt_times_ns
        merged.retry_times_ns += result.retry_times_ns
        for code, message in result.first_errors.items():
            merged.first_errors.setdefault(code, message)
    merged.attempt_times_ns.sort()
    merged.retry_times_ns.sort()
    merged.channel_events.sort()
    return merged
