"""The machine under the benchmarks: what it is, which cores each process gets, and the processes.

Pinning: the server under test and the services behind it get `SERVER_CPUS`, load generators and
in-process benchmarks get `CLIENT_CPUS`. A thread's affinity applies to that thread only, so a
running process is pinned thread by thread (`/proc/PID/task/*`); threads it starts later inherit.
On a machine with one usable core nothing is pinned, and the report says so.

Memory is read from `/proc/PID/status`: `VmRSS` (now) and `VmHWM` (peak since start).
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

STOP_TIMEOUT_S = 10.0
VERSIONED = (
    "grpcio",
    "protobuf",
    "tenacity",
    "psutil",
    "matplotlib",
    "aiocache",
    "cashews",
)


@dataclass(frozen=True)
class CpuPlan:
    """Which cores the server side and the client side get; empty sets mean 'not pinned'."""

    server: frozenset[int]
    client: frozenset[int]

    @property
    def pinned(self) -> bool:
        return bool(self.server) and bool(self.client)

    def describe(self) -> str:
        if not self.pinned:
            return "not pinned (fewer than 2 usable cores)"
        return (
            f"servers under test on core(s) {sorted(self.server)}, load generators on "
            f"core(s) {sorted(self.client)} (os.sched_setaffinity on every thread)"
        )


def cpu_plan() -> CpuPlan:
    """The last usable core for clients, the others for servers; no pinning on one core."""
    usable = sorted(os.sched_getaffinity(0))
    if len(usable) < 2:
        return CpuPlan(frozenset(), frozenset())
    return CpuPlan(frozenset(usable[:-1]), frozenset(usable[-1:]))


def pin(pid: int, cpus: frozenset[int]) -> bool:
    """Pins every thread of `pid` to `cpus`; False if nothing was pinned."""
    if not cpus:
        return False
    pinned = False
    with contextlib.suppress(FileNotFoundError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.sched_setaffinity(int(task.name), cpus)
                pinned = True
    return pinned


def _status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return 0
    return 0


def rss_bytes(pid: int) -> int:
    """Resident set size now (VmRSS); 0 if unreadable."""
    return _status_kib(pid, "VmRSS")


def peak_rss_bytes(pid: int) -> int:
    """Peak resident set size since the process started (VmHWM); 0 if unreadable."""
    return _status_kib(pid, "VmHWM")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` (all threads)."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def spawn(argv: Sequence[str], cpus: frozenset[int], log: Path) -> subprocess.Popen[bytes]:
    """Starts `argv` with output to `log` and pins it to `cpus` before it starts any thread."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pin(proc.pid, cpus)
    return proc


def run_json(
    argv: Sequence[str], cpus: frozenset[int], timeout_s: float
) -> tuple[str, subprocess.CompletedProcess[str]]:
    """Runs `argv` pinned to `cpus` to completion; returns its last stdout line and the result.

    The child is pinned as soon as it exists, while the interpreter is still starting and has
    no thread but its main one.
    """
    with subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        pin(proc.pid, cpus)
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    done = subprocess.CompletedProcess(list(argv), proc.returncode, out, err)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv[:4])} ... exited {done.returncode}: {done.stderr.strip()[-2000:]}"
        )
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if not lines:
        raise RuntimeError(f"{' '.join(argv[:4])} ... printed nothing")
    return lines[-1], done


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after `STOP_TIMEOUT_S`; always reaps."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT_S)


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine(plan: CpuPlan) -> dict[str, Any]:
    """Cores, CPU model, memory, OS, versions, load and pinning, for the report's header."""
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "memory_bytes": psutil.virtual_memory().total,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in VERSIONED},
        "load_average_at_start": [round(x, 2) for x in load_average()],
        "pinning": plan.describe(),
        "pinned": plan.pinned,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "executable": sys.executable,
    }


def wait_until(predicate: Callable[[], bool], timeout_s: float, poll_s: float = 0.02) -> bool:
    """Polls `predicate()` until it is true or `timeout_s` passes (bounded)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_s)
    return bool(predicate())
