"""The stale outage: warm keys through a DB outage, with and without stale-if-error (the shipped
experiment is the folder's `experiment.toml`; this module is its kind and its typed
configuration).

An open loop asks for K warm keys at a steady rate; after `before_s` the DB is killed for
`outage_s`, then restored. The TTL is shorter than the outage, so keys expire while the DB is
down. Without stale-if-error a request for an expired key gets the failed fetch's error (the
value the cache still had is not used); with it, the cache serves that value as STALE while it
expired less than the bound ago. The cache's fetch gives up after 300 ms (a refused connection
fails at once), well inside the users' 2 s deadline, so the stale value reaches them in time.

Measures, from what the users got (`chaos/engine/measures/stale.py`): `availability` (share of
requests answered with a value, fresh or stale), `stale_served`, `max_stale_age_s` (each STALE
answer carries its age) and `stale_age_within_bound`, the errors by code, `lost`; `answers`
per 100 ms for the plot.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from cache_service import freshness
from chaos.engine.bounds import out_of_range
from chaos.engine.kinds import Column, Kind, Plot, Row, fault_window, from_options
from chaos.engine.model import Experiment
from chaos.engine.registry import KINDS
from chaos.scenarios.narration import warm_load
from chaos.scenarios.stale_outage.plot import plot_stale_outage
from herdlab.config import format_duration

SCENARIO = "stale-outage"
MAX_KEYS = 10_000
MAX_RATE_PER_S = 2_000.0


@dataclass(frozen=True)
class StaleOutageConfig:
    """The scenario's knobs, each bounded (`problems()`): 50 keys at 200/s, a 2 s TTL, a 10 s
    outage 3 s in, 7 s after it, stale-if-error 30 s (longer than the outage and the TTL)."""

    keys: int = 50
    rate_per_s: float = 200.0
    ttl_s: float = 2.0
    outage_s: float = 10.0
    stale_if_error_s: float = 30.0
    before_s: float = 3.0
    after_s: float = 7.0
    seed: int = 42

    def problems(self) -> list[str]:
        return [
            *out_of_range("keys", self.keys, f"1..{MAX_KEYS}"),
            *out_of_range("rate", self.rate_per_s, f"(0, {MAX_RATE_PER_S:g}]/s"),
            *out_of_range("ttl", self.ttl_s, "[100ms, 10m]"),
            *out_of_range("outage", self.outage_s, "[100ms, 10m]"),
            *out_of_range(
                "stale-if-error", self.stale_if_error_s, f"(0, {freshness.MAX_STALE_S:g}s]"
            ),
            *out_of_range("time before the outage", self.before_s, "[1s, 60s]"),
            *out_of_range("time after the outage", self.after_s, "[1s, 10m]"),
        ]

    def command(self) -> str:
        return (
            f"chaos scenario stale-outage --keys {self.keys} --rate {self.rate_per_s:g} "
            f"--ttl {self.ttl_s:g}s --outage {self.outage_s:g}s "
            f"--stale-if-error {self.stale_if_error_s:g}s --seed {self.seed}"
        )

    def params(self) -> dict[str, Any]:
        return {
            "keys": self.keys,
            "rate": self.rate_per_s,
            "ttl": format_duration(self.ttl_s),
            "before": format_duration(self.before_s),
            "outage": format_duration(self.outage_s),
            "duration": format_duration(self.before_s + self.outage_s + self.after_s),
            "stale_if_error": format_duration(self.stale_if_error_s),
            "seed": self.seed,
        }


def _config(experiment: Experiment) -> dict[str, Any]:
    herd, cache = experiment.herd, experiment.cache
    outage_at_s, outage_s = fault_window(experiment)
    return {
        "keys": herd.keys,
        "rate_per_s": herd.rate_per_s,
        "duration_s": herd.duration_s,
        "ttl_s": cache.ttl_s,
        "outage_at_s": outage_at_s,
        "outage_s": outage_s,
        "herd_deadline_s": herd.deadline_s,
        "fetch_budget_s": cache.retry_total_s,
    }


def _stale_if_error(seconds: float) -> str:
    return f"stale-if-error {f'{seconds:g}s' if seconds else 'off'}"


def _describe(row: Row) -> list[str]:
    return [
        f"  {_stale_if_error(row['stale_if_error_s'])}: availability "
        f"{row['availability']}, {row['stale_served']:,} stale (oldest "
        f"{row['max_stale_age_s']:g}s), errors {row['errors'] or 'none'}, lost {row['lost']}"
    ]


def _announce(experiment: Experiment, variant: Mapping[str, Any]) -> str:
    _, cache, herd = experiment.settings_for(variant)
    return f"Stale outage: {_stale_if_error(cache.stale_if_error_s)} ({warm_load(cache, herd)})"


COLUMNS = (
    Column("stale_if_error_s", format="num1"),
    Column("availability", format="num4"),
    Column("stale_served"),
    Column("max_stale_age_s", format="num3"),
    Column("stale_age_within_bound", format="bool"),
    Column("requests"),
    Column("errors", format="counts"),
    Column("lost"),
)
READING = (
    "Each row runs on its own fresh stack, 100 ms per bar: fresh values (blue), stale "
    "values (yellow), errors (red), the DB's outage shaded. Keys expire during the outage "
    "(the TTL is shorter): without stale-if-error their requests fail until the DB is back "
    "and reconnected; with it the cache answers them with the value it kept, as STALE with "
    "its age, never past the bound."
)


KIND = KINDS.register(
    SCENARIO,
    Kind(
        SCENARIO,
        fields=(
            "stale_if_error_s",
            "availability",
            "stale_served",
            "max_stale_age_s",
            "stale_age_within_bound",
            "errors",
            "lost",
            "requests",
            "sources",
            "latency_s",
            "answers",
            "reconnect_lag_s",
        ),
        config=_config,
        announce=_announce,
        describe=_describe,
        title="Stale outage: warm keys through a DB outage, with and without stale-if-error",
        columns=COLUMNS,
        plots=(Plot(plot_stale_outage, "Fresh, stale and failed answers per 100 ms"),),
        reading=READING,
        configure=partial(from_options, StaleOutageConfig),
    ),
)
