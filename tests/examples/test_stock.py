"""The stock example as a user runs it: its server as a process of its own on loopback, its
client against it (single-flight, policy and guards), and bad flags answered with one line."""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVER = [sys.executable, "-m", "examples.stock.server"]


@pytest.fixture
def stock_server() -> Iterator[str]:
    process = subprocess.Popen(
        [*SERVER, "--port", "0", "--slots", "2", "--latency", "0.02", "--queue", "4"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 30.0)
        assert ready, "the server printed nothing within 30 s"
        line = process.stdout.readline().strip()
        assert line.startswith("listening 127.0.0.1:"), line
        yield line.removeprefix("listening ")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0


def client(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "examples.stock.client", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_client_with_single_flight_sends_one_call_per_item(stock_server: str) -> None:
    guards = "limit:n=2+breaker"  # the server's 2 slots
    done = client("--target", stock_server, "--callers", "200", "--skus", "10", "--guards", guards)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["answers"] == {"OK": 200}
    server = result["server"]
    # One call per item reaches the server, never more at once than its slots.
    assert (server["check_arrivals"], server["served"], server["refused"]) == (10, 10, 0)
    assert server["max_in_flight"] <= 2


@pytest.mark.parametrize(
    ("module", "args", "names"),
    [
        ("examples.stock.server", ["--port", "0", "--slots", "0"], "--slots"),
        ("examples.stock.server", ["--port", "0", "--limit", "fast"], "unknown algorithm"),
        ("examples.stock.client", ["--target", "x:1", "--guards", "nope"], "unknown guard"),
    ],
)
def test_a_bad_flag_exits_2_with_one_line(module: str, args: list[str], names: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and names in done.stderr
