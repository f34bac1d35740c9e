"""Where the cache's values live: a TTL store bounded in size (least recently used goes first).

Only "where values live" is here: how misses are coalesced is `herdlab.singleflight`, how the DB is
called is `dbclient.py`, when a value may be served or refreshed is `freshness.py`. Each entry
keeps what the freshness policy needs: its value and version, its expiry, and `delta_s`, the
recompute time of the fetch that made it. An expired entry is kept for `keep_s` (the policy's
stale window) so that it can still be served stale, then dropped when next seen; the size bound
holds for expired entries too. The clock is injectable so tests control expiry without sleeping.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Entry:
    value: str
    version: int
    expires_at: float
    delta_s: float = 0.0  # how long the fetch that made this value took
    # What the cache answers a hit on this value with, built once when the value is stored
    # (opaque here: the store keeps it, the cache reads it); None: built per hit.
    hit: Any = field(default=None, compare=False)


class TtlStore:
    def __init__(
        self, ttl_s: float, max_keys: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not ttl_s > 0:
            raise ValueError(f"ttl must be > 0, got {ttl_s}")
        if max_keys < 1:
            raise ValueError(f"max keys must be >= 1, got {max_keys}")
        self.ttl_s = ttl_s
        self.max_keys = max_keys
        self.clock = clock
        self.keep_s = 0.0  # how long an expired entry is kept (the stale window)
        self._entries: OrderedDict[str, Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, now: float | None = None) -> Entry | None:
        """The entry for `key`, fresh or expired less than `keep_s` ago at `now` (default:
        `clock()`); None when absent or expired longer ago (such an entry is dropped). Whether it
        is fresh is the caller's comparison of `expires_at` with the same `now`."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if (self.clock() if now is None else now) - entry.expires_at >= self.keep_s:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def put(
        self,
        key: str,
        value: str,
        version: int,
        *,
        ttl_s: float | None = None,
        delta_s: float = 0.0,
        hit: Any = None,
    ) -> None:
        """Stores a value fresh for `ttl_s` (the store's TTL when None), made in `delta_s`, with
        the answer to a hit on it (`Entry.hit`)."""
        ttl = self.ttl_s if ttl_s is None else ttl_s
        self._entries[key] = Entry(value, version, self.clock() + ttl, delta_s, hit)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_keys:
            self._entries.popitem(last=False)

    def expire(self, keys: Iterable[str]) -> int:
        """Drops `keys`; returns how many were present."""
        return sum(self._entries.pop(k, None) is not None for k in keys)

    def expire_all(self) -> int:
        count = len(self._entries)
        self._entries.clear()
        return count
