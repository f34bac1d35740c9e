"""Wire faults as users drive them: `chaos up --proxy`, then separate `chaos` processes that
partition, add latency, list and reset, against real services and a real proxy process.

A fault given `--for` is held by the proxy itself; SIGTERM (or Ctrl-C) of the foreground command
removes it at once (exit 130), and `chaos reset` returns the stack to its start settings. Bad
input, and a stack without a proxy, exit 2 with one line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from click.testing import CliRunner

from chaos.cli.main import cli
from chaos.cli.wire import settings_text
from chaos.lab.backends.base import BackendError
from chaos.lab.backends.local import LocalStack
from chaos.lab.state import ServiceRecord
from herdlab import loop
from protos import cache_pb2, cache_pb2_grpc

CHAOS = [sys.executable, "-m", "chaos"]


def chaos(state_dir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HERDLAB_STATE_DIR": str(state_dir)}
    return subprocess.run(
        [*CHAOS, *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def proxied_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    state = tmp_path_factory.mktemp("wire")
    up = chaos(state, "up", "--json", "--proxy", "cache", "--db-arg=--latency=1ms")
    assert up.returncode == 0, up.stderr
    try:
        yield state
    finally:
        chaos(state, "down")


def faults(state: Path) -> dict[str, Any]:
    listed = chaos(state, "faults", "--json")
    assert listed.returncode == 0, listed.stderr
    doc: dict[str, Any] = json.loads(listed.stdout)
    return doc


def cache_link(state: Path) -> str:
    status = chaos(state, "status", "--json")
    assert status.returncode == 0, status.stderr
    target: str = json.loads(status.stdout)["proxy"]["cache"]
    return target


def get(target: str, timeout: float) -> grpc.StatusCode | None:
    """One Get through `target`: None for a value, else the error's code."""
    with grpc.insecure_channel(target) as channel:
        try:
            cache_pb2_grpc.CacheStub(channel).Get(
                cache_pb2.CacheGetRequest(key="k"), timeout=timeout, wait_for_ready=True
            )
        except grpc.RpcError as exc:
            return exc.code()
    return None


def test_up_with_proxy_puts_the_cache_behind_a_link(proxied_dir: Path) -> None:
    status = json.loads(chaos(proxied_dir, "status", "--json").stdout)
    assert set(status["services"]) == {"db", "wire", "cache"}
    assert status["proxy"]["cache"] != status["services"]["cache"]["grpc"]
    assert get(cache_link(proxied_dir), 10) is None


def test_partition_for_is_listed_while_it_holds_and_sigterm_removes_it(proxied_dir: Path) -> None:
    env = {**os.environ, "HERDLAB_STATE_DIR": str(proxied_dir)}
    held = subprocess.Popen(
        [*CHAOS, "partition", "cache", "--for", "60s", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not faults(proxied_dir)["wire"] and time.monotonic() < deadline:
            assert held.poll() is None, held.communicate()
        listed = faults(proxied_dir)["wire"]
        assert [(f["name"], f["kind"], f["stream"]) for f in listed] == [
            ("cache-partition", "blackhole", "both")
        ]
        assert listed[0]["expires_at"] > time.time()
        assert get(cache_link(proxied_dir), 0.5) == grpc.StatusCode.DEADLINE_EXCEEDED
        held.send_signal(signal.SIGTERM)
        assert held.wait(timeout=30) == 143  # as SIGTERM ends every chaos command
    finally:
        if held.poll() is None:
            held.kill()
        held.communicate()
    assert faults(proxied_dir)["wire"] == []
    assert get(cache_link(proxied_dir), 10) is None


def test_a_for_fault_expires_on_the_proxy_even_if_its_command_is_killed(
    proxied_dir: Path,
) -> None:
    env = {**os.environ, "HERDLAB_STATE_DIR": str(proxied_dir)}
    held = subprocess.Popen(
        [*CHAOS, "wire", "cache", "--latency", "5ms", "--for", "3s"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not faults(proxied_dir)["wire"] and time.monotonic() < deadline:
        assert held.poll() is None
    held.kill()  # SIGKILL: nothing of the command's own cleanup runs
    held.wait(timeout=10)
    deadline = time.monotonic() + 30
    while faults(proxied_dir)["wire"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert faults(proxied_dir)["wire"] == []


def test_status_reads_the_stacks_state_file_once(
    proxied_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its table, its proxy links and the settings in force come from one reading."""
    monkeypatch.delenv(loop.ENV, raising=False)  # `chaos` sets it for what it starts
    reads: list[Path] = []
    records = LocalStack.records

    def counted(stack: LocalStack) -> dict[str, ServiceRecord]:
        reads.append(stack.state_file)
        return records(stack)

    monkeypatch.setattr(LocalStack, "records", counted)
    result = CliRunner().invoke(cli, ["--state-dir", str(proxied_dir), "status", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert set(doc["services"]) == {"db", "wire", "cache"} and "cache" in doc["proxy"]
    assert doc["settings"]["db"]["latency_ms"] == 1 and doc["settings"]["cache"] is not None
    assert reads == [proxied_dir / "stack.json"]


def test_status_and_faults_print_the_settings_in_force_alike(proxied_dir: Path) -> None:
    """Numbers as `chaos faults` always printed them: `latency_ms=1`, not `latency_ms=1.0`."""
    status, listed = chaos(proxied_dir, "status"), chaos(proxied_dir, "faults")
    assert status.returncode == 0 and listed.returncode == 0, status.stderr + listed.stderr
    for service in ("db", "cache"):
        line = next(x for x in status.stdout.splitlines() if x.startswith(f"{service}: "))
        # `chaos faults` may add what reverts when and what changed since `chaos up`.
        assert any(x.startswith(line) for x in listed.stdout.splitlines()), (line, listed.stdout)
    db = next(x for x in status.stdout.splitlines() if x.startswith("db: "))
    assert db.startswith("db: latency_ms=1, spread_ms=") and ".0," not in db, db


def test_settings_text_writes_numbers_in_their_shortest_form() -> None:
    values = {"latency_ms": 50.0, "error_rate": 0.25, "queue": 64, "coalescing": True}
    assert settings_text({**values, "changed": ["queue"], "reverts_at": {"queue": 1.0}}) == (
        "latency_ms=50, error_rate=0.25, queue=64, coalescing=True"
    )


def test_reset_returns_the_start_settings_and_removes_wire_faults(proxied_dir: Path) -> None:
    for args in (
        ["wire", "cache", "--latency", "1ms", "--stream", "upstream"],
        ["latency", "db", "300ms"],
        ["capacity", "--concurrency", "5"],
        ["coalescing", "off"],
    ):
        done = chaos(proxied_dir, *args)
        assert done.returncode == 0, done.stderr
    doc = faults(proxied_dir)
    assert doc["db"]["latency_ms"] == 300 and doc["db"]["concurrency"] == 5
    assert doc["db"]["changed"] == ["concurrency", "latency_ms"]
    assert doc["cache"] == {"coalescing": False, "changed": ["coalescing"]}
    assert [f["name"] for f in doc["wire"]] == ["cache-latency"]
    reset = chaos(proxied_dir, "reset", "--json")
    assert reset.returncode == 0, reset.stderr
    assert json.loads(reset.stdout)["wire_removed"] == ["cache-latency"]
    doc = faults(proxied_dir)
    assert doc["wire"] == [] and doc["db"]["changed"] == [] and doc["db"]["latency_ms"] == 1
    assert doc["cache"]["changed"] == []


def test_reset_once_resets_the_connections_open_now(proxied_dir: Path) -> None:
    target = cache_link(proxied_dir)
    with grpc.insecure_channel(target) as channel:
        stub = cache_pb2_grpc.CacheStub(channel)
        stub.Get(cache_pb2.CacheGetRequest(key="k"), timeout=10, wait_for_ready=True)
        assert chaos(proxied_dir, "wire", "cache", "--reset").returncode == 0
        # The channel's connection was reset; it reconnects and serves again.
        stub.Get(cache_pb2.CacheGetRequest(key="k"), timeout=10, wait_for_ready=True)
    assert faults(proxied_dir)["wire"] == []


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["partition", "db"], "not in front of db"),
        (["partition", "redis"], "'redis' is not one of"),
        (["wire", "cache"], "give exactly one of"),
        (["wire", "cache", "--jitter", "1s", "--blackhole"], "--jitter goes with --latency"),
        (["partition", "cache", "--for", "0s"], "must be in (0"),
    ],
)
def test_bad_wire_input_exits_2_with_one_line(
    proxied_dir: Path, args: list[str], needle: str
) -> None:
    result = chaos(proxied_dir, *args)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["partition", "cache", "--dry-run"],
        ["latency", "db", "300ms", "--for", "5s", "--dry-run"],
        ["kill", "db", "--dry-run"],
    ],
)
def test_dry_run_without_a_stack_fails_as_a_real_run_would(tmp_path: Path, args: list[str]) -> None:
    result = chaos(tmp_path, *args)
    assert result.returncode == 2 and "no lab stack is up" in result.stderr, result
    assert len(result.stderr.splitlines()) == 1


def test_a_stack_started_without_proxy_says_so(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path)
    records = {
        name: ServiceRecord(name, ["x"], "127.0.0.1:1", "", str(tmp_path / f"{name}.log"))
        for name in ("db", "cache")
    }
    stack._save(records)
    with pytest.raises(BackendError, match="the stack has no wire proxy"):
        stack.proxy_admin()
    assert stack.proxied() == {}
    assert stack.client_target("cache") == "127.0.0.1:1"


def test_latency_for_is_listed_while_it_holds_and_ctrl_c_reverts_it(proxied_dir: Path) -> None:
    env = {**os.environ, "HERDLAB_STATE_DIR": str(proxied_dir)}
    held = subprocess.Popen(
        [*CHAOS, "latency", "db", "300ms", "--for", "60s"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not faults(proxied_dir)["db"]["reverts_at"] and time.monotonic() < deadline:
            assert held.poll() is None, held.communicate()
        db = faults(proxied_dir)["db"]
        assert db["latency_ms"] == 300 and list(db["reverts_at"]) == ["latency_ms"]
        held.send_signal(signal.SIGINT)
        assert held.wait(timeout=30) == 130
    finally:
        if held.poll() is None:
            held.kill()
        held.communicate()
    db = faults(proxied_dir)["db"]
    assert db["latency_ms"] == 1 and db["reverts_at"] == {} and db["changed"] == []


def test_latency_for_reverts_on_the_db_even_if_its_command_is_killed(proxied_dir: Path) -> None:
    env = {**os.environ, "HERDLAB_STATE_DIR": str(proxied_dir)}
    held = subprocess.Popen(
        [*CHAOS, "errors", "db", "0.5", "--for", "3s"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not faults(proxied_dir)["db"]["reverts_at"] and time.monotonic() < deadline:
        assert held.poll() is None
    held.kill()
    held.wait(timeout=10)
    deadline = time.monotonic() + 30
    while faults(proxied_dir)["db"]["error_rate"] != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert faults(proxied_dir)["db"]["error_rate"] == 0


def test_faults_and_reset_work_on_a_stack_of_replicas(tmp_path: Path) -> None:
    env = {**os.environ, "HERDLAB_STATE_DIR": str(tmp_path)}

    def chaos(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CHAOS, *args], capture_output=True, text=True, env=env, timeout=60, check=False
        )

    assert chaos("up", "--replicas", "2").returncode == 0
    try:
        assert chaos("latency", "db", "200ms").returncode == 0
        held = json.loads(chaos("faults", "--json").stdout)
        assert held["db"]["latency_ms"] == 200 and held["db"]["changed"] == ["latency_ms"]
        assert held["cache"]["coalescing"] is True
        assert chaos("reset").returncode == 0
        after = json.loads(chaos("faults", "--json").stdout)
        assert after["db"]["changed"] == [] and after["db"]["latency_ms"] == 50
    finally:
        assert chaos("down").returncode == 0
