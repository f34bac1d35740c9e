"""The Kubernetes base (deploy/k8s), checked without a cluster: every manifest, and every
ConfigMap its kustomization generates, against the Kubernetes schemas in strict mode (unknown
fields refused; the schemas ship inside kubernetes-validate, so no network); the settings the
manifests give the lab's programs (flags and environment variables) against the programs' own
click declarations, the same that `--help` prints, each literal value converted by its option's
type; the kustomization's files, labels, selectors and ports agreeing with each other; and
Prometheus' configuration by promtool, with the lab's rules a faithful copy.

What cannot be checked here: that a cluster schedules, pulls and runs it (README, "The stack on
Kubernetes")."""

from __future__ import annotations

import copy
import functools
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import kubernetes_validate
import pytest
import yaml

from cache_service.__main__ import main as cache_main
from chaos.cli.main import cli
from db_service.__main__ import main as db_main

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "k8s"
# The Kubernetes release the manifests are checked against (kubernetes-validate's bundled schemas).
KUBERNETES = "1.33"

herd_command = cli.commands["herd"]
# The lab's programs a container may run, by its command: the options they declare.
PROGRAMS: dict[tuple[str, ...], click.Command] = {
    ("db-service",): db_main,
    ("cache-service",): cache_main,
}
# A Locust container runs the herd: the lab's settings it is given are `chaos herd`'s.
LOCUST = ("locust",)


def kustomization() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    return doc


@functools.cache
def resources() -> list[dict[str, Any]]:
    """Every resource the base lists, in order, then the ConfigMaps it generates (read once;
    not to be changed by a test)."""
    docs: list[dict[str, Any]] = []
    kust = kustomization()
    for name in kust["resources"]:
        docs += [doc for doc in yaml.safe_load_all((BASE / name).read_text()) if doc]
    for generator in kust.get("configMapGenerator", []):
        data = {Path(f).name: (BASE / f).read_text() for f in generator["files"]}
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": generator["name"]},
                "data": data,
            }
        )
    return docs


def named(kind: str, name: str) -> dict[str, Any]:
    return next(d for d in resources() if d["kind"] == kind and d["metadata"]["name"] == name)


def workloads() -> Iterator[dict[str, Any]]:
    yield from (d for d in resources() if d["kind"] in ("Deployment", "StatefulSet"))


def containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for workload in workloads():
        for container in workload["spec"]["template"]["spec"]["containers"]:
            yield f"{workload['metadata']['name']}/{container['name']}", container


def test_every_file_of_the_base_is_used_and_every_file_it_names_exists() -> None:
    kust = kustomization()
    named_files = set(kust["resources"]) | {
        f for g in kust.get("configMapGenerator", []) for f in g["files"]
    }
    on_disk = {
        str(p.relative_to(BASE))
        for p in BASE.rglob("*")
        if p.is_file() and p.name != "kustomization.yaml"
    }
    assert named_files == on_disk


@pytest.mark.parametrize("doc", resources(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_each_resource_is_valid_against_the_kubernetes_schema_strictly(
    doc: dict[str, Any],
) -> None:
    kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_strict_validation_refuses_a_field_kubernetes_does_not_know() -> None:
    """The check above would pass anything if strict mode or the schemas were not in force."""
    doc = copy.deepcopy(named("Deployment", "cache"))
    doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpcPort"] = 50052
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def _params(
    command: click.Command,
) -> tuple[dict[str, click.Parameter], dict[str, click.Parameter]]:
    """A command's options by flag (`--ttl`, `--no-coalescing`) and by environment variable."""
    by_flag: dict[str, click.Parameter] = {}
    by_env: dict[str, click.Parameter] = {}
    for param in command.params:
        for flag in [*param.opts, *param.secondary_opts]:
            by_flag[flag] = param
        envvar = getattr(param, "envvar", None)
        for name in [envvar] if isinstance(envvar, str) else envvar or []:
            by_env[name] = param
    return by_flag, by_env


def _convert(command: click.Command, param: click.Parameter, value: str) -> None:
    """Raises click.BadParameter when `value` is not one `param` takes."""
    with click.Context(command) as ctx:
        param.type_cast_value(ctx, value)


def _environment(container: dict[str, Any]) -> dict[str, str | None]:
    """The container's environment: literal values, and None for those read from elsewhere
    (a Secret, the pod's fields); ConfigMaps of the base included."""
    env: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        env.update(named("ConfigMap", source["configMapRef"]["name"])["data"])
    for var in container.get("env", []):
        env[var["name"]] = var.get("value")
    return env


def _program(container: dict[str, Any]) -> tuple[str, click.Command, list[str]] | None:
    """The lab's program a container runs (its name and options) and the arguments it is given;
    None: not the lab's."""
    command = [*container.get("command", []), *container.get("args", [])]
    for prefix, program in PROGRAMS.items():
        if tuple(command[: len(prefix)]) == prefix:
            return " ".join(prefix), program, command[len(prefix) :]
    if tuple(command[: len(LOCUST)]) == LOCUST:
        return "chaos herd", herd_command, []  # Locust's own flags are Locust's, not the lab's
    return None


def test_every_setting_given_to_the_labs_programs_exists_and_takes_its_value() -> None:
    checked: set[str] = set()
    for where, container in containers():
        found = _program(container)
        if found is None:
            continue
        label, program, args = found
        by_flag, by_env = _params(program)
        for arg in args:
            flag, _, value = arg.partition("=")
            assert flag in by_flag, f"{where}: {flag} is not an option of {label}"
            if value:
                _convert(program, by_flag[flag], value)
            checked.add(where)
        for name, setting in _environment(container).items():
            if not name.startswith("HERDLAB_"):
                continue  # LOCUST_*: Locust's own settings
            assert name in by_env, f"{where}: {name} is not a setting of {label}"
            if setting is not None:
                _convert(program, by_env[name], setting)
            checked.add(where)
    assert checked == {"db/db", "cache/cache", "locust-master/master", "locust-worker/worker"}


def test_a_misspelt_setting_would_be_caught() -> None:
    _, by_env = _params(cache_main)
    assert "HERDLAB_CACHE_MAX_CONNECTION_AGE" in by_env
    assert "HERDLAB_CACHE_MAX_CONN_AGE" not in by_env
    with pytest.raises(click.BadParameter):
        _convert(cache_main, by_env["HERDLAB_CACHE_MAX_CONNECTION_AGE"], "five minutes")


def test_selectors_labels_and_ports_agree() -> None:
    pods = {w["metadata"]["name"]: w["spec"]["template"]["metadata"]["labels"] for w in workloads()}
    for workload in workloads():
        selector = workload["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pods[workload["metadata"]["name"]].items()
    ports = {
        w["metadata"]["name"]: {
            p["name"]: p["containerPort"]
            for c in w["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports", [])
        }
        for w in workloads()
    }
    for service in (d for d in resources() if d["kind"] == "Service"):
        selected = [
            n for n, labels in pods.items() if service["spec"]["selector"].items() <= labels.items()
        ]
        assert len(selected) == 1, service["metadata"]["name"]
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports[selected[0]], (service["metadata"]["name"], port)
    budget = named("PodDisruptionBudget", "cache")["spec"]["selector"]["matchLabels"]
    assert budget.items() <= pods["cache"].items()


def test_the_cache_is_balanced_per_pod_and_ages_its_connections() -> None:
    assert named("Service", "cache")["spec"]["clusterIP"] == "None"  # headless: a pod per address
    target = named("ConfigMap", "locust")["data"]["HERDLAB_CACHE_TARGET"]
    assert target.startswith("dns:///cache:")
    cache = next(c for w, c in containers() if w == "cache/cache")
    env = _environment(cache)
    assert env["HERDLAB_CACHE_MAX_CONNECTION_AGE"] and env["HERDLAB_CACHE_MAX_CONNECTION_AGE_GRACE"]


def test_every_lab_server_has_a_grpc_readiness_probe_and_every_container_requests() -> None:
    for where, container in containers():
        assert container["resources"]["requests"].keys() >= {"cpu", "memory"}, where
        found = _program(container)
        if found is not None and found[1] is not herd_command:
            grpc_port = next(p for p in container["ports"] if p["name"] == "grpc")
            assert container["readinessProbe"]["grpc"]["port"] == grpc_port["containerPort"]


def test_the_rules_are_the_labs_rules() -> None:
    """kustomize reads no file outside the base, so the rules are a copy; this keeps it one:
    `cp deploy/prometheus/rules.yml deploy/k8s/prometheus/rules.yml` after changing them."""
    lab = (ROOT / "deploy" / "prometheus" / "rules.yml").read_text()
    assert (BASE / "prometheus" / "rules.yml").read_text() == lab


def test_prometheus_config_passes_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("HERDLAB_REQUIRE_PROMTOOL") == "1":
            pytest.fail("promtool not found (apt-get install prometheus)")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    result = subprocess.run(
        [promtool, "check", "config", str(BASE / "prometheus" / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
