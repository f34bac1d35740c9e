"""Servers under test, started for a benchmark and always stopped after it.

`lab_stack` is the real lab (DB + cache as processes, by the same `LocalStack` that `chaos up`
uses); `bare_server` is `benchmarks.bare_server`, `bare_relay` is `benchmarks.bare_relay`. All
are pinned to the plan's server cores, and the load generators (`load`) to its client cores.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from benchmarks.system import CpuPlan, pin, run_json, spawn, stop, wait_until
from chaos.lab.backends.local import LocalStack, StackInfo
from chaos.lab.ports import HOST, free_port
from herdlab import loop
from herdlab.grpcutil import channel_options
from protos import cache_pb2, cache_pb2_grpc

READY_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Server:
    target: str
    pid: int


def get(target: str, key: str, timeout_s: float) -> cache_pb2.CacheGetResponse:
    """One blocking `Get`, waiting for the server to be reachable."""
    with grpc.insecure_channel(target, options=channel_options()) as channel:
        reply: cache_pb2.CacheGetResponse = cache_pb2_grpc.CacheStub(channel).Get(
            cache_pb2.CacheGetRequest(key=key), timeout=timeout_s, wait_for_ready=True
        )
        return reply


@contextmanager
def lab_stack(
    plan: CpuPlan,
    db_args: Sequence[str],
    cache_args: Sequence[str],
    loop_name: str | None = None,
) -> Iterator[tuple[StackInfo, Server, Server]]:
    """The lab's DB and cache, pinned to the server cores, on the event loop `loop_name` (default:
    the lab's); yields (info, db, cache)."""
    stack = LocalStack(Path(tempfile.mkdtemp(prefix="herdlab-bench-")))
    chosen = ["--loop", loop_name or loop.chosen()]
    try:
        info = stack.up([*db_args, *chosen], [*cache_args, *chosen])
        db, cache = info.services["db"], info.services["cache"]
        if db.pid is None or cache.pid is None:
            raise RuntimeError(f"the lab stack did not start: {info.to_json()}")
        for pid in (db.pid, cache.pid):
            pin(pid, plan.server)
        yield info, Server(db.grpc, db.pid), Server(cache.grpc, cache.pid)
    finally:
        stack.down()


@contextmanager
def bare_server(
    plan: CpuPlan, extra: Sequence[str] = (), loop_name: str | None = None
) -> Iterator[Server]:
    """The bare `Cache` server, pinned to the server cores, on the event loop `loop_name`
    (default: the lab's), answering once it is up."""
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="herdlab-bench-bare-")) / "bare.log"
    chosen = ["--loop", loop_name or loop.chosen()]
    proc = spawn(
        [sys.executable, "-m", "benchmarks.bare_server", "--port", str(port), *chosen, *extra],
        plan.server,
        log,
    )
    target = f"{HOST}:{port}"
    try:
        get(target, "warm", READY_TIMEOUT_S)
        pin(proc.pid, plan.server)  # threads the server started while coming up
        yield Server(target, proc.pid)
    finally:
        stop(proc)


@contextmanager
def bare_relay(plan: CpuPlan, upstream: str, mode: str) -> Iterator[Server]:
    """The bare relay in front of the `Cache` server at `upstream`, pinned to the server cores,
    passing calls once it is up."""
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="herdlab-bench-relay-")) / "relay.log"
    proc = spawn(
        [
            sys.executable,
            "-m",
            "benchmarks.bare_relay",
            "--port",
            str(port),
            "--upstream",
            upstream,
            "--mode",
            mode,
        ],
        plan.server,
        log,
    )
    target = f"{HOST}:{port}"
    try:
        get(target, "warm", READY_TIMEOUT_S)
        pin(proc.pid, plan.server)
        yield Server(target, proc.pid)
    finally:
        stop(proc)


def load(plan: CpuPlan, args: Sequence[str], timeout_s: float) -> dict[str, Any]:
    """Runs the load generator on the client cores; returns its JSON result."""
    line, _ = run_json([sys.executable, "-m", "benchmarks.loadgen", *args], plan.client, timeout_s)
    result: dict[str, Any] = json.loads(line)
    return result


def read_json_file(path: Path, timeout_s: float) -> dict[str, Any]:
    """Waits (bounded) for a JSON file another process writes atomically, and reads it."""
    if not wait_until(lambda: path.exists() and path.stat().st_size > 0, timeout_s):
        raise RuntimeError(f"{path} was not written within {timeout_s:g}s")
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc
