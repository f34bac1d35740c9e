"""The event loop every lab process runs on, and how its garbage collector runs: chosen by name,
refused clearly, and handed by `chaos` to the services it starts."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from herdlab import loop

CHAOS = [sys.executable, "-m", "chaos"]


async def _loop_type() -> str:
    return type(asyncio.get_running_loop()).__module__


@pytest.mark.parametrize(("name", "module"), [("uvloop", "uvloop"), ("asyncio", "asyncio")])
def test_each_loop_runs_the_coroutine_on_itself(name: str, module: str) -> None:
    assert loop.run(_loop_type(), name).split(".")[0] == module


def test_an_unknown_loop_is_refused_and_the_coroutine_closed() -> None:
    coroutine = _loop_type()
    with pytest.raises(ValueError, match="unknown event loop 'tokio'; choose from uvloop, asyncio"):
        loop.run(coroutine, "tokio")
    assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED  # no "never awaited"


def test_the_default_is_uvloop_unless_the_environment_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(loop.ENV, raising=False)
    assert loop.chosen() == "uvloop"
    monkeypatch.setenv(loop.ENV, "asyncio")
    assert loop.chosen() == "asyncio"


def _chaos(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HERDLAB_STATE_DIR": str(state_dir)}
    env.pop(loop.ENV, None)
    env.pop(loop.GC_ENV, None)
    return subprocess.run(
        [*CHAOS, *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def test_chaos_hands_its_loop_to_the_services_it_starts(tmp_path: Path) -> None:
    assert _chaos(tmp_path, "--loop", "asyncio", "up").returncode == 0
    try:
        lines = [_chaos(tmp_path, "logs", name, "-n", "1").stdout for name in ("db", "cache")]
    finally:
        assert _chaos(tmp_path, "down").returncode == 0
    assert all(" loop=asyncio " in line for line in lines), lines


def test_a_bad_loop_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = _chaos(tmp_path, "--loop", "tokio", "status")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "'tokio' is not one of 'uvloop', 'asyncio'" in result.stderr


COLLECTOR = """
import gc
from herdlab import loop

async def collector():
    return gc.get_threshold(), gc.get_freeze_count() > 0

print(gc.get_threshold(), *loop.run(collector(), service=SERVICE))
"""


def _collector(mode: str, *, service: bool = False) -> str:
    """What a fresh interpreter's collector is, with `mode`, inside `loop.run` (tuning is once
    per process and for good)."""
    result = subprocess.run(
        [sys.executable, "-c", f"SERVICE = {service}\n{COLLECTOR}"],
        capture_output=True,
        text=True,
        env={**os.environ, loop.GC_ENV: mode},
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


def test_the_collector_is_tuned_unless_the_environment_says() -> None:
    # Each line: CPython's own thresholds, then the loop's, and whether anything is frozen.
    own = _collector("cpython").split(") (")[0] + ")"
    _, middle, oldest = own.strip("()").split(", ")
    assert _collector("cpython") == f"{own} {own} False"
    assert _collector("tuned") == f"{own} ({loop.GC_YOUNG}, {middle}, {oldest}) True"


def test_a_service_keeps_cpythons_collector_whatever_the_lab_runs() -> None:
    own = _collector("cpython").split(") (")[0] + ")"
    assert _collector("tuned", service=True) == f"{own} {own} False"


def test_an_unknown_collector_mode_is_refused_and_the_coroutine_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(loop.GC_ENV, "off")
    coroutine = _loop_type()
    with pytest.raises(ValueError, match="unknown HERDLAB_GC 'off'; choose from tuned, cpython"):
        loop.run(coroutine)
    assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED


def test_chaos_hands_its_collector_mode_to_the_processes_it_starts(tmp_path: Path) -> None:
    assert _chaos(tmp_path, "--gc", "cpython", "up").returncode == 0
    try:
        status = json.loads(_chaos(tmp_path, "status", "--json").stdout)
        pids = [s["pid"] for s in status["services"].values()]
        environs = [Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") for pid in pids]
    finally:
        assert _chaos(tmp_path, "down").returncode == 0
    assert pids and all(b"HERDLAB_GC=cpython" in env for env in environs)


@pytest.mark.parametrize("how", ["option", "environment"])
def test_a_bad_collector_mode_is_one_line_and_exit_2(tmp_path: Path, how: str) -> None:
    if how == "option":
        result = _chaos(tmp_path, "--gc", "off", "status")
    else:
        env = {**os.environ, "HERDLAB_STATE_DIR": str(tmp_path), loop.GC_ENV: "off"}
        result = subprocess.run(
            [*CHAOS, "status"], capture_output=True, text=True, env=env, timeout=60, check=False
        )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "'off' is not one of 'tuned', 'cpython'" in result.stderr
