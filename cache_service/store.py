"""Where the cache's values live: a TTL store bounded in size (least recently used goes first).

Only "where values live" is here: how misses are coalesced is `coalescer.py`, how the DB is
called is `dbclient.py`. The clock is injectable so tests control expiry without sleeping.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    value: str
    version: int
    expires_at: float


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
        self._entries: OrderedDict[str, Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Entry | None:
        """The fresh entry for `key`, or None (absent or expired; an expired one is dropped)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= self.clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: str, value: str, version: int) -> None:
        self._entries[key] = Entry(value, version, self.clock() + self.ttl_s)
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
