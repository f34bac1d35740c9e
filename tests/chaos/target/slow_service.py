"""A service that is not the lab's, for the herd's tests: `Slow` (slow.proto), served with
grpc.aio on 127.0.0.1. `Work` holds one of `--capacity` slots for `--latency`, so the service
completes at most capacity / latency calls a second and queues the rest (bounded by `--queue`,
beyond which it answers RESOURCE_EXHAUSTED). Prints `listening on PORT` once it serves;
`--no-reflection` leaves reflection off; `--metrics-port P` serves Prometheus metrics on
127.0.0.1:P, among them `labtest_work_total`, the `Work` calls answered.

    python tests/chaos/target/slow_service.py --port 0 --capacity 10 --latency 0.05
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import grpc
import prometheus_client
from grpc_reflection.v1alpha import reflection

sys.path.insert(0, str(Path(__file__).parent))
protos, services = grpc.protos_and_services("slow.proto")
WORKED = prometheus_client.Counter("labtest_work_total", "Work calls answered.")


class Slow(services.SlowServicer):  # type: ignore[misc,name-defined]
    def __init__(self, capacity: int, latency_s: float, queue: int) -> None:
        self.slots = asyncio.Semaphore(capacity)
        self.latency_s = latency_s
        self.queue = queue
        self.waiting = 0

    async def _hold(self, context: Any) -> None:
        if self.waiting >= self.queue:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full")
        self.waiting += 1
        try:
            async with self.slots:
                await asyncio.sleep(self.latency_s)
        finally:
            self.waiting -= 1

    async def Work(self, request: Any, context: Any) -> Any:
        await self._hold(context)
        WORKED.inc()
        return protos.WorkReply(key=request.key, echo=f"{request.key}:{request.seq}")

    async def Count(self, request: Any, context: Any) -> Any:
        for i in range(request.n):
            await self._hold(context)
            yield protos.CountReply(key=request.key, i=i)

    async def Upload(self, requests: Any, context: Any) -> Any:
        async for _ in requests:
            pass
        return protos.WorkReply()


async def serve(args: argparse.Namespace) -> None:
    server = grpc.aio.server()
    services.add_SlowServicer_to_server(Slow(args.capacity, args.latency, args.queue), server)
    if not args.no_reflection:
        names = (
            protos.DESCRIPTOR.services_by_name["Slow"].full_name,
            reflection.SERVICE_NAME,
        )
        reflection.enable_server_reflection(names, server)
    if args.metrics_port:
        prometheus_client.start_http_server(args.metrics_port, addr="127.0.0.1")
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    await server.start()
    print(f"listening on {port}", flush=True)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--capacity", type=int, default=10)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--queue", type=int, default=10_000)
    parser.add_argument("--no-reflection", action="store_true")
    parser.add_argument("--metrics-port", type=int, default=0)
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
