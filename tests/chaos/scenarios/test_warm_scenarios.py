"""The warm-key scenarios' typed configurations map onto their shipped files (every row and
tolerance checked by the experiment parser), refuse bad values before anything starts, and the
CLI says so in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from chaos.engine import spec
from chaos.engine.shipped import path_of
from chaos.scenarios.expiry_herd import KIND as EXPIRY_HERD
from chaos.scenarios.expiry_herd import ExpiryHerdConfig
from chaos.scenarios.stale_outage import KIND as STALE_OUTAGE
from chaos.scenarios.stale_outage import StaleOutageConfig


def test_expiry_herd_config_runs_one_row_per_policy_on_the_shipped_file() -> None:
    config = ExpiryHerdConfig(keys=40, rate_per_s=200, ttl_s=12, db_latency_s=1, swr_s=2)
    experiment = spec.load(path_of("expiry-herd"), config.params())
    names = [experiment.settings_for(v)[1].freshness().name for v in experiment.combinations()]
    assert names == ["ttl", "jitter", "xfetch", "swr"]
    _, cache, herd = experiment.settings_for(experiment.combinations()[3])
    assert (cache.stale_while_revalidate_s, cache.ttl_s, herd.keys) == (2.0, 12.0, 40)
    assert herd.duration_s == 12 + 1 + 3, "past the TTL by the recompute time and a margin"
    assert experiment.setup[0].do == "warm"


def test_stale_outage_config_sweeps_its_bound_against_none() -> None:
    config = StaleOutageConfig(outage_s=4, stale_if_error_s=12, before_s=2, after_s=3)
    experiment = spec.load(path_of("stale-outage"), config.params())
    bounds = [experiment.settings_for(v)[1].stale_if_error_s for v in experiment.combinations()]
    assert bounds == [0.0, 12.0]
    assert [s.do for s in experiment.timeline] == ["kill db", "restore db"]
    assert (experiment.timeline[0].at_s, experiment.timeline[1].after_s) == (2.0, 4.0)
    assert experiment.herd.duration_s == 9.0


def test_the_smoke_sizes_load_with_their_hypotheses() -> None:
    for name in ("expiry-herd", "stale-outage"):
        experiment = spec.load(path_of(name))
        smoke = spec.load(path_of(name), experiment.smoke)
        assert smoke.expect, name


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        (ExpiryHerdConfig(jitter_pct=95), "jitter must be in (0, 90]%"),
        (ExpiryHerdConfig(beta=0), "beta must be in (0, 100]"),
        (ExpiryHerdConfig(keys=0), "keys must be in 1..10000"),
        (StaleOutageConfig(stale_if_error_s=0), "stale-if-error must be in (0, 86400s]"),
        (StaleOutageConfig(outage_s=0.01), "outage must be in [100ms, 10m]"),
    ],
)
def test_bad_configurations_are_named(
    config: ExpiryHerdConfig | StaleOutageConfig, needle: str
) -> None:
    assert any(needle in p for p in config.problems()), config.problems()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["expiry-herd", "--jitter", "95"], "jitter must be in (0, 90]%"),
        (["stale-outage", "--outage", "soon"], "--outage"),
    ],
)
def test_scenario_bad_input_exits_2_with_one_line(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "chaos", "scenario", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "HERDLAB_STATE_DIR": str(tmp_path)},
    )
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("chaos: error: "), result.stderr
    assert needle in lines[0]


def test_the_warm_scenarios_announce_their_policy_and_the_same_load() -> None:
    lines = []
    for kind in (EXPIRY_HERD, STALE_OUTAGE):
        experiment = spec.load(path_of(kind.name))
        lines += [kind.announce(experiment, v) for v in experiment.combinations()[:2]]
    assert lines == [
        "Expiry herd: ttl (100 warm keys, TTL 40s, 500 arrivals/s)",
        "Expiry herd: jitter (100 warm keys, TTL 40s, 500 arrivals/s)",
        "Stale outage: stale-if-error off (50 warm keys, TTL 2s, 200 arrivals/s)",
        "Stale outage: stale-if-error 30s (50 warm keys, TTL 2s, 200 arrivals/s)",
    ]


def test_the_stale_outage_document_says_when_the_outage_began_and_how_long_it_held() -> None:
    config = StaleOutageConfig(outage_s=4, before_s=2, after_s=3)
    experiment = spec.load(path_of("stale-outage"), config.params())
    header = STALE_OUTAGE.header(experiment)
    assert (header["config"]["outage_at_s"], header["config"]["outage_s"]) == (2.0, 4.0)
