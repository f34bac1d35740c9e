"""The lab's own Python on a hit, in-process: the cache's `Get` handler against the bare server's.

`python -m benchmarks.handler_cost [--calls N] [--repeats R]` prints one JSON line. Each handler
is the one its server mounts (the cache's built by `herdlab.grpcutil.Service`, the bare one as
generated code builds it), called the way grpc.aio calls it: deserialise the request, await the
behaviour, serialise the reply, `--calls` times in a row on one event loop, on a key the cache
holds fresh. No gRPC, no socket, no other thread: what is left is the work each handler adds to
a call, free of the machine's noise (the best of `--repeats` runs). In a serving process the same
code runs between gRPC's own work with cold caches and costs several times more; this figure is
its floor, and what a cut on the hit path changes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import grpc
from prometheus_client import CollectorRegistry

from benchmarks.bare_server import BareCache
from cache_service.dbclient import DbClient
from cache_service.server import Cache, CacheServicer
from cache_service.store import TtlStore
from herdlab.grpcutil import Service
from herdlab.retry import RetryPolicy
from protos import cache_pb2

KEY = "hot"
# Nothing listens here: the cache's DB channel is made but never used (every call is a hit).
NO_DB = "127.0.0.1:1"


async def _per_call_us(handler: Any, calls: int, repeats: int) -> float:
    raw = cache_pb2.CacheGetRequest(key=KEY).SerializeToString()
    parse, behave, write = (
        handler.request_deserializer,
        handler.unary_unary,
        handler.response_serializer,
    )
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            write(await behave(parse(raw), None))
        best = min(best, (time.perf_counter() - started) / calls)
    return best * 1e6


async def measure(calls: int, repeats: int) -> dict[str, Any]:
    registry = CollectorRegistry()
    policy = RetryPolicy(name="none", max_total_s=1.0, attempt_timeout_s=1.0)
    db = DbClient(NO_DB, policy, registry)
    try:
        cache = Cache(TtlStore(3600.0, 1000), db, True, registry)
        hit = cache_pb2.CacheGetResponse(key=KEY, value="v1", version=1, source=cache_pb2.HIT)
        cache.store.put(KEY, "v1", 1, hit=hit)
        descriptor = cache_pb2.DESCRIPTOR.services_by_name["Cache"]
        lab = Service(CacheServicer(cache), descriptor).handlers(None)["Get"]
        bare = grpc.unary_unary_rpc_method_handler(
            BareCache(0, "", 0.0, None).Get,
            request_deserializer=cache_pb2.CacheGetRequest.FromString,
            response_serializer=cache_pb2.CacheGetResponse.SerializeToString,
        )
        cache_us = bare_us = float("inf")
        for _ in range(3):  # interleaved, so a slow moment of the machine hits both
            cache_us = min(cache_us, await _per_call_us(lab, calls, repeats))
            bare_us = min(bare_us, await _per_call_us(bare, calls, repeats))
        hits = cache.metrics.counted["hit", "ok"].value
    finally:
        await db.close()
    return {
        "calls": calls,
        "repeats": repeats,
        "cache_us": round(cache_us, 2),
        "bare_us": round(bare_us, 2),
        "extra_us": round(cache_us - bare_us, 2),
        "hits_counted": int(hits),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.calls < 1 or args.repeats < 1:
        parser.error("--calls and --repeats must be >= 1")
    print(json.dumps(asyncio.run(measure(args.calls, args.repeats))))


if __name__ == "__main__":
    main()
