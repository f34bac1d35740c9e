"""What freshness policy a row ran with: `freshness` (`ttl`, `jitter`, `xfetch`, `swr`, `sie`,
joined by `+` when several are on) and `stale_if_error_s` (0 when off), read from the row's
cache settings, so a table names its rows by what they did."""

from __future__ import annotations

from chaos.engine.measures.base import measure
from chaos.engine.observations import Observations


@measure("freshness")
def freshness(obs: Observations) -> str:
    return obs.cache.freshness().name


@measure("stale_if_error_s")
def stale_if_error_s(obs: Observations) -> float:
    return obs.cache.stale_if_error_s
