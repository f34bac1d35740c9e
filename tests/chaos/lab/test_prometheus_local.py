"""Prometheus without Docker: the local stack's file_sd target file, the generated config
(checked by promtool), and `chaos up --prometheus` with Debian's real binary: its targets are
the lab's services, up, labelled as the lab's rules expect; `down` stops it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from chaos.lab import prometheus
from chaos.lab.prometheus import LAB_DIR, config, lab_globals, target_groups

CHAOS = [sys.executable, "-m", "chaos"]
WAIT_S = 60.0


def chaos(state_dir: Path, *args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HERDLAB_STATE_DIR": str(state_dir)}
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [*CHAOS, *args], capture_output=True, text=True, env=env, timeout=90, check=False
    )


def _need(tool: str) -> str:
    found = shutil.which(tool)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} not found (apt-get install prometheus)")
        pytest.skip(f"{tool} not installed (apt-get install prometheus)")
    return found


def test_target_groups_label_services_as_the_rules_expect() -> None:
    groups = target_groups(
        {
            "db": "http://127.0.0.1:9101/metrics",
            "cache": "http://127.0.0.1:9102/metrics",
            "cache-2": "http://127.0.0.1:9202/other",
            "prometheus": "http://127.0.0.1:9090/metrics",
        }
    )
    assert groups == [
        {"targets": ["127.0.0.1:9102"], "labels": {"job": "cache", "service": "cache"}},
        {
            "targets": ["127.0.0.1:9202"],
            "labels": {"job": "cache", "service": "cache-2", "__metrics_path__": "/other"},
        },
        {"targets": ["127.0.0.1:9101"], "labels": {"job": "db", "service": "db"}},
    ]


def test_generated_config_keeps_the_labs_globals_and_rules(tmp_path: Path) -> None:
    globals_ = lab_globals((LAB_DIR / "prometheus.yml").read_text())
    assert globals_ == {
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "evaluation_interval": "1s",
    }
    generated = config(tmp_path, "127.0.0.1:9999")
    assert generated["global"] == globals_
    assert generated["rule_files"] == [str(LAB_DIR / "rules.yml")]
    path = tmp_path / "prometheus.yml"
    path.write_text(json.dumps(generated))
    check = subprocess.run(
        [_need("promtool"), "check", "config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def _targets(url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/api/v1/targets", timeout=5) as response:
        targets: list[dict[str, Any]] = json.loads(response.read())["data"]["activeTargets"]
        return targets


def _until_up(url: str) -> list[dict[str, Any]]:
    """Polls the targets until the DB's and the cache's are up (bounded: Prometheus scrapes
    each second once file_sd has read the file)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        targets = _targets(url)
        up = {t["labels"].get("job") for t in targets if t["health"] == "up"}
        if {"db", "cache"} <= up:
            return targets
        assert time.monotonic() < deadline, f"targets not up within {WAIT_S:g}s: {targets}"
        time.sleep(0.1)


def test_up_prometheus_scrapes_the_stack_and_down_stops_it(tmp_path: Path) -> None:
    _need("prometheus")
    up = chaos(tmp_path, "up", "--prometheus", "--json")
    try:
        assert up.returncode == 0, up.stderr
        doc = json.loads(chaos(tmp_path, "status", "--json").stdout)
        assert json.loads(up.stdout)["prometheus"] == doc["prometheus"]
        info = doc["prometheus"]
        assert info["targets_file"] == str(tmp_path / "prometheus" / "targets.json")
        assert info["url"].startswith("http://127.0.0.1:")
        pid = doc["services"]["prometheus"]["pid"]
        assert doc["services"]["prometheus"]["state"] == "running"
        targets = _until_up(info["url"])
        scraped = {t["labels"]["instance"]: t["labels"]["job"] for t in targets}
        for name in ("db", "cache"):
            address = doc["services"][name]["metrics"].removeprefix("http://")
            assert scraped[address.removesuffix("/metrics")] == name
    finally:
        down = chaos(tmp_path, "down")
    assert down.returncode == 0 and "prometheus" in down.stdout, down
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not Path(info["targets_file"]).exists()


def test_verbs_beside_prometheus_print_nothing_on_stderr(tmp_path: Path) -> None:
    """The chaos-action notice goes to the services with a gRPC address only: Prometheus, a
    helper without one, was once sent it at an empty address, and gRPC's C core wrote its DNS
    resolver errors to the verb's stderr."""
    _need("prometheus")
    up = chaos(tmp_path, "up", "--prometheus")
    try:
        assert up.returncode == 0, up.stderr
        for verb in (
            ("errors", "db", "0.1"),
            ("latency", "db", "20ms"),
            ("expire", "--all"),
            ("kill", "db"),
            ("restore", "db"),
            ("reset",),
        ):
            result = chaos(tmp_path, *verb)
            assert result.returncode == 0, (verb, result.stderr)
            assert result.stderr == "", (verb, result.stderr)
    finally:
        chaos(tmp_path, "down")


def test_up_writes_the_target_file_without_prometheus(tmp_path: Path) -> None:
    up = chaos(tmp_path, "up", "--json")
    try:
        assert up.returncode == 0, up.stderr
        info = json.loads(up.stdout)
        groups = json.loads(Path(info["prometheus"]["targets_file"]).read_text())
        assert {g["labels"]["job"] for g in groups} == {"db", "cache"}
        assert info["prometheus"]["url"] is None and "prometheus" not in info["services"]
    finally:
        chaos(tmp_path, "down")


def test_prometheus_missing_from_path_is_one_line_exit_2(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    result = chaos(tmp_path / "state", "up", "--prometheus", path=str(empty))
    assert result.returncode == 2, result
    assert result.stderr.strip() == f"chaos: error: {prometheus.INSTALL_HINT}"
    assert not (tmp_path / "state" / "stack.json").exists()  # nothing was started
