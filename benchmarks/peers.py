"""Stampede protection in one process: the project's coalescer against what users would pick
instead, on the same simulated DB and the same burst of concurrent callers.

Every peer is "a cache in front of a slow DB": a caller looks the key up and, on a miss, loads it
through the peer's protection, which stores the value. The DB is `asyncio.sleep(latency)` that
counts its queries. All callers start at once on one cold key.

- `herdlab`: the project's `TtlStore` + `SingleFlight` (the cache service's path).
- `aiocache`: aiocache's `cached_stampede` decorator (a lock with a lease on its memory cache).
- `cashews_lock`: cashews' `@cache(..., lock=True)` with its in-process task sharing
  (`protected`) turned off, so only its lock protects the DB; waiters poll the lock.
- `none`: the same `TtlStore` with no protection: every caller that misses queries the DB.

One peer per process run (`--peer`), so each starts from a fresh interpreter. `--tracemalloc`
runs the burst under tracemalloc and reports its peak (which slows the run, so latency figures
come from a run without it). Prints one JSON line.

    python -m benchmarks.peers --peer herdlab --callers 10000 --latency 0.2 [--tracemalloc]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import aiocache  # type: ignore[import-untyped]
import cashews

from benchmarks.stats import latency_ms
from cache_service.store import TtlStore
from herdlab.singleflight import SingleFlight
from herdlab.values import value_for

PEERS = ("herdlab", "aiocache", "cashews_lock", "none")
KEY = "product-42"
TTL_S = 3600.0
# aiocache's lease must outlast the DB call, or waiters go to the DB when it expires.
LEASE_FACTOR = 10.0


class SlowDb:
    """The simulated DB: `latency_s` per query, queries counted."""

    def __init__(self, latency_s: float) -> None:
        self.latency_s = latency_s
        self.queries = 0

    async def get(self, key: str) -> str:
        self.queries += 1
        await asyncio.sleep(self.latency_s)
        return value_for(key, 1)


Loader = Callable[[str], Awaitable[str]]


def herdlab_loader(db: SlowDb) -> Loader:
    store = TtlStore(TTL_S, 1000)
    coalescer: SingleFlight[str] = SingleFlight()

    async def fill(key: str) -> str:
        value = await db.get(key)
        store.put(key, value, 1)
        return value

    async def load(key: str) -> str:
        entry = store.get(key)
        if entry is not None:
            return entry.value
        value, _ = await coalescer.do(key, lambda: fill(key))
        return value

    return load


def aiocache_loader(db: SlowDb) -> Loader:
    # aiocache is untyped: its decorator is given the type it has.
    stampede: Callable[[Loader], Loader] = aiocache.cached_stampede(
        lease=max(2.0, db.latency_s * LEASE_FACTOR), ttl=int(TTL_S)
    )

    async def load(key: str) -> str:
        return await db.get(key)

    return stampede(load)


def cashews_loader(db: SlowDb) -> Loader:
    cache = cashews.Cache()
    cache.setup("mem://")

    @cache(ttl=TTL_S, lock=True, protected=False)
    async def load(key: str) -> str:
        return await db.get(key)

    return load


def none_loader(db: SlowDb) -> Loader:
    store = TtlStore(TTL_S, 1000)

    async def load(key: str) -> str:
        entry = store.get(key)
        if entry is not None:
            return entry.value
        value = await db.get(key)
        store.put(key, value, 1)
        return value

    return load


LOADERS: dict[str, Callable[[SlowDb], Loader]] = {
    "herdlab": herdlab_loader,
    "aiocache": aiocache_loader,
    "cashews_lock": cashews_loader,
    "none": none_loader,
}


async def run_peer(peer: str, callers: int, latency_s: float, timeout_s: float) -> dict[str, Any]:
    db = SlowDb(latency_s)
    load = LOADERS[peer](db)
    expected = value_for(KEY, 1)
    latencies: list[float] = []
    wrong = 0
    errors = 0

    async def caller() -> None:
        nonlocal wrong, errors
        started = time.perf_counter()
        try:
            value = await asyncio.wait_for(load(KEY), timeout_s)
        except Exception:
            errors += 1
        else:
            wrong += value != expected
        latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return {
        "peer": peer,
        "callers": callers,
        "db_queries": db.queries,
        "latency_ms": latency_ms(latencies),
        "seconds": round(time.perf_counter() - started, 3),
        "errors": errors,
        "wrong_values": wrong,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", choices=PEERS, required=True)
    parser.add_argument("--callers", type=int, default=10_000)
    parser.add_argument("--latency", type=float, default=0.2, help="DB latency, seconds")
    parser.add_argument("--timeout", type=float, default=120.0, help="per caller, seconds")
    parser.add_argument("--tracemalloc", action="store_true")
    args = parser.parse_args()
    if args.tracemalloc:
        tracemalloc.start()
    result = asyncio.run(run_peer(args.peer, args.callers, args.latency, args.timeout))
    if args.tracemalloc:
        result["peak_memory_bytes"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
