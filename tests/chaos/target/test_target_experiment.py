"""Experiments against a service that is not the lab's (`[target]`), and `chaos proxy`: the
shipped example's retry storm against the example stock service at its smoke scale (waves
without jitter, none with full jitter, from the herd's record; the example client's cures
recovering well within the waves' time, and within 1.5x of the service's capacity at this small
size: the full size's claim is 1.2x), `exec` steps gated on --allow-exec and
listed by --check, and bad `[target]` input as one line, exit 2, before anything starts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from slow_target import reflecting, stock_service

from chaos.engine import spec
from chaos.lab.ports import free_port

__all__ = ["reflecting"]  # the fixture

ROOT = Path(__file__).parents[3]
EXAMPLE = ROOT / "examples" / "retry-storm-target.toml"
CHAOS = [sys.executable, "-m", "chaos"]

EXEC_FILE = """
title = "exec"
[target]
upstream = "{upstream}"
method = "labtest.v1.Slow/Work"
[herd]
users = 5
[[timeline]]
at = "0s"
do = "exec --timeout 5s sh -c 'echo restarted; exit 3'"
[end]
limit = "60s"
"""


def chaos(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HERDLAB_STATE_DIR": str(state)}
    return subprocess.run(
        [*CHAOS, *args], capture_output=True, text=True, env=env, timeout=180, check=False
    )


def test_the_example_storm_waves_without_jitter_and_the_cures_recover(tmp_path: Path) -> None:
    out = tmp_path / "doc.json"
    # The smoke's service: 4 slots of 50 ms, the 80 calls/s its [smoke] capacity says.
    with stock_service("--slots", "4") as upstream:
        done = chaos(
            tmp_path, "run", str(EXAMPLE), "--smoke", "--set", f"upstream={upstream}",
            "--json", str(out),
        )  # fmt: skip
    assert done.returncode == 0, done.stderr  # the file's hypothesis held
    doc = json.loads(out.read_text())
    rows = {(r["variant"]["herd.client"], r["variant"]["herd.policy"]): r for r in doc["rows"]}
    waves, jitter, cures = rows["herd", "exponential"], rows["herd", "full"], rows["cures", "full"]
    assert waves["retry_peak_over_mean"] >= 2 * jitter["retry_peak_over_mean"]
    assert cures["recovery_over_ideal"] <= 1.5
    assert cures["recovery_over_ideal"] < waves["recovery_over_ideal"]
    # The cures' breaker and limit hold the retries back: a small share of the storm's.
    assert 0 < cures["retries"] * 10 < jitter["retries"]
    assert all(r["lost"] == 0 and r["wrong_values"] == 0 for r in rows.values())
    steps = [e["do"] for e in doc["journal"]]
    assert steps.count("partition target") == 3 and steps.count("heal target") == 3


def test_exec_needs_allow_exec_and_is_journalled(reflecting: str, tmp_path: Path) -> None:
    path = tmp_path / "exec.toml"
    path.write_text(EXEC_FILE.format(upstream=reflecting))
    listed = chaos(tmp_path, "run", str(path), "--check")
    assert listed.returncode == 0 and "would run: sh -c 'echo restarted; exit 3'" in listed.stdout
    refused = chaos(tmp_path, "run", str(path))
    assert refused.returncode == 2 and "allow them with --allow-exec" in refused.stderr
    out = tmp_path / "doc.json"
    done = chaos(tmp_path, "run", str(path), "--allow-exec", "--json", str(out))
    assert done.returncode == 0, done.stderr
    (entry,) = [e for e in json.loads(out.read_text())["journal"] if e["do"].startswith("exec")]
    assert (entry["exit"], entry["output"], entry["timed_out"]) == (3, "restarted\n", False)


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (("labtest.v1.Slow/Work", "labtest.v1.Slow/Nope"), "target: unknown method"),
        (("[herd]", 'capacity = "fast"\n[herd]'), "target.capacity: invalid rate 'fast'"),
        ("[stack]\nreplicas = 2\n", "stack: a [target] file runs against your service"),
        ('[[timeline]]\nat = "1s"\ndo = "kill db"\n', "timeline[1].do: a [target] file's steps"),
        ('[[measure]]\nname = "x"\nquery = "up"\n', "measure[0]: needs [target] with prometheus"),
        (
            (
                "[herd]",
                'prometheus = "http://127.0.0.1:9090"\n'
                '[[measure]]\nname = "error"\nquery = "up"\n[herd]',
            ),
            "measure[0].name: 'error' is a row's own field; choose another",
        ),
    ],
)
def test_bad_target_files(
    reflecting: str, tmp_path: Path, edit: tuple[str, str] | str, needle: str
) -> None:
    text = EXEC_FILE.format(upstream=reflecting)
    text = text.replace(*edit) if isinstance(edit, tuple) else text + edit
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(spec.ExperimentError) as caught:
        spec.resolve_target(spec.load(path))
    assert str(caught.value).startswith(f"{path}: ") and needle in str(caught.value)


def test_chaos_proxy_alone_takes_wire_faults(reflecting: str, tmp_path: Path) -> None:
    env = {**os.environ, "HERDLAB_STATE_DIR": str(tmp_path)}
    listen = f"127.0.0.1:{free_port()}"
    proxy = subprocess.Popen(
        [*CHAOS, "proxy", "--listen", listen, "--upstream", reflecting],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proxy.stdout is not None
        while "proxy admin" not in proxy.stdout.readline():
            assert proxy.poll() is None
        herd = ("herd", "--target", listen, "--call", "labtest.v1.Slow/Work", "--json")
        assert json.loads(chaos(tmp_path, *herd, "--users", "10").stdout)["ok"] == 10
        put = chaos(tmp_path, "wire", "target", "--latency", "300ms")
        assert put.returncode == 0, put.stderr
        assert "target-latency" in chaos(tmp_path, "faults").stdout
        slowed = json.loads(chaos(tmp_path, *herd, "--users", "10").stdout)
        assert slowed["ok"] == 10 and slowed["latency_s"]["p50"] >= 0.3
        assert chaos(tmp_path, "heal", "target").returncode == 0
    finally:
        proxy.send_signal(signal.SIGINT)
        proxy.wait(30)
    assert not (tmp_path / "proxy.json").exists()
    gone = chaos(tmp_path, "wire", "target", "--latency", "1ms")
    assert gone.returncode == 2 and "no proxy runs in front of a target" in gone.stderr
