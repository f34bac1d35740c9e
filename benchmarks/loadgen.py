"""The load generator: one process, grpc.aio, the same for the cache and the bare server.

Two modes, each printing one JSON line on stdout:

- `burst`: N concurrent `Get`s for one key, all started at once over M channels (each its own
  TCP connection). Reports when the burst began and when the first and last answers came (wall
  clock ns, comparable with the services' records), latency p50/p99/max, answers by source and
  errors by code.
- `closed`: C workers each send `Get` for one key in a loop (closed loop: a worker sends again as
  soon as it is answered). After `--warmup` seconds a window of `--duration` seconds is measured:
  requests/s, latency p50/p99, errors, and the CPU used in the window by this process and, with
  `--server-pid`, by the server (so a reader can tell which side was the bottleneck), and with
  `--proxy-pid` by a proxy in between (what it costs per request).

Every call has a deadline; every loop is bounded by time and by count.

    python -m benchmarks.loadgen burst --target HOST:PORT --calls N [--key K] [--channels M]
    python -m benchmarks.loadgen closed --target HOST:PORT --concurrency C [--duration S] ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections import Counter
from typing import Any

import grpc

from benchmarks.stats import latency_ms
from benchmarks.system import cpu_seconds
from herdlab import loop
from herdlab.grpcutil import channel_options
from protos import cache_pb2, cache_pb2_grpc

CONNECT_TIMEOUT_S = 10.0
# A closed-loop worker stops after this many calls even if the window has not ended.
MAX_CALLS_PER_WORKER = 10_000_000


def _channels(target: str, count: int) -> list[grpc.aio.Channel]:
    return [
        grpc.aio.insecure_channel(target, options=channel_options(local_pool=True))
        for _ in range(count)
    ]


async def _ready(channels: list[grpc.aio.Channel]) -> None:
    await asyncio.wait_for(
        asyncio.gather(*(ch.channel_ready() for ch in channels)), CONNECT_TIMEOUT_S
    )


async def burst(target: str, calls: int, key: str, channel_count: int, timeout_s: float) -> Any:
    channels = _channels(target, channel_count)
    try:
        await _ready(channels)
        stubs = [cache_pb2_grpc.CacheStub(ch) for ch in channels]
        request = cache_pb2.CacheGetRequest(key=key)
        done_ns: list[int] = []
        latencies: list[float] = []
        sources: Counter[str] = Counter()
        errors: Counter[str] = Counter()

        async def one(index: int) -> None:
            sent = time.perf_counter()
            try:
                reply = await stubs[index % len(stubs)].Get(request, timeout=timeout_s)
            except grpc.aio.AioRpcError as exc:
                errors[exc.code().name] += 1
            else:
                sources[cache_pb2.Source.Name(reply.source)] += 1
            done_ns.append(time.time_ns())
            latencies.append(time.perf_counter() - sent)

        cpu_before = time.process_time()
        start_ns = time.time_ns()
        await asyncio.gather(*(one(i) for i in range(calls)))
        return {
            "calls": calls,
            "start_ns": start_ns,
            "first_done_ns": min(done_ns),
            "last_done_ns": max(done_ns),
            "latency_ms": latency_ms(latencies),
            "sources": dict(sources),
            "errors": dict(errors),
            "client_cpu_s": round(time.process_time() - cpu_before, 3),
        }
    finally:
        await asyncio.gather(*(ch.close(grace=None) for ch in channels))


async def closed(
    target: str,
    concurrency: int,
    key: str,
    channel_count: int,
    warmup_s: float,
    duration_s: float,
    server_pid: int | None,
    proxy_pid: int | None = None,
) -> Any:
    channels = _channels(target, channel_count)
    try:
        await _ready(channels)
        stubs = [cache_pb2_grpc.CacheStub(ch) for ch in channels]
        request = cache_pb2.CacheGetRequest(key=key)
        loop = asyncio.get_running_loop()
        start = loop.time()
        window_start, window_end = start + warmup_s, start + warmup_s + duration_s
        latencies: list[float] = []
        errors: Counter[str] = Counter()
        marks: dict[str, float] = {}

        def mark(name: str) -> None:
            marks[f"{name}_client_cpu"] = time.process_time()
            for side, pid in (("server", server_pid), ("proxy", proxy_pid)):
                if pid is not None:
                    with contextlib.suppress(Exception):
                        marks[f"{name}_{side}_cpu"] = cpu_seconds(pid)

        async def window_marks() -> None:
            await asyncio.sleep(warmup_s)
            mark("start")
            await asyncio.sleep(duration_s)
            mark("end")

        async def worker(index: int) -> None:
            stub = stubs[index % len(stubs)]
            for _ in range(MAX_CALLS_PER_WORKER):
                sent = loop.time()
                if sent >= window_end:
                    return
                # Latency by the performance counter: uvloop's clock moves in milliseconds.
                started = time.perf_counter()
                try:
                    await stub.Get(request, timeout=10.0)
                except grpc.aio.AioRpcError as exc:
                    if sent >= window_start:
                        errors[exc.code().name] += 1
                    continue
                took = time.perf_counter() - started
                if sent >= window_start and loop.time() <= window_end:
                    latencies.append(took)

        await asyncio.gather(window_marks(), *(worker(i) for i in range(concurrency)))
        result: dict[str, Any] = {
            "concurrency": concurrency,
            "requests": len(latencies),
            "seconds": duration_s,
            "rps": round(len(latencies) / duration_s, 1),
            "latency_ms": latency_ms(latencies),
            "errors": dict(errors),
            "client_cpu": round(
                (marks["end_client_cpu"] - marks["start_client_cpu"]) / duration_s, 3
            ),
        }
        for side in ("server", "proxy"):
            if f"end_{side}_cpu" in marks and f"start_{side}_cpu" in marks:
                used = marks[f"end_{side}_cpu"] - marks[f"start_{side}_cpu"]
                result[f"{side}_cpu"] = round(used / duration_s, 3)
        return result
    finally:
        await asyncio.gather(*(ch.close(grace=None) for ch in channels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    b = modes.add_parser("burst")
    b.add_argument("--target", required=True)
    b.add_argument("--calls", type=int, required=True)
    b.add_argument("--key", default="burst")
    b.add_argument("--channels", type=int, default=8)
    b.add_argument("--timeout", type=float, default=120.0)
    c = modes.add_parser("closed")
    c.add_argument("--target", required=True)
    c.add_argument("--concurrency", type=int, required=True)
    c.add_argument("--key", default="hot")
    c.add_argument("--channels", type=int, default=4)
    c.add_argument("--warmup", type=float, default=1.0)
    c.add_argument("--duration", type=float, default=3.0)
    c.add_argument("--server-pid", type=int, default=None)
    c.add_argument("--proxy-pid", type=int, default=None)
    parser.add_argument("--loop", choices=loop.NAMES, default=loop.chosen())
    args = parser.parse_args()
    if args.mode == "burst":
        result = loop.run(
            burst(args.target, args.calls, args.key, args.channels, args.timeout), args.loop
        )
    else:
        result = loop.run(
            closed(
                args.target,
                args.concurrency,
                args.key,
                min(args.channels, args.concurrency),
                args.warmup,
                args.duration,
                args.server_pid,
                args.proxy_pid,
            ),
            args.loop,
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
