"""What the warm-key scenarios (expiry herd, stale outage) say alike while they run: the load
their announcements end with."""

from __future__ import annotations

from cache_service.settings import CacheSettings
from chaos.engine.herd_settings import HerdSettings


def warm_load(cache: CacheSettings, herd: HerdSettings) -> str:
    """`100 warm keys, TTL 40s, 500 arrivals/s`: the warm keys and the open loop asking them."""
    return f"{herd.keys} warm keys, TTL {cache.ttl_s:g}s, {herd.rate_per_s or 0:g} arrivals/s"
