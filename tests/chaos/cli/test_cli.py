"""The `chaos` command as users run it: a real process, real exit codes, real services.

Bad input exits 2 with one line naming the problem and no traceback; `up`/`status`/`down` keep
the JSON shape scripts read; kill, pause and restore act on real processes, and clients see
typed errors while a service is down or hung, and values once it is back. No lab process is left
behind by `down` or by Ctrl-C during a scenario.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from chaos.engine.herd import HerdConfig, HerdResult, run_herd
from herdlab import scrape
from herdlab.retry import RetryPolicy

CHAOS = [sys.executable, "-m", "chaos"]


def chaos(state_dir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HERDLAB_STATE_DIR": str(state_dir)}
    return subprocess.run(
        [*CHAOS, *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["kill", "nosuch"], "'nosuch' is not one of"),
        (["outage", "db", "--for", "10x"], "invalid duration '10x'"),
        (["outage", "db", "--for", "-1s"], "invalid duration '-1s'"),
        (["outage", "db", "--for", "0s"], "must be in (0"),
        (["herd", "--policy", "bogus"], "'bogus' is not one of"),
        (["restore", "db"], "no lab stack is up"),
        (["kill", "cache"], "no lab stack is up"),
        (["latency", "cache", "300ms"], "'cache' is not 'db'"),
        (["errors", "db", "1.5"], "not between 0 and 1"),
        (["expire"], "either KEY... or --all"),
        (["flap", "db", "--down", "1s", "--up", "1s", "--cycles", "0"], "--cycles"),
        (["scenario", "stampede", "--clients", "0"], "--clients"),
        (["nosuchverb"], "No such command"),
        (["--backend", "docker", "scenario", "stampede"], "runs local stacks only"),
        (
            ["--backend", "docker", "run", "chaos/scenarios/stampede/experiment.toml"],
            "local stacks only",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    result = chaos(tmp_path, *args)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("chaos: error: ")
    assert needle in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


@pytest.fixture()
def stack_dir(tmp_path: Path) -> Iterator[Path]:
    up = chaos(tmp_path, "up", "--json", "--db-arg=--latency=20ms", "--db-arg=--spread=0ms")
    assert up.returncode == 0, up.stderr
    try:
        yield tmp_path
    finally:
        chaos(tmp_path, "down")


def _services(state_dir: Path) -> dict[str, dict[str, object]]:
    status = chaos(state_dir, "status", "--json")
    assert status.returncode == 0, status.stderr
    services: dict[str, dict[str, object]] = json.loads(status.stdout)["services"]
    return services


def _running(pid: int) -> bool:
    """Whether `pid` is a process that has not exited (a zombie has: it awaits its reaper)."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def test_up_status_down_json_shape_and_nothing_left(stack_dir: Path) -> None:
    services = _services(stack_dir)
    assert set(services) == {"db", "cache"}
    pids = []
    for name in ("db", "cache"):
        service = services[name]
        assert str(service["grpc"]).startswith("127.0.0.1:")
        assert str(service["metrics"]).startswith("http://127.0.0.1:")
        assert str(service["metrics"]).endswith("/metrics")
        assert isinstance(service["pid"], int) and psutil.pid_exists(service["pid"])
        pids.append(service["pid"])
    again = chaos(stack_dir, "up")
    assert again.returncode == 2 and "already up" in again.stderr
    down = chaos(stack_dir, "down")
    assert down.returncode == 0, down.stderr
    # Every one has exited (one that `chaos up` started is init's to reap, maybe a second later).
    assert not [p for p in pids if _running(p)], "lab processes left after down"
    assert json.loads(chaos(stack_dir, "status", "--json").stdout) == {"services": {}}


def _herd(target: str, users: int, deadline_s: float, policy: str = "none") -> HerdResult:
    config = HerdConfig(
        target=target,
        users=users,
        keys=users,
        distribution="round-robin",
        key_prefix=f"cli-{os.urandom(4).hex()}-",
        policy=RetryPolicy(
            name=policy,
            base_s=0.2,
            cap_s=0.2,
            max_attempts=100,
            max_total_s=deadline_s,
            attempt_timeout_s=deadline_s,
        ),
    )
    return asyncio.run(run_herd(config))


def test_kill_and_restore_db_clients_see_typed_errors_then_values(stack_dir: Path) -> None:
    cache = str(_services(stack_dir)["cache"]["grpc"])
    assert chaos(stack_dir, "kill", "db").returncode == 0
    assert _services(stack_dir)["db"]["state"] == "stopped"
    down = _herd(cache, users=20, deadline_s=10)
    summary = down.summary()
    # Every request ended, none with a value (the DB is gone and every key is cold), all typed.
    assert summary["lost"] == 0 and summary["ok"] == 0
    assert sum(summary["errors"].values()) == 20
    assert set(summary["errors"]) <= {"UNAVAILABLE", "DEADLINE_EXCEEDED"}
    restored = chaos(stack_dir, "restore", "db", "--json")
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["service"]["state"] == "running"
    # The cache's channel to the DB reconnects on its backoff (100 ms, x1.6, up to 1 s): clients
    # that retry within their deadline get values once it has.
    back = _herd(cache, users=20, deadline_s=30, policy="fixed").summary()
    assert back["ok"] == 20 and back["lost"] == 0 and back["wrong_values"] == 0


def test_pause_cache_clients_hit_their_deadline_then_resume(
    stack_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A paused cache never completes the herd's connect, so the herd releases once its wait for
    # its channels is over (5 s in `chaos herd`); half a second is as good here.
    monkeypatch.setattr("chaos.engine.herd.CONNECT_TIMEOUT_S", 0.5)
    cache = str(_services(stack_dir)["cache"]["grpc"])
    assert chaos(stack_dir, "pause", "cache").returncode == 0
    assert _services(stack_dir)["cache"]["state"] == "paused"
    hung = _herd(cache, users=10, deadline_s=1).summary()
    assert hung["lost"] == 0 and hung["ok"] == 0
    assert hung["errors"] == {"DEADLINE_EXCEEDED": 10}
    assert chaos(stack_dir, "resume", "cache").returncode == 0
    back = _herd(cache, users=10, deadline_s=10).summary()
    assert back["ok"] == 10 and back["lost"] == 0


def test_outage_restores_and_is_journalled(stack_dir: Path) -> None:
    result = chaos(stack_dir, "outage", "db", "--for", "200ms", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["verb"] == "outage" and doc["up_at"] > doc["down_at"]
    assert _services(stack_dir)["db"]["state"] == "running"
    journal = [json.loads(line) for line in (stack_dir / "journal.jsonl").read_text().splitlines()]
    assert [(e["verb"], e["result"]) for e in journal[-3:]] == [
        ("kill", "ok"),
        ("restore", "ok"),
        ("outage", "ok"),
    ]


def test_a_db_outage_under_traffic_reports_its_reconnect_lag(stack_dir: Path) -> None:
    """The restored DB's silence until the cache's channel reconnects: restore to first arrival."""
    env = {**os.environ, "HERDLAB_STATE_DIR": str(stack_dir)}
    rate = ["--rate", "50/s", "--duration", "15s", "--keys", "100000", "--distribution", "unique"]
    herd = subprocess.Popen(
        [*CHAOS, "herd", *rate],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.0)
        result = chaos(stack_dir, "outage", "db", "--for", "500ms", "--json")
        text = chaos(stack_dir, "outage", "db", "--for", "500ms")
    finally:
        herd.kill()
        herd.wait()
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert isinstance(doc["reconnect_lag_s"], float) and doc["reconnect_lag_s"] >= 0, doc
    assert doc["reconnect_lag_wait_s"] == 30 and doc["up_at"] > doc["down_at"]
    assert re.search(r"reconnect_lag_s=\+\d+\.\d\ds", text.stdout), text.stdout


def test_a_db_outage_without_traffic_says_why_it_has_no_lag(stack_dir: Path) -> None:
    started = time.monotonic()
    doc = json.loads(chaos(stack_dir, "outage", "db", "--for", "100ms", "--json").stdout)
    assert doc["reconnect_lag_s"] is None and "nothing for 1s" in doc["reconnect_lag_why"]
    assert time.monotonic() - started < 15, "no wait for a request nobody sends"
    assert chaos(stack_dir, "kill", "cache").returncode == 0
    alone = chaos(stack_dir, "outage", "db", "--for", "100ms", "--json")
    assert alone.returncode == 0, alone.stderr
    assert json.loads(alone.stdout)["reconnect_lag_why"] == "no cache is running"


def _chaos_actions(metrics_url: object) -> dict[tuple[str, str], float]:
    page = scrape.read("service", str(metrics_url), 10.0)
    return {
        (sample.labels["verb"], sample.labels["target"]): sample.value
        for sample in page.select("herdlab_chaos_actions_total")
    }


def test_chaos_actions_are_counted_by_the_services_that_answer(stack_dir: Path) -> None:
    services = _services(stack_dir)
    latency = chaos(stack_dir, "latency", "db", "20ms")
    assert latency.returncode == 0
    # The echo prints numbers as `chaos faults` does: 20, not 20.0.
    assert "latency_ms=20 " in latency.stdout, latency.stdout
    assert chaos(stack_dir, "kill", "db", "--dry-run").returncode == 0
    killed = chaos(stack_dir, "kill", "db", "--json")
    assert killed.returncode == 0, killed.stderr
    assert json.loads(killed.stdout)["counted_by"] == ["cache"]
    # The killed DB cannot count; the cache, which survived, counted both actions and no dry run.
    cache = _chaos_actions(services["cache"]["metrics"])
    assert cache[("latency", "db")] == 1 and cache[("kill", "db")] == 1
    assert cache[("pause", "cache")] == 0, "every known pair is exported from the start"
    assert chaos(stack_dir, "restore", "db").returncode == 0
    db = _chaos_actions(_services(stack_dir)["db"]["metrics"])
    # The restarted DB starts from 0 and counts its own restore.
    assert db[("restore", "db")] == 1 and db[("kill", "db")] == 0
    assert _chaos_actions(services["cache"]["metrics"])[("restore", "db")] == 1


def test_dry_run_changes_nothing(stack_dir: Path) -> None:
    before = _services(stack_dir)
    result = chaos(stack_dir, "kill", "db", "--dry-run", "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout)["result"] == "dry-run"
    assert _services(stack_dir) == before


def _command_line(process: psutil.Process) -> str:
    """A process's command line; empty for one that ended meanwhile (a short-lived child, such
    as the `git` that provenance runs, can be a zombie when it is looked at)."""
    try:
        return " ".join(process.cmdline())
    except psutil.NoSuchProcess:  # ZombieProcess included
        return ""


def _lab_processes(root: psutil.Process) -> list[psutil.Process]:
    return [
        p
        for p in root.children(recursive=True)
        if any(m in _command_line(p) for m in ("db_service", "cache_service"))
    ]


def _listening(process: psutil.Process) -> bool:
    try:
        return any(c.status == psutil.CONN_LISTEN for c in process.net_connections())
    except psutil.Error:
        return False


def _running_scenario(state_dir: Path) -> tuple[subprocess.Popen[str], list[psutil.Process]]:
    """A stampede scenario, running, with both services of its stack listening (bounded wait);
    its DB is slow enough that nothing ends before the test acts."""
    # The scenario's own stack folder goes under `state_dir/tmp`, where the test can see it.
    (state_dir / "tmp").mkdir()
    env = {**os.environ, "HERDLAB_STATE_DIR": str(state_dir), "TMPDIR": str(state_dir / "tmp")}
    proc = subprocess.Popen(
        [*CHAOS, "scenario", "stampede", "--clients", "5", "--db-latency", "60s"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    parent = psutil.Process(proc.pid)
    seen: list[psutil.Process] = []
    for _ in range(3000):
        seen = _lab_processes(parent)
        if len(seen) == 2 and all(_listening(p) for p in seen):
            break
        time.sleep(0.01)
    if len(seen) != 2:
        proc.kill()
        proc.communicate(timeout=60)
        pytest.fail(f"the scenario's stack did not come up: {seen}")
    return proc, seen


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)]
)
def test_a_signal_during_a_scenario_tears_it_down_like_ctrl_c(
    tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    proc, seen = _running_scenario(tmp_path)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    # The controller tears down before it exits: nothing to wait for.
    assert [p for p in seen if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
    assert list((tmp_path / "tmp").iterdir()) == [], "the stack's folder is removed"


def test_a_killed_controller_leaves_no_process_10s_later(tmp_path: Path) -> None:
    proc, seen = _running_scenario(tmp_path)
    tethers = [
        p for p in psutil.Process(proc.pid).children() if "chaos.lab.tether" in _command_line(p)
    ]
    assert len(tethers) == 1, "a scenario's stack is tethered to its controller"
    proc.kill()
    proc.communicate(timeout=60)
    _, alive = psutil.wait_procs([*seen, *tethers], timeout=10)
    assert alive == [], f"left behind: {alive}"
    assert list((tmp_path / "tmp").iterdir()) == [], "the stack's folder is removed"


def test_services_of_chaos_up_outlive_the_shell_that_started_them(tmp_path: Path) -> None:
    env = {**os.environ, "HERDLAB_STATE_DIR": str(tmp_path)}
    command = f"{shlex.join(CHAOS)} up >/dev/null && echo up && exec sleep 60"
    shell = subprocess.Popen(
        ["bash", "-c", command],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the shell's own session, as a terminal's
    )
    try:
        assert shell.stdout is not None
        assert shell.stdout.readline().strip() == "up"
        os.killpg(shell.pid, signal.SIGHUP)  # the terminal closes: its session hangs up
        shell.wait(timeout=30)
        status = json.loads(chaos(tmp_path, "status", "--json").stdout)
        assert {s["state"] for s in status["services"].values()} == {"running"}, status
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGKILL)
        shell.communicate(timeout=30)
        assert chaos(tmp_path, "down").returncode == 0


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["--cache-arg=--guard=nosuch"], {}, "cache-service: Invalid value for '--guard'"),
        ([], {"HERDLAB_CACHE_GUARDS": "limit:n=abc"}, "cache-service: Invalid value for '--guard'"),
        (["--db-arg=--latency=-5ms"], {}, "db-service: Invalid value for '--latency'"),
        (["--cache-arg=--retry-attempts=0"], {}, "cache-service: Invalid value for"),
    ],
)
def test_up_judges_the_services_settings_before_starting_anything(
    tmp_path: Path, args: list[str], env: dict[str, str], says: str
) -> None:
    """A bad pass-through setting once started the DB, then waited 20 s on a cache that had
    exited in a second, and said it 'did not become SERVING'."""
    result = subprocess.run(
        [*CHAOS, "up", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HERDLAB_STATE_DIR": str(tmp_path), **env},
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result
    assert len(result.stderr.strip().splitlines()) == 1 and says in result.stderr, result.stderr
    assert not (tmp_path / "stack.json").exists(), "nothing was started"


def test_a_service_that_exits_at_start_is_reported_with_its_own_words(tmp_path: Path) -> None:
    result = chaos(tmp_path, "up", "--cache-arg=--host=0.0.0.0")
    assert result.returncode == 2, result
    assert "cache did not become SERVING: it exited at start (exit 2)" in result.stderr, result
    assert "HERDLAB_ADMIN_TOKEN" in result.stderr, "the service's own line"
    assert "within" not in result.stderr, "no wait for a process that is gone"
    status = json.loads(chaos(tmp_path, "status", "--json").stdout or "{}")
    assert all(s["state"] == "stopped" for s in status.get("services", {}).values()), status


def test_outage_and_flap_print_times_since_the_command_started(stack_dir: Path) -> None:
    """They printed wall-clock epochs (`down_at=1796610386.16`); the JSON keeps them."""
    outage = chaos(stack_dir, "outage", "db", "--for", "200ms")
    assert outage.returncode == 0, outage.stderr
    assert re.search(r"down_at=\+\d+\.\d\ds up_at=\+\d+\.\d\ds", outage.stdout), outage.stdout
    flap = chaos(stack_dir, "flap", "db", "--down", "100ms", "--up", "100ms", "--cycles", "2")
    assert flap.returncode == 0, flap.stderr
    assert re.search(r"outages=\+\d+\.\d\ds\.\.\+\d+\.\d\ds,\+\d+\.\d\ds", flap.stdout), flap.stdout
    assert not re.search(r"\d{9,}", outage.stdout + flap.stdout)
    doc = json.loads(chaos(stack_dir, "outage", "db", "--for", "100ms", "--json").stdout)
    assert doc["down_at"] > 1e9 and doc["up_at"] > doc["down_at"]


def test_the_herd_summary_names_its_guards_and_no_users_in_rate_mode(stack_dir: Path) -> None:
    """Rate mode printed `users / policy: 0 / none`, and the guards in force were not shown."""
    rate = chaos(stack_dir, "herd", "--rate", "50/s", "--duration", "500ms", "--guard", "budget")
    assert rate.returncode == 0, rate.stderr
    assert re.search(r"guards\s+│ budget", rate.stdout), rate.stdout
    assert "users / policy" not in rate.stdout and re.search(r"policy\s+│ none", rate.stdout)
    doc = json.loads(chaos(stack_dir, "herd", "--users", "3", "--json").stdout)
    assert doc["guards"] == "none" and doc["error_messages"] == {}
