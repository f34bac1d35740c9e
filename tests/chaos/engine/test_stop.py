"""`stop SERVICE`, a graceful stop: checked like a kill in an experiment file, and over a real
stack the herd's calls already in the cache when it is told to stop end with values (it drains
them), where a kill fails every one; the cache comes back with `restore` either way.

The calls are held in flight without timing: the DB (concurrency 1) is held by a gate query
(`support.DbGate`), so every herd call waits in its queue until the test opens it, which it does
only once the cache has stopped serving."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support import DbGate, StackClients, chaos_run, eventually

from chaos.engine import spec
from chaos.engine.herd import HerdConfig, HerdResult, run_herd
from chaos.lab.backends.local import LocalStack, StackInfo
from herdlab.grpcutil import aio_channel
from herdlab.retry import RetryPolicy

USERS = 12
DB_ARGS = ["--concurrency", "1", "--spread", "0ms"]
# Long enough that no herd call is timed out or cancelled while the gate holds it.
CACHE_ARGS = ["--attempt-timeout", "30s", "--retry-total", "30s", "--grace", "30s"]

BASE = """\
title = "stop"
measures = ["ok", "client_errors", "lost", "fault"]
[herd]
users = 4
distribution = "unique"
[end]
limit = "60s"
"""


def _timeline(*steps: str) -> str:
    return "".join(f'[[timeline]]\nat = "{i}s"\ndo = "{step}"\n' for i, step in enumerate(steps))


@pytest.mark.parametrize(
    ("steps", "problem"),
    [
        (("stop cache", "restore cache"), None),
        (("stop db", "heal db"), None),
        (("stop cache", "stop cache"), "cache is already killed or stopped by an earlier step"),
        (("kill cache", "stop cache"), "cache is already killed or stopped by an earlier step"),
        (("stop redis",), "no row runs redis"),
        (("stop nosuch",), "usage: stop db|cache|cache-N|redis"),
    ],
)
def test_a_stop_is_checked_as_a_kill_is(steps: tuple[str, ...], problem: str | None) -> None:
    text = BASE + _timeline(*steps)
    if problem is None:
        spec.parse(text, "x.toml")
        return
    with pytest.raises(spec.ExperimentError, match=problem):
        spec.parse(text, "x.toml")


def _herd(info: StackInfo) -> Coroutine[Any, Any, HerdResult]:
    config = HerdConfig(
        target=info.services["cache"].grpc,
        users=USERS,
        keys=USERS,
        distribution="unique",
        key_prefix=f"stop-{os.urandom(4).hex()}-",
        policy=RetryPolicy(name="none", max_total_s=30.0, attempt_timeout_s=30.0),
    )
    return run_herd(config)


async def _not_serving(target: str) -> None:
    """Until the cache no longer answers SERVING: it has acted on the signal."""

    async def serving() -> bool:
        async with aio_channel(target, [], None) as channel:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
            except grpc.aio.AioRpcError:
                return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    await eventually(serving, lambda up: not up, "the cache stops serving")


async def _chaos(state_dir: Path, *args: str) -> dict[str, object]:
    """`chaos ARGS --json` as users run it; its JSON document."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chaos",
        *args,
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "HERDLAB_STATE_DIR": str(state_dir)},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    doc: dict[str, object] = json.loads(out)
    return doc


async def _fault_in_flight(stack: LocalStack, info: StackInfo, verb: str) -> HerdResult:
    """The herd's calls held in the DB's queue, then `chaos VERB cache`; the gate opens once
    the cache has stopped serving. Returns the herd's result, restoring the cache after."""
    async with StackClients(info) as lab:
        gate = DbGate(lab)
        await gate.shut()
        herd = asyncio.ensure_future(_herd(info))
        try:
            await lab.until_db(lambda s: s.queued == USERS, "every herd call queued in the DB")
            fault = asyncio.ensure_future(_chaos(stack.state_dir, verb, "cache"))
            await _not_serving(info.services["cache"].grpc)
        finally:
            await gate.open()  # whatever happened: the cache's drain must not wait on it
        done = await fault
        result = await herd
    assert done["service"]["state"] == "stopped"  # type: ignore[index]
    restored = await _chaos(stack.state_dir, "restore", "cache")
    assert restored["service"]["state"] == "running"  # type: ignore[index]
    if verb == "stop":
        assert done["forced"] is False and done["bound_s"] == 35.0  # its grace, and 5 s
    return result


def test_a_stop_drains_the_calls_in_flight_where_a_kill_fails_them(
    lab_stack: tuple[LocalStack, StackInfo],
) -> None:
    stack, info = lab_stack
    stopped = asyncio.run(_fault_in_flight(stack, info, "stop")).summary()
    assert stopped["ok"] == USERS and stopped["errors"] == {} and stopped["lost"] == 0
    killed = asyncio.run(_fault_in_flight(stack, info, "kill")).summary()
    assert killed["ok"] == 0 and killed["errors"] == {"UNAVAILABLE": USERS}
    assert killed["lost"] == 0
    back = asyncio.run(_herd(info)).summary()
    assert back["ok"] == USERS and back["lost"] == 0


STOP_AND_HEAL = """\
title = "a graceful stop swept as a fault"
measures = ["ok", "client_errors", "lost", "fault"]
[stack]
fault = "stop"
[stack.db]
latency = "1s"
spread = "0ms"
[herd]
users = 8
keys = 8
distribution = "unique"
[[timeline]]
when = "db_arrivals >= 8"
do = "fault cache"
[[timeline]]
after = "100ms"
do = "heal cache"
[end]
limit = "60s"
"""


def test_a_fault_step_can_stop_and_heal_restores(tmp_path: Path) -> None:
    path = tmp_path / "stop.toml"
    path.write_text(STOP_AND_HEAL)
    done = chaos_run(path, tmp_path / "out.json", tmp_path / "state")
    assert done.returncode == 0, done.stdout + done.stderr
    (row,) = json.loads((tmp_path / "out.json").read_text())["rows"]
    # The calls in flight were drained (the test above holds them there; here the DB's latency
    # does), and the heal brought the stopped cache back (a failed restore fails the run).
    assert row["fault"] == "stop" and row["ok"] == 8 and row["client_errors"] == 0
    assert row["lost"] == 0
