"""The services' log lines: logfmt that a parser can split back into the fields written, and the
events an operator acts on, read back with `chaos logs` from real services."""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from herdlab.logs import LogfmtFormatter, quote

CHAOS = [sys.executable, "-m", "chaos"]


def _fields(line: str) -> dict[str, str]:
    """logfmt -> {key: value}, with quoted values unquoted (shlex reads the same escapes)."""
    return dict(part.split("=", 1) for part in shlex.split(line, posix=True))


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("127.0.0.1:50051", "127.0.0.1:50051"),
        ("limit:n=20+breaker", '"limit:n=20+breaker"'),
        ("two words", '"two words"'),
        ('a "quoted" \\ back', '"a \\"quoted\\" \\\\ back"'),
        ("line\nbreak", '"line\\nbreak"'),
        ("", '""'),
        (True, "true"),
        (0.25, "0.25"),
    ],
)
def test_values_are_bare_only_when_they_are_one_plain_token(value: object, written: str) -> None:
    assert quote(value) == written


def test_a_line_splits_back_into_its_fields() -> None:
    record = logging.LogRecord("herdlab", logging.INFO, __file__, 1, "admin_change", None, None)
    record.fields = {"rpc": "SetFaults", "latency": "300ms", "note": 'say "hi"'}
    line = LogfmtFormatter("db").format(record)
    fields = _fields(line)
    assert fields["service"] == "db"
    assert fields["event"] == "admin_change"
    assert fields["note"] == 'say "hi"'
    assert fields["ts"].endswith("Z")


def _chaos(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HERDLAB_STATE_DIR": str(state_dir)}
    return subprocess.run(
        [*CHAOS, *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def test_chaos_logs_shows_listen_admin_change_and_drain_lines(tmp_path: Path) -> None:
    assert _chaos(tmp_path, "up").returncode == 0
    try:
        assert _chaos(tmp_path, "latency", "db", "300ms").returncode == 0
        db = [_fields(line) for line in _chaos(tmp_path, "logs", "db").stdout.splitlines()]
    finally:
        assert _chaos(tmp_path, "down").returncode == 0
    events = [f["event"] for f in db]
    assert events == ["listening", "admin_change"]
    listening, change = db
    assert listening["grpc"].startswith("127.0.0.1:")
    assert listening["latency"] == "50ms"  # every setting, as the command line writes it
    assert change["rpc"] == "SetFaults"
    assert change["latency"] == "300ms"
    assert "spread" not in change  # only what changed
    # The log file outlives the stack: the drain is in it.
    log = [_fields(line) for line in (tmp_path / "logs" / "cache.log").read_text().splitlines()]
    assert [f["event"] for f in log] == ["listening", "draining", "drained"]
    assert {f["service"] for f in log} == {"cache"}  # one cache: named as in compose


def test_each_replica_logs_under_its_own_name(tmp_path: Path) -> None:
    assert _chaos(tmp_path, "up", "--replicas", "2").returncode == 0
    try:
        shown = {
            name: [_fields(line) for line in _chaos(tmp_path, "logs", name).stdout.splitlines()]
            for name in ("cache-1", "cache-2")
        }
    finally:
        assert _chaos(tmp_path, "down").returncode == 0
    for name, lines in shown.items():
        assert [f["event"] for f in lines] == ["listening"], name
        assert lines[0]["service"] == name


def test_a_cache_takes_its_name_from_the_environment() -> None:
    """As compose names its second replica (HERDLAB_CACHE_NAME: cache-2)."""
    env = {**os.environ, "HERDLAB_CACHE_NAME": "cache-7"}
    args = ["--port", "0", "--metrics-port", "0", "--db-target", "127.0.0.1:1"]
    with subprocess.Popen(
        [sys.executable, "-m", "cache_service", *args],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    ) as cache:
        assert cache.stderr is not None
        try:
            listening = _fields(cache.stderr.readline())
        finally:
            cache.terminate()
            cache.communicate(timeout=30)
    assert listening["event"] == "listening" and listening["service"] == "cache-7"


def test_chaos_logs_after_down_shows_the_last_stack_and_each_stack_has_its_own_file(
    tmp_path: Path,
) -> None:
    for latency in ("300ms", "400ms"):
        assert _chaos(tmp_path, "up").returncode == 0
        try:
            assert _chaos(tmp_path, "latency", "db", latency).returncode == 0
        finally:
            assert _chaos(tmp_path, "down").returncode == 0
    shown = _chaos(tmp_path, "logs", "db", "-f")  # the stack is down: -f stops at the end
    assert shown.returncode == 0, shown.stderr
    db = [_fields(line) for line in shown.stdout.splitlines()]
    assert [f["event"] for f in db] == ["listening", "admin_change", "draining", "drained"]
    assert db[1]["latency"] == "400ms"  # the second stack's only
    (earlier,) = [p for p in (tmp_path / "logs").iterdir() if p.is_dir()]
    first = [_fields(line) for line in (earlier / "db.log").read_text().splitlines()]
    assert [f.get("latency") for f in first if f["event"] == "admin_change"] == ["300ms"]
    missing = _chaos(tmp_path, "logs", "cache-2")
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        "chaos: error: no lab stack is up, and the last one had no service 'cache-2'; "
        "it had cache, db"
    ]


def test_chaos_logs_without_a_stack_is_one_line_exit_2(tmp_path: Path) -> None:
    result = _chaos(tmp_path, "logs", "db")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "chaos: error: no lab stack is up; run 'chaos up' first"
    ]


@pytest.mark.parametrize(
    ("module", "prog"),
    [("chaos", "chaos"), ("db_service", "db-service"), ("cache_service", "cache-service")],
)
def test_every_command_says_its_version(module: str, prog: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", module, "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout.startswith(f"{prog}, version ")


def test_the_dbs_data_version_is_not_taken_for_version() -> None:
    # `--version` is eager: had it fired, the bad port would never have been looked at.
    result = subprocess.run(
        [sys.executable, "-m", "db_service", "--data-version", "2", "--port", "70000"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "version" not in result.stdout
    assert "70000" in result.stderr


def test_a_timed_fault_logs_its_revert(tmp_path: Path) -> None:
    assert _chaos(tmp_path, "up").returncode == 0
    try:
        assert _chaos(tmp_path, "latency", "db", "300ms", "--for", "1s").returncode == 0
        reverted: list[dict[str, str]] = []
        deadline = time.monotonic() + 10  # the DB's own timer fires at the same deadline
        while not reverted and time.monotonic() < deadline:
            lines = _chaos(tmp_path, "logs", "db").stdout.splitlines()
            reverted = [f for f in map(_fields, lines) if f.get("reverted") == "latency_ms"]
            time.sleep(0.05)
    finally:
        assert _chaos(tmp_path, "down").returncode == 0
    assert reverted and reverted[0]["latency"] == "50ms"
