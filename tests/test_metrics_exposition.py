"""Every process's /metrics passes `promtool check metrics` (Debian's prometheus package) with
no finding: names, units, `_total` suffixes and help texts as Prometheus expects them. A fresh
process exports every labelled outcome at 0, its process and platform metrics and its build."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
from conftest import running_stack
from prometheus_client import CollectorRegistry
from support import scrape

from cache_service.dbclient import ATTEMPT_OUTCOMES
from cache_service.server import LATENCY_SOURCES, SOURCE_RESULTS
from chaos.engine.herd import HERD_RESULTS, HerdConfig, HerdHooks, HerdMetrics, run_herd
from chaos.lab.backends.local import StackInfo
from chaos.lab.ports import free_port
from db_service.server import DROP_STAGES
from db_service.server import OUTCOMES as DB_OUTCOMES
from herdlab.chaoslog import TARGETS, VERBS
from herdlab.metrics import serve_metrics
from herdlab.retry import RetryPolicy

PROMTOOL = shutil.which("promtool")


def _promtool() -> str:
    if PROMTOOL is None:
        if os.environ.get("HERDLAB_REQUIRE_PROMTOOL") == "1":
            pytest.fail("promtool not found (apt-get install prometheus)")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return PROMTOOL


def _check(url: str) -> None:
    with urllib.request.urlopen(url, timeout=10) as response:
        exposition = response.read()
    result = subprocess.run(
        [_promtool(), "check", "metrics"], input=exposition, capture_output=True, timeout=30
    )
    findings = (result.stdout + result.stderr).decode().strip()
    assert result.returncode == 0 and findings == "", findings
    assert b"herdlab_" in exposition


def test_services_metrics_pass_promtool(stack_info: StackInfo) -> None:
    # Traffic first, so labelled series (sources, outcomes, policies) are present when checked.
    herd = HerdConfig(
        target=stack_info.services["cache"].grpc,
        users=50,
        keys=5,
        distribution="uniform",
        policy=RetryPolicy(name="none", max_total_s=10, attempt_timeout_s=10),
    )
    result = asyncio.run(run_herd(herd))
    assert result.summary()["ok"] == 50
    for service in ("db", "cache"):
        _check(stack_info.services[service].metrics)


def test_herd_metrics_pass_promtool(stack_info: StackInfo) -> None:
    registry = CollectorRegistry()
    metrics = HerdMetrics(registry)
    port = free_port()
    serve_metrics(registry, "127.0.0.1", port)
    herd = HerdConfig(
        target=stack_info.services["cache"].grpc,
        users=20,
        policy=RetryPolicy(name="none", max_total_s=10, attempt_timeout_s=10),
    )
    asyncio.run(run_herd(herd, HerdHooks(metrics=metrics)))
    _check(f"http://127.0.0.1:{port}/metrics")


def _at_zero(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> bool:
    return samples.get((name, tuple(sorted(labels.items())))) == 0


def _common(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> None:
    names = {name for name, _ in samples}
    assert {"process_cpu_seconds_total", "process_start_time_seconds", "python_info"} <= names
    build = [labels for name, labels in samples if name == "herdlab_build_info"]
    assert len(build) == 1 and {k for k, _ in build[0]} == {
        "version",
        "grpcio",
        "protobuf",
        "python",
    }


def test_fresh_services_show_every_outcome_at_zero(tmp_path: Path) -> None:
    with running_stack(tmp_path, (), ("--policy=full",)) as (_, info):
        for service in ("db", "cache"):
            _check(info.services[service].metrics)
        db = scrape(info.services["db"].metrics)
        cache = scrape(info.services["cache"].metrics)
    for outcome in DB_OUTCOMES:
        assert _at_zero(db, "herdlab_db_requests_total", outcome=outcome), outcome
    for stage in DROP_STAGES:
        assert _at_zero(db, "herdlab_db_dropped_total", stage=stage), stage
    for source, result in SOURCE_RESULTS:
        assert _at_zero(cache, "herdlab_cache_requests_total", source=source, result=result)
    for source in LATENCY_SOURCES:
        assert _at_zero(cache, "herdlab_cache_request_latency_seconds_count", source=source)
    for outcome in ATTEMPT_OUTCOMES:
        assert _at_zero(cache, "herdlab_cache_db_attempts_total", policy="full", outcome=outcome)
    assert _at_zero(cache, "herdlab_cache_retry_sleep_seconds_count", policy="full")
    for samples in (db, cache):
        _common(samples)
        for verb in VERBS:
            for target in TARGETS:
                assert _at_zero(samples, "herdlab_chaos_actions_total", verb=verb, target=target)


def test_fresh_herd_shows_every_result_at_zero() -> None:
    registry = CollectorRegistry()
    HerdMetrics(registry)
    port = free_port()
    serve_metrics(registry, "127.0.0.1", port)
    url = f"http://127.0.0.1:{port}/metrics"
    _check(url)
    samples = scrape(url)
    for result in HERD_RESULTS:
        assert _at_zero(samples, "herdlab_herd_requests_total", result=result), result
    _common(samples)


def test_recording_and_alerting_rules_pass_their_unit_tests() -> None:
    rules = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"
    for args in (["check", "rules", "rules.yml"], ["test", "rules", "rules_test.yml"]):
        result = subprocess.run(
            [_promtool(), *args], cwd=rules, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stdout + result.stderr
