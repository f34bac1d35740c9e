"""Every process's /metrics passes `promtool check metrics` (Debian's prometheus package) with
no finding: names, units, `_total` suffixes and help texts as Prometheus expects them."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from chaos.herd import HerdConfig, HerdHooks, HerdMetrics, run_herd
from chaos.stack import StackInfo, free_port
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
