"""Prometheus for the local stack, without Docker.

`chaos up` writes `<state_dir>/prometheus/targets.json`, a Prometheus `file_sd` target file with
every service's /metrics address, labelled as the compose stack's jobs are (`job="db"`,
`job="cache"`; cache replicas `cache-<n>` are `job="cache"` too, told apart by `service`), so
the lab's recording rules and Grafana dashboard read a local stack as they read the compose
one. Any Prometheus can scrape the local stack by pointing a `file_sd_configs` at that file;
`chaos down` removes it, so such a Prometheus drops the targets instead of scraping dead ports.

`chaos up --prometheus` starts the `prometheus` binary found on PATH (Debian's package) as a
helper of the local stack: a config generated beside the target file (the lab's
`deploy/prometheus/prometheus.yml` global settings, its scrape of itself, the lab's
`rules.yml`, and one file_sd job reading the target file), storage in
`<state_dir>/prometheus/data` kept for `RETENTION`, listening on 127.0.0.1 on a free port.

The generated config is written as JSON, which YAML parsers read as YAML: the lab has no YAML
library among its dependencies, and emitting JSON needs none. For the same reason the lab
config's `global:` block (flat `key: value` lines) is read by `lab_globals` rather than a parser.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from chaos.lab.backends.base import BackendError, ServiceInfo, role_of
from chaos.lab.ports import HOST, free_port

# How a stack starts a helper process beside its services (`LocalStack.start_helper`): name,
# argv, /metrics address, readiness check, timeout.
StartHelper = Callable[[str, list[str], str, Callable[[], bool], float], ServiceInfo]

NAME = "prometheus"
LAB_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RETENTION = "1d"
READY_TIMEOUT_S = 30.0
PROBE_TIMEOUT_S = 1.0
BIND_TRIES = 3
INSTALL_HINT = (
    "prometheus not found on PATH; install it (Debian/Ubuntu: apt-get install prometheus) "
    "or leave out --prometheus"
)


def prometheus_dir(state_dir: Path) -> Path:
    return state_dir / "prometheus"


def targets_path(state_dir: Path) -> Path:
    return prometheus_dir(state_dir) / "targets.json"


def target_groups(metrics_urls: Mapping[str, str]) -> list[dict[str, Any]]:
    """file_sd target groups for services {name: /metrics URL}; helpers (role `other`, e.g.
    Prometheus itself) are left out: Prometheus scrapes itself through its own job."""
    groups = []
    for name, url in sorted(metrics_urls.items()):
        role = role_of(name)
        if role == "other":
            continue
        parts = urlsplit(url)
        labels = {"job": role, "service": name}
        if parts.path and parts.path != "/metrics":
            labels["__metrics_path__"] = parts.path
        groups.append({"targets": [parts.netloc], "labels": labels})
    return groups


def write_targets(state_dir: Path, metrics_urls: Mapping[str, str]) -> Path:
    """Writes the target file atomically (Prometheus may read it at any moment)."""
    path = targets_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(target_groups(metrics_urls), indent=2) + "\n")
    tmp.replace(path)
    return path


def remove_targets(state_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        targets_path(state_dir).unlink()


def describe(state_dir: Path, services: Mapping[str, ServiceInfo]) -> dict[str, str | None] | None:
    """What `status --json` says of Prometheus: the target file, and the URL of the local
    Prometheus while it runs; None when no target file was written (no stack up)."""
    path = targets_path(state_dir)
    if not path.exists():
        return None
    helper = services.get(NAME)
    running = helper is not None and helper.state == "running"
    return {
        "targets_file": str(path),
        "url": base_url(helper.metrics) if helper is not None and running else None,
    }


def base_url(metrics_url: str) -> str:
    return metrics_url.removesuffix("/metrics")


def lab_globals(text: str) -> dict[str, str]:
    """The `global:` block of a Prometheus config (flat `key: value` lines under it)."""
    values: dict[str, str] = {}
    inside = False
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line.startswith(" "):
            inside = line.strip() == "global:"
            continue
        if inside and ":" in line:
            key, _, value = line.strip().partition(":")
            values[key.strip()] = value.split("#", 1)[0].strip()
    return values


def config(state_dir: Path, listen: str, lab_dir: Path = LAB_DIR) -> dict[str, Any]:
    """The local Prometheus's config: the lab's globals and rules, its targets from file_sd."""
    lab_config, rules = lab_dir / "prometheus.yml", lab_dir / "rules.yml"
    for needed in (lab_config, rules):
        if not needed.exists():
            raise BackendError(f"{needed} not found: --prometheus needs a herdlab source tree")
    return {
        "global": lab_globals(lab_config.read_text()),
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                "job_name": "herdlab",
                "file_sd_configs": [
                    {"files": [str(targets_path(state_dir))], "refresh_interval": "5s"}
                ],
            },
            {"job_name": NAME, "static_configs": [{"targets": [listen]}]},
        ],
    }


def binary() -> str:
    """The `prometheus` on PATH; its absence is a one-line error naming the package."""
    found = shutil.which(NAME)
    if found is None:
        raise BackendError(INSTALL_HINT)
    return found


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=PROBE_TIMEOUT_S) as response:
            status: int = response.status
            return status == 200
    except (OSError, urllib.error.URLError):
        return False


def start(
    state_dir: Path, start_helper: StartHelper, timeout_s: float = READY_TIMEOUT_S
) -> ServiceInfo:
    """Starts Prometheus for the stack in `state_dir` (which must be up), through the stack's
    `start_helper`, on a free 127.0.0.1 port; returns once it answers ready. A port taken
    between choosing and binding is chosen again (at most `BIND_TRIES` times)."""
    executable = binary()
    for _ in range(BIND_TRIES - 1):
        try:
            return _start_once(state_dir, start_helper, executable, timeout_s)
        except BackendError as exc:
            if "address already in use" not in str(exc).lower():
                raise
    return _start_once(state_dir, start_helper, executable, timeout_s)


def _start_once(
    state_dir: Path, start_helper: StartHelper, executable: str, timeout_s: float
) -> ServiceInfo:
    folder = prometheus_dir(state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    listen = f"{HOST}:{free_port()}"
    config_file = folder / "prometheus.yml"
    config_file.write_text(json.dumps(config(state_dir, listen), indent=2) + "\n")
    url = f"http://{listen}"
    argv = [
        executable,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--storage.tsdb.retention.time={RETENTION}",
        f"--web.listen-address={listen}",
    ]
    return start_helper(NAME, argv, f"{url}/metrics", lambda: _ready(url), timeout_s)
