"""The TTL store: expiry on an injected clock (no sleeping), the size bound (least recently used
goes first), and explicit expiry."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from cache_service.store import TtlStore


@dataclass
class Clock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


def make(ttl_s: float = 10.0, max_keys: int = 100) -> tuple[TtlStore, Clock]:
    clock = Clock()
    return TtlStore(ttl_s, max_keys, clock=clock), clock


def test_absent_key_is_none() -> None:
    store, _ = make()
    assert store.get("k") is None
    assert len(store) == 0


def test_value_is_fresh_until_its_ttl_then_gone() -> None:
    store, clock = make(ttl_s=10.0)
    store.put("k", "v1", 1)
    clock.now += 9.999
    entry = store.get("k")
    assert entry is not None and (entry.value, entry.version) == ("v1", 1)
    clock.now += 0.001  # exactly ttl after the put: expired
    assert store.get("k") is None
    assert len(store) == 0, "an expired entry is dropped when seen"


def test_reads_do_not_extend_the_ttl() -> None:
    store, clock = make(ttl_s=10.0)
    store.put("k", "v", 1)
    for _ in range(9):
        clock.now += 1.0
        assert store.get("k") is not None
    clock.now += 1.0
    assert store.get("k") is None


def test_put_overwrites_and_restarts_the_ttl() -> None:
    store, clock = make(ttl_s=10.0)
    store.put("k", "v1", 1)
    clock.now += 8.0
    store.put("k", "v2", 2)
    clock.now += 8.0
    entry = store.get("k")
    assert entry is not None and (entry.value, entry.version) == ("v2", 2)
    assert len(store) == 1


def test_size_bound_drops_the_least_recently_used() -> None:
    store, _ = make(max_keys=3)
    for key in "abc":
        store.put(key, key.upper(), 1)
    assert store.get("a") is not None  # a is now the most recently used
    store.put("d", "D", 1)
    assert len(store) == 3
    assert store.get("b") is None
    assert [k for k in "acd" if store.get(k) is not None] == ["a", "c", "d"]
    store.put("c", "C2", 2)  # an update counts as use
    store.put("e", "E", 1)
    assert store.get("a") is None
    assert {k for k in "cde" if store.get(k) is not None} == {"c", "d", "e"}


def test_expire_keys_counts_only_present_keys() -> None:
    store, _ = make()
    for key in "abc":
        store.put(key, key, 1)
    assert store.expire(["a", "c", "zz", "a"]) == 2
    assert store.get("a") is None and store.get("b") is not None and store.get("c") is None
    assert store.expire([]) == 0


def test_expire_all_empties_the_store() -> None:
    store, _ = make()
    for key in "abc":
        store.put(key, key, 1)
    assert store.expire_all() == 3
    assert len(store) == 0 and store.get("a") is None
    assert store.expire_all() == 0


@pytest.mark.parametrize(
    ("ttl_s", "max_keys", "message"),
    [
        (0.0, 10, "ttl must be > 0, got 0"),
        (-1.0, 10, "ttl must be > 0, got -1"),
        (float("nan"), 10, "ttl must be > 0, got nan"),
        (1.0, 0, "max keys must be >= 1, got 0"),
    ],
)
def test_invalid_bounds_raise(ttl_s: float, max_keys: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TtlStore(ttl_s, max_keys)


def test_expired_entry_is_kept_for_the_stale_window_then_dropped() -> None:
    store, clock = make(ttl_s=10.0)
    store.keep_s = 5.0
    store.put("k", "v", 1, delta_s=0.25)
    clock.now += 10.0  # expired
    entry = store.get("k")
    assert entry is not None and entry.expires_at == clock.now and entry.delta_s == 0.25
    clock.now += 4.999
    assert store.get("k") is not None
    clock.now += 0.001  # expired exactly keep_s ago: gone
    assert store.get("k") is None and len(store) == 0


def test_put_takes_its_own_ttl() -> None:
    store, clock = make(ttl_s=10.0)
    store.put("k", "v", 1, ttl_s=2.0)
    entry = store.get("k")
    assert entry is not None and entry.expires_at == clock.now + 2.0


def test_kept_expired_entries_count_against_the_size_bound() -> None:
    store, clock = make(ttl_s=1.0, max_keys=2)
    store.keep_s = 100.0
    store.put("a", "a", 1)
    store.put("b", "b", 1)
    clock.now += 2.0  # both expired, both kept
    store.put("c", "c", 1)
    assert len(store) == 2 and store.get("a") is None
