"""The test service that is not the lab's (`slow_service.py`) and the example stock service
(`examples/stock`), as real processes on 127.0.0.1: the fixtures the tests of this folder
import."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

HERE = Path(__file__).parent
ROOT = HERE.parents[2]
PROTO = HERE / "slow.proto"
BROKEN = HERE / "broken.proto"
START_TIMEOUT_S = 30


@contextmanager
def slow_service(*args: str) -> Iterator[str]:
    """Starts the service with `args`; yields its address once it listens; stops it after."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "slow_service.py"), "--port", "0", *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the service prints it once it serves, or exits
        assert line.startswith("listening on "), f"the test service did not start: {line!r}"
        yield f"127.0.0.1:{int(line.split()[-1])}"
    finally:
        proc.terminate()
        proc.wait(START_TIMEOUT_S)


@contextmanager
def stock_service(*args: str) -> Iterator[str]:
    """Starts the example stock server with `args`; yields its address once it serves."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "examples.stock.server", "--port", "0", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()  # printed once it serves, or nothing as it exits
        assert line.startswith("listening "), f"the stock server did not start: {line!r}"
        yield line.removeprefix("listening ")
    finally:
        proc.terminate()
        proc.wait(START_TIMEOUT_S)


@pytest.fixture(scope="module")
def reflecting() -> Iterator[str]:
    """The service with reflection, 20 slots of 20 ms (1000 calls/s)."""
    with slow_service("--capacity", "20", "--latency", "0.02") as address:
        yield address


@pytest.fixture(scope="module")
def bare() -> Iterator[str]:
    """The service without reflection: only --proto finds its types."""
    with slow_service("--capacity", "20", "--latency", "0.02", "--no-reflection") as address:
        yield address
