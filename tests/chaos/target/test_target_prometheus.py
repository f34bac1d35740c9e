"""A `[target]` file's PromQL measures read from a real Prometheus (Debian's binary) scraping the
test service's own metrics: what the service counted over the run's window agrees with what the
herd's own record says it was answered."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from slow_target import slow_service

from chaos.lab.ports import free_port

RATE = 100  # the herd's open loop: requests a second
DURATION_S = 4
WAIT_S = 30.0
CONFIG = """
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: labtest
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""

FILE = """
title = "PromQL against the target's own metrics"
measures = ["ok", "lost", "served", "served_per_s"]
[target]
upstream = "{upstream}"
method = "labtest.v1.Slow/Work"
data = '{{"key": "{{{{key}}}}"}}'
prometheus = "{prometheus}"
[herd]
rate = {rate}
duration = "{duration}s"
[end]
limit = "60s"
[[measure]]
name = "served"
query = "sum(labtest_work_total)"
over = "max"
[[measure]]
name = "served_per_s"
query = "sum(rate(labtest_work_total[3s]))"
over = "max"
"""


def _need_prometheus() -> str:
    found = shutil.which("prometheus")
    if found is None:
        # CI installs Debian's prometheus (promtool's package): fail there rather than skip.
        if os.environ.get("CI") or os.environ.get("HERDLAB_REQUIRE_PROMTOOL"):
            pytest.fail("prometheus not found (apt-get install prometheus)")
        pytest.skip("prometheus not installed (apt-get install prometheus)")
    return found


def _scraped(url: str) -> bool:
    """Whether the Prometheus at `url` holds the service's counter (scraped once at least)."""
    try:
        with urllib.request.urlopen(f"{url}/api/v1/query?query=labtest_work_total", timeout=2) as a:
            return bool(json.load(a)["data"]["result"])
    except OSError:
        return False


@pytest.fixture
def scraping(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The test service with its metrics, and a Prometheus scraping them every second: (the
    service's address, Prometheus's URL) once Prometheus has scraped it."""
    executable = _need_prometheus()
    metrics = free_port()
    args = ("--capacity", "20", "--latency", "0.02", "--metrics-port", str(metrics))
    with slow_service(*args) as up:
        config = tmp_path / "prometheus.yml"
        config.write_text(CONFIG.format(port=metrics))
        listen = f"127.0.0.1:{free_port()}"
        proc = subprocess.Popen(
            [
                executable,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address={listen}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://{listen}"
            deadline = time.monotonic() + WAIT_S
            while not _scraped(url):
                assert proc.poll() is None, "prometheus exited"
                assert time.monotonic() < deadline, f"not scraped within {WAIT_S:g}s"
                time.sleep(0.1)
            yield up, url
        finally:
            proc.terminate()
            proc.wait(30)


def test_promql_measures_agree_with_the_herds_record(
    scraping: tuple[str, str], tmp_path: Path
) -> None:
    upstream, prometheus = scraping
    path = tmp_path / "prom.toml"
    path.write_text(
        FILE.format(upstream=upstream, prometheus=prometheus, rate=RATE, duration=DURATION_S)
    )
    out = tmp_path / "doc.json"
    done = subprocess.run(
        [sys.executable, "-m", "chaos", "run", str(path), "--json", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "HERDLAB_STATE_DIR": str(tmp_path)},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(out.read_text())["rows"]
    ok = row["ok"]
    assert (ok, row["lost"]) == (RATE * DURATION_S, 0)
    # The counter's last scrape in the window: every call the herd saw answered, less at most
    # what the service answered since that scrape (1 s apart; 2 s of slack for a busy machine).
    assert ok - 3 * RATE <= row["served"] <= ok, row
    # Its busiest 3 s rate: the herd's own fixed rate, within a scrape's jitter.
    assert 0.6 * RATE <= row["served_per_s"] <= 1.4 * RATE, row
