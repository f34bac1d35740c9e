"""Fixtures: real lab stacks (the DB and the cache as separate processes on 127.0.0.1, started by
the same `chaos.lab.backends.local.LocalStack` the `chaos up` command uses)."""

from __future__ import annotations

import signal
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from chaos.lab.backends.local import LocalStack, StackInfo


def _ignore(signum: int, frame: object) -> None:
    """Does nothing: the run goes on ignoring the signal."""


def pytest_configure(config: pytest.Config) -> None:
    """Children a test signals get SIGINT and SIGHUP at their defaults, whatever this run
    inherited (a background job of a non-interactive shell ignores SIGINT, `nohup` ignores
    SIGHUP, and `chaos` keeps an ignored signal ignored): an ignored signal stays ignored across
    exec, a caught one does not, so an inherited SIG_IGN is replaced here by a handler that does
    nothing. Not a `preexec_fn` in each child: Python code between fork and exec, in a process
    with gRPC threads, can abort in gRPC's fork handlers (SIGABRT, 'epoll_wait error: Bad file
    descriptor'; 3 to 15 spawns in 400 here, none without it)."""
    for sig in (signal.SIGINT, signal.SIGHUP):
        if signal.getsignal(sig) == signal.SIG_IGN:
            signal.signal(sig, _ignore)


@contextmanager
def running_stack(
    state_dir: Path, db_args: Sequence[str], cache_args: Sequence[str]
) -> Iterator[tuple[LocalStack, StackInfo]]:
    """A stack that is up for the block and fully gone after it (no process left behind)."""
    stack = LocalStack(state_dir)
    info = stack.up(db_args, cache_args)
    pids = [s.pid for s in info.services.values() if s.pid is not None]
    assert len(pids) == 2, info
    try:
        yield stack, info
    finally:
        stack.down()
        current = stack.status()
        assert all(s.state == "stopped" for s in current.values()), current
        alive = [
            pid
            for pid in pids
            if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        ]
        assert alive == [], f"processes left behind: {alive}"


@pytest.fixture(scope="module")
def lab_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LocalStack, StackInfo]]:
    """One stack per test module, configured by the module's `DB_ARGS` and `CACHE_ARGS`."""
    db_args: Sequence[str] = getattr(request.module, "DB_ARGS", ())
    cache_args: Sequence[str] = getattr(request.module, "CACHE_ARGS", ())
    state_dir = tmp_path_factory.mktemp(f"stack-{request.module.__name__}")
    with running_stack(state_dir, db_args, cache_args) as running:
        yield running


@pytest.fixture(scope="module")
def stack_info(lab_stack: tuple[LocalStack, StackInfo]) -> StackInfo:
    return lab_stack[1]
