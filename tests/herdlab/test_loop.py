"""The event loop every lab process runs on: chosen by name, refused clearly, and handed by
`chaos` to the services it starts."""

from __future__ import annotations

import asyncio
import inspect
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
