"""The expiry herd: warm keys written together expire together (the shipped experiment
is the folder's `experiment.toml`; this module is its kind and its typed configuration).

K keys are warmed at one moment with one TTL; an open loop asks for them in turn (round-robin,
each key every K / rate seconds) for a little longer than the TTL, so every query the DB gets is
a refresh. One row per freshness policy, each on a fresh stack:

- `ttl`: every key expires at once; the first request for each key after the expiry fetches
  it, so all K refreshes arrive within one cycle of the loop (K / rate seconds);
- `jitter`: each TTL shortened by up to p% (uniform), so the expiries spread over p% of the TTL;
- `xfetch`: a read draws an early refresh with probability exp(-x / (delta x beta)) at x
  seconds before the expiry, delta the last recompute time: the refreshes spread over a few
  delta before the expiry (the longer the recompute, the wider), while the old value is served;
- `swr`: the expired value is served while one background refresh runs. The DB sees the same
  herd as `ttl` (one refresh per key at its first read after the expiry): it hides the fetch's
  latency from users, not the herd from the DB.

Measures (one file each under `chaos/engine/measures/`): `expiry_peak_per_100ms` (the DB's
arrival record, `chaos.engine.timeline`'s bins), `max_concurrent_db_queries_per_key` (the DB's exact
per-key count), `db_queries`, `lost`; `timeline` for the plot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from cache_service import freshness
from chaos.engine.bounds import out_of_range
from chaos.engine.kinds import Column, Kind, Plot, Row, from_options
from chaos.engine.model import Experiment
from chaos.engine.registry import KINDS
from chaos.scenarios.expiry_herd.plot import plot_expiry_herd
from chaos.scenarios.narration import warm_load
from herdlab.config import format_duration

SCENARIO = "expiry-herd"
MAX_KEYS = 10_000
MAX_RATE_PER_S = 5_000.0
# The policies a row may run, as the settings that turn each on alone.
POLICIES = ("ttl", "jitter", "xfetch", "swr")


@dataclass(frozen=True)
class ExpiryHerdConfig:
    """The scenario's knobs, each bounded (`problems()`). Defaults tuned on 2 cores: 100 keys
    asked in turn at 500/s (each every 200 ms), a 40 s TTL, a 4 s recompute time. XFetch's
    refreshes spread over a few recompute times (its density peaks at 1 / (e x delta x beta)
    per second), so a longer recompute keeps them apart even when a loaded machine stalls a
    process and a burst of reads draws at once; the TTL must be several of it."""

    keys: int = 100
    rate_per_s: float = 500.0
    ttl_s: float = 40.0
    db_latency_s: float = 4.0
    jitter_pct: float = 20.0
    beta: float = 1.0
    swr_s: float = 5.0
    seed: int = 42

    def problems(self) -> list[str]:
        return [
            *out_of_range("keys", self.keys, f"1..{MAX_KEYS}"),
            *out_of_range("rate", self.rate_per_s, f"(0, {MAX_RATE_PER_S:g}]/s"),
            *out_of_range("ttl", self.ttl_s, "[1s, 10m]"),
            *out_of_range("db latency", self.db_latency_s, "[10ms, 30s]"),
            *out_of_range("jitter", self.jitter_pct, f"(0, {freshness.MAX_JITTER_PCT:g}]%"),
            *out_of_range("beta", self.beta, f"(0, {freshness.MAX_BETA:g}]"),
            *out_of_range("stale-while-revalidate", self.swr_s, "(0, 10m]"),
        ]

    def command(self) -> str:
        return (
            f"chaos scenario expiry-herd --keys {self.keys} --rate {self.rate_per_s:g} "
            f"--ttl {self.ttl_s:g}s --db-latency {self.db_latency_s:g}s "
            f"--jitter {self.jitter_pct:g} --beta {self.beta:g} --swr {self.swr_s:g}s "
            f"--seed {self.seed}"
        )

    def configurations(self) -> list[dict[str, Any]]:
        """One row per policy, each naming the same three settings."""
        off = {"cache.ttl_jitter": 0, "cache.beta": 0, "cache.stale_while_revalidate": "0ms"}
        return [
            off,
            {**off, "cache.ttl_jitter": self.jitter_pct},
            {**off, "cache.beta": self.beta},
            {**off, "cache.stale_while_revalidate": format_duration(self.swr_s)},
        ]

    def params(self) -> dict[str, Any]:
        # Past the TTL by the recompute time and a margin: the expiry's refreshes end in the run.
        duration = self.ttl_s + self.db_latency_s + 3.0
        return {
            "configurations": self.configurations(),
            "keys": self.keys,
            "rate": self.rate_per_s,
            "ttl": format_duration(self.ttl_s),
            "duration": format_duration(duration),
            "db_latency": format_duration(self.db_latency_s),
            "seed": self.seed,
        }


def _config(experiment: Experiment) -> dict[str, Any]:
    herd, cache, db = experiment.herd, experiment.cache, experiment.db
    return {
        "keys": herd.keys,
        "rate_per_s": herd.rate_per_s,
        "duration_s": herd.duration_s,
        "ttl_s": cache.ttl_s,
        "db_latency_s": db.latency_s,
        "coalescing": cache.coalescing,
    }


def _describe(row: Row) -> list[str]:
    return [
        f"  {row['freshness']}: DB peak {row['expiry_peak_per_100ms']} per 100 ms, at most "
        f"{row['max_concurrent_db_queries_per_key']} queries per key at once, "
        f"{row['db_queries']:,} DB queries, lost {row['lost']}"
    ]


def _announce(experiment: Experiment, variant: Mapping[str, Any]) -> str:
    _, cache, herd = experiment.settings_for(variant)
    return f"Expiry herd: {cache.freshness().name} ({warm_load(cache, herd)})"


def _peak_of_ttl(row: Row, rows: Sequence[Row]) -> float | None:
    """The row's expiry peak over the plain TTL row's."""
    base = next((r for r in rows if r["freshness"] == "ttl"), None)
    if not base or not base["expiry_peak_per_100ms"]:
        return None
    peak: float = row["expiry_peak_per_100ms"] / base["expiry_peak_per_100ms"]
    return peak


COLUMNS = (
    Column("freshness", format="text"),
    Column("expiry_peak_per_100ms"),
    Column("peak_of_ttl", format="num3", value=_peak_of_ttl),
    Column("max_concurrent_db_queries_per_key"),
    Column("db_queries"),
    Column("sources.STALE", "stale", default=0),
    Column("latency_s.p99", "latency_p99_s", "num3"),
    Column("errors", format="sum"),
    Column("lost"),
)
READING = (
    "Each row is one freshness policy on its own fresh stack, 100 ms per bar. The "
    "keys were warmed at one moment, so after the release every query that reaches the DB "
    "is a refresh. Plain TTL: one wall of refreshes at the common expiry, as fast as the "
    "load reaches the keys. Jitter spreads the wall over its share of the TTL. XFetch "
    "refreshes each key at a random moment a few recompute times before its expiry (the "
    "users keep getting HITs meanwhile). Stale-while-revalidate meets the same wall as TTL "
    "but users get the old value at once instead of waiting for the fetch (`stale`, p99). "
    "`max_concurrent_db_queries_per_key` is the DB's exact count: single-flight keeps it at "
    "1 in one process."
)


KIND = KINDS.register(
    SCENARIO,
    Kind(
        SCENARIO,
        fields=(
            "freshness",
            "expiry_peak_per_100ms",
            "max_concurrent_db_queries_per_key",
            "db_queries",
            "lost",
            "errors",
            "sources",
            "latency_s",
            "timeline",
        ),
        config=_config,
        announce=_announce,
        describe=_describe,
        title="Expiry herd: warm keys written together, refreshed by TTL, jitter, XFetch or SWR",
        columns=COLUMNS,
        plots=(Plot(plot_expiry_herd, "DB arrivals per 100 ms, per freshness policy"),),
        reading=READING,
        configure=partial(from_options, ExpiryHerdConfig),
    ),
)
