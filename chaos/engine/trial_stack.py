"""What every scenario needs: its own stack in a temporary folder, stack actions in threads that
an interrupt cannot tear in half, and TCP probes for the instant a service is back. (Timelines'
100 ms bins live in `chaos.engine.timeline`.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import ParamSpec, TypeVar

from chaos.lab import tether
from chaos.lab.backends.local import LocalStack

P = ParamSpec("P")
T = TypeVar("T")

LISTEN_POLL_S = 0.005


async def in_thread(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Runs blocking `fn` (a stack action) in a thread. A thread cannot be interrupted, so if this
    task is cancelled (Ctrl-C) the call is still waited for: the stack is settled before `down`."""
    future = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await future
        raise


@asynccontextmanager
async def scenario_stack(name: str) -> AsyncIterator[LocalStack]:
    """A local stack of the scenario's own, in a temporary folder: whatever happens in the block
    (an error, Ctrl-C, SIGTERM), its processes are stopped and the folder removed afterwards; if
    this process is killed outright, its tether does the same."""
    state_dir = Path(tempfile.mkdtemp(prefix=f"herdlab-{name}-"))
    stack = LocalStack(state_dir)
    watchdog = tether.start(os.getpid(), state_dir)
    try:
        yield stack
    finally:
        await in_thread(stack.down)
        await in_thread(tether.release, watchdog)
        shutil.rmtree(state_dir, ignore_errors=True)


def wait_listening(target: str, timeout_s: float, stop: threading.Event) -> int | None:
    """Wall-clock ns of the first TCP connect to `target` (host:port) that succeeds, polled every
    `LISTEN_POLL_S`; None after `timeout_s` or once `stop` is set. Blocking: run it in a thread,
    where a busy event loop cannot delay the observation."""
    host, port = target.rsplit(":", 1)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, int(port)), timeout=0.2):
                return time.time_ns()
        except OSError:
            if stop.wait(LISTEN_POLL_S):
                return None
    return None
