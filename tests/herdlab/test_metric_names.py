"""Every lab metric that the deploy/ files (the Grafana dashboards' and Prometheus rules'
expressions, the rules tests' series) and the CI's stack checks name is one the lab exports:
a sample name of a constant of `herdlab.metrics`, or a series a recording rule of rules.yml
records. A dashboard or rule naming a metric no service exports fails here, not on a live stack.
The constants' kinds (and so their sample names) are those of the metrics the services create.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Info

from cache_service.dbclient import DbClient
from cache_service.server import CacheMetrics
from chaos.engine.herd import HerdMetrics
from db_service.server import DbMetrics
from herdlab.chaoslog import ChaosActions
from herdlab.grpcutil import ServerCalls, ServerConnections
from herdlab.guards import parse_guard_set
from herdlab.lease import LeaseMetrics
from herdlab.metrics import BUILD, KINDS, sample, samples
from herdlab.retry import RetryPolicy

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "rules.yml"
# A PromQL metric name (recording rules' names have colons) that is the lab's.
LAB_NAME = re.compile(r"(?<![A-Za-z0-9_:])[a-z_:]*herdlab_[a-z0-9_:]*[a-z0-9_]")
RECORD = re.compile(r"^\s*- record:\s*(\S+)\s*$", re.M)


def _exprs(node: Any) -> Iterator[str]:
    """Every `expr` of a dashboard: its panels' targets and its annotations."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from _exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _exprs(item)


def _uncommented(path: Path) -> str:
    """A YAML or Python file's text without its comments (they may name what was)."""
    return "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())


def _named() -> Iterator[tuple[str, str]]:
    """(file, name) for every lab metric name the deploy files use."""
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        for expr in _exprs(json.loads(path.read_text())):
            for name in LAB_NAME.findall(expr):
                yield path.name, name
    for path in sorted(DEPLOY.rglob("*.yml")):
        for name in LAB_NAME.findall(_uncommented(path)):
            yield path.name, name


def _known() -> set[str]:
    """The sample names of the lab's metrics and the series its recording rules record."""
    exported = {name for metric in KINDS for name in samples(metric)}
    return exported | set(RECORD.findall(RULES.read_text()))


def test_every_named_metric_is_exported_or_recorded() -> None:
    known = _known()
    named = list(_named())
    assert named, "no lab metric found in deploy/: the pattern or the paths are wrong"
    unknown = sorted({f"{file}: {name}" for file, name in named if name not in known})
    assert not unknown, f"metrics no service exports and no rule records: {unknown}"


def test_the_stack_checks_name_exported_or_recorded_metrics() -> None:
    """.ci/docker_stack_checks.py runs on the standard library alone, so it spells names out;
    each is a known name or, where it matches series by prefix, the start of one."""
    known = _known()
    named = LAB_NAME.findall(_uncommented(ROOT / ".ci" / "docker_stack_checks.py"))
    assert named
    unknown = [name for name in named if not any(k.startswith(name) for k in known)]
    assert not unknown, f"metrics no service exports and no rule records: {unknown}"


async def _families() -> dict[str, str]:
    """{name: kind} of every metric the services, the herd and the build info create (the
    cache's and the herd's guards on registries of their own, as in their processes)."""
    cache, herd = CollectorRegistry(), CollectorRegistry()
    DbMetrics(cache, lambda: 0.0)
    CacheMetrics(cache)
    LeaseMetrics(cache)
    ChaosActions(cache)
    ServerCalls(cache)
    ServerConnections(cache)
    Info(BUILD, "Versions.", registry=cache)
    guards = parse_guard_set("breaker")
    client = DbClient("127.0.0.1:1", RetryPolicy(name="none"), cache, guards=guards)
    HerdMetrics(herd)
    try:
        return {f.name: f.type for registry in (cache, herd) for f in registry.collect()}
    finally:
        await client.close()


def test_the_constants_kinds_are_the_created_metrics_kinds() -> None:
    assert asyncio.run(_families()) == KINDS


@pytest.mark.parametrize(
    ("metric", "suffix", "expected"),
    [
        ("herdlab_db_arrivals", "", "herdlab_db_arrivals_total"),
        ("herdlab_db_queue_depth", "", "herdlab_db_queue_depth"),
        ("herdlab_db_latency_seconds", "", "herdlab_db_latency_seconds_bucket"),
        ("herdlab_db_latency_seconds", "_count", "herdlab_db_latency_seconds_count"),
        ("herdlab_db_queue_discipline", "", "herdlab_db_queue_discipline_info"),
    ],
)
def test_sample_names_as_prometheus_client_exposes_them(
    metric: str, suffix: str, expected: str
) -> None:
    assert sample(metric, suffix) == expected


def test_a_suffix_the_kind_has_not_is_refused() -> None:
    with pytest.raises(ValueError, match="no _sum samples"):
        sample("herdlab_db_arrivals", "_sum")
