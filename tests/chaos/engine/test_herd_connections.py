"""Connections as a quantity of the herd, over a real local stack: `--connections C` spreads the
users over C connections, every one READY with its connect attempts and time to READY counted,
and a burst split over two herd processes released together gives one merged document."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import pytest
from support import chaos_run, eventually

from chaos.engine.herd import HerdConfig, HerdResult, Outcome, run_herd
from chaos.engine.herd_fleet import merge, per_process, processes_for, split
from chaos.engine.herd_settings import HerdSettings
from chaos.lab.backends.local import LocalStack, StackInfo


def _herd(stack: LocalStack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HERDLAB_STATE_DIR": str(stack.state_dir)}
    return subprocess.run(
        [sys.executable, "-m", "chaos", "herd", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def _summary(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


async def test_users_are_spread_over_c_connections_each_ready(stack_info: StackInfo) -> None:
    settings = HerdSettings(users=60, connections=20, keys=1)
    assert settings.problems() == []
    config = settings.config(stack_info.services["cache"].grpc)
    assert config.channels == 20
    result = await run_herd(config)
    summary = result.summary()
    assert summary["ok"] == 60 and summary["lost"] == 0
    assert summary["connections"] == 20 == summary["connected_channels"]
    # Each connection went IDLE -> CONNECTING -> READY once on a healthy cache.
    assert summary["connect_attempts"] == {"total": 20, "max_per_connection": 1}
    all_ready = summary["time_to_all_ready_s"]
    assert all_ready is not None and 0 < all_ready == summary["time_to_ready_s"]["max"]


def test_connections_are_bounded_by_users_and_replace_channels() -> None:
    assert HerdSettings(users=10, connections=11).problems() == [
        "connections must be at most users (10), got 11"
    ]
    assert HerdSettings(users=100, channels=4, connections=50).channel_count == 50
    assert HerdSettings(users=100, channels=4).channel_count == 4


def test_a_burst_splits_its_users_connections_and_key_draws() -> None:
    parts = split(HerdConfig("t", users=11, channels=5, requests_per_user=2, seed=7), 3)
    assert [(p.users, p.channels, p.first_draw, p.seed) for p in parts] == [
        (4, 2, 0, 7),
        (4, 2, 8, 8),
        (3, 1, 16, 9),
    ]
    assert processes_for(20_000, 20_000) == 2 and per_process(20_000) == 20_000 - 256


def _part(users: int, release_ns: int, code: str | None) -> HerdResult:
    outcomes = [
        Outcome(u, "k", None if code else "HIT", code, 1, release_ns, release_ns + 10**6 * (u + 1))
        for u in range(users)
    ]
    return HerdResult(
        users=users,
        outcomes=outcomes,
        release_ns=release_ns,
        release_spread_s=0.001,
        lost=Counter({"TimeoutError": 1}),
        wrong_values=0,
        seconds=1.0,
        connections=2,
        connected_channels=2,
        connect_start_ns=100,
        channel_events=[
            (200, 0, "CONNECTING"),
            (300, 0, "READY"),
            (250, 1, "CONNECTING"),
            (400, 1, "READY"),
        ],
        first_errors={code: "why"} if code else {},
    )


def test_merged_parts_number_users_and_connections_on() -> None:
    merged = merge([_part(3, 1_000, None), _part(2, 2_000, "UNAVAILABLE")], 500, 2.0)
    summary = merged.summary()
    assert [o.user for o in merged.outcomes] == [0, 1, 2, 3, 4]
    assert summary["sent"] == 7 and summary["ok"] == 3 and summary["lost"] == 2
    assert summary["errors"] == {"UNAVAILABLE": 2}
    assert summary["connections"] == 4 == summary["connected_channels"]
    assert summary["connect_attempts"] == {"total": 4, "max_per_connection": 1}
    assert summary["time_to_all_ready_s"] == pytest.approx(300 / 1e9)
    assert summary["release_spread_s"] == pytest.approx((2_000 + 10**6 - 500) / 1e9)


def test_the_cli_holds_c_connections_over_two_processes(
    lab_stack: tuple[LocalStack, StackInfo],
) -> None:
    stack, _ = lab_stack
    args = ("--users", "40", "--connections", "10", "--keys", "1", "--json")
    one = _summary(_herd(stack, *args))
    assert one["processes"] == 1 and one["open_files"]["soft"] >= 1024
    assert one["connections"] == 10 == one["connected_channels"]
    two = _summary(_herd(stack, *args, "--processes", "2"))
    assert two["processes"] == 2
    assert two["users"] == 40 and two["sent"] == 40 and two["ok"] == 40 and two["lost"] == 0
    assert two["connections"] == 10 == two["connected_channels"]
    assert two["connect_attempts"]["total"] == 10
    assert two["time_to_all_ready_s"] is not None
    assert two["latency_s"]["max"] >= two["latency_s"]["p99"] >= two["latency_s"]["p50"] > 0


def test_more_processes_than_connections_is_refused(
    lab_stack: tuple[LocalStack, StackInfo],
) -> None:
    done = _herd(lab_stack[0], "--users", "4", "--connections", "2", "--processes", "3")
    assert done.returncode == 2
    assert "--processes must be at most the connections (2), got 3" in done.stderr


# The cache killed at {at} after the release and restored 300 ms later; the run ends with the herd.
KILL_AND_RESTORE = """\
[[timeline]]
at = "{at}"
do = "kill cache"
[[timeline]]
after = "300ms"
do = "restore cache"
[end]
when = "herd_done"
limit = "60s"
"""

APART = """\
title = "a herd in two processes of its own, the cache killed and restored under it"
measures = ["lost", "requests", "ok", "connections", "time_to_all_ready_s"]
[herd]
users = 12
connections = 6
processes = 2
requests = 8
think = "300ms"
stay_connected = true
reconnect = "tuned"
""" + KILL_AND_RESTORE.format(at="200ms")


def test_an_experiments_herd_runs_in_processes_apart_and_sees_the_outage(
    tmp_path: Path,
) -> None:
    path = tmp_path / "apart.toml"
    path.write_text(APART)
    done = chaos_run(path, tmp_path / "out.json", tmp_path / "state")
    assert done.returncode in (0, 1), done.stderr
    row = json.loads((tmp_path / "out.json").read_text())["rows"][0]
    assert row["requests"] == 96 and row["lost"] == 0
    assert row["connections"] == 6
    # Every connection of both processes was lost at the kill and READY again after it.
    assert row["time_to_all_ready_s"] is not None


def test_processes_go_with_a_burst_only() -> None:
    settings = HerdSettings(users=10, connections=4, processes=2, rounds=True)
    assert "processes and rounds do not go together; choose one" in settings.problems()
    assert "processes must be at most the connections (4), got 5" in (
        dataclasses.replace(settings, rounds=False, processes=5).problems()
    )


OWN_CORE = """\
title = "the cache on a core of its own"
measures = ["lost", "requests"]
[stack]
own_core = true
[herd]
users = 4
requests = 20
think = "250ms"
""" + KILL_AND_RESTORE.format(at="1s")


def _affinities(parent: int) -> dict[str, list[list[int]]]:
    """The CPU affinity of each lab service the process `parent` started."""
    found: dict[str, list[list[int]]] = {}
    with contextlib.suppress(psutil.Error):
        for proc in psutil.Process(parent).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                cmdline = " ".join(proc.cmdline())
                for service in ("cache_service", "db_service"):
                    if f"-m {service}" in cmdline:
                        found.setdefault(service, []).append(proc.cpu_affinity())
    return found


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="own_core needs two cores")
async def test_own_core_pins_the_cache_apart_from_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "own.toml"
    path.write_text(OWN_CORE)
    state = tmp_path / "state"
    cores = sorted(os.sched_getaffinity(0))
    run = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chaos", "run", str(path), "--json", str(tmp_path / "out.json"),
        env={**os.environ, "HERDLAB_STATE_DIR": str(state)},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip

    async def probe() -> dict[str, list[list[int]]]:
        return _affinities(run.pid)

    pinned = await eventually(
        probe,
        lambda seen: seen.get("cache_service") == [[cores[0]]] and "db_service" in seen,
        "the cache pinned to the first core",
    )
    assert pinned["db_service"] == [cores[1:]]
    _, err = await asyncio.wait_for(run.communicate(), 90)
    assert run.returncode in (0, 1), err.decode()
    row = json.loads((tmp_path / "out.json").read_text())["rows"][0]
    assert row["lost"] == 0 and row["requests"] == 80
