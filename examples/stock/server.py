"""The stock service: `Check` is slow (`--latency`) and served `--slots` at a time; a call that
finds every slot taken waits in a queue of `--queue` (served by `--discipline`), past it is
refused RESOURCE_EXHAUSTED with a pushback hint, and a call whose deadline cannot be met is
dropped DEADLINE_EXCEEDED: all of it `herdlab.server.LoadShedder`, one line below.

    python -m examples.stock.server --port 50070 [--host 127.0.0.1] [--slots 8]
        [--latency 0.05] [--queue 64] [--discipline fifo|codel|lifo] [--limit aimd]

It prints one line, `listening HOST:PORT`, once it serves (with `--port 0`, the port it got),
serves reflection and grpc.health.v1, counts every call that reaches it (`Stats`), and stops on
SIGTERM or SIGINT (in-flight calls get a second). A bad flag: exit 2 with one line.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from examples.stock import stock_pb2, stock_pb2_grpc
from herdlab.server import DISCIPLINES, LoadShedder

SERVICE = stock_pb2.DESCRIPTOR.services_by_name["Stock"].full_name
CHECK = f"/{SERVICE}/Check"
MAX_CHANGES = 1000


def count_for(sku: str) -> int:
    """The item's stock: a fixed number per sku, so answers can be checked."""
    return int.from_bytes(hashlib.sha256(sku.encode()).digest()[:2], "big") % 1000


class Arrivals(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Counts every call that reaches the server, by method, before anything may refuse it."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        self.counts[handler_call_details.method] += 1
        return await continuation(handler_call_details)


class Stock(stock_pb2_grpc.StockServicer):
    def __init__(self, latency_s: float, arrivals: Arrivals, shedder: LoadShedder) -> None:
        self.latency_s = latency_s
        self.arrivals = arrivals
        self.shedder = shedder
        self.max_in_flight = 0

    async def Check(
        self, request: stock_pb2.CheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> stock_pb2.CheckReply:
        self.max_in_flight = max(self.max_in_flight, self.shedder.capacity.in_flight)
        await asyncio.sleep(self.latency_s)
        return stock_pb2.CheckReply(sku=request.sku, count=count_for(request.sku))

    async def Watch(
        self, request: stock_pb2.WatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[stock_pb2.CheckReply]:
        if not 0 <= request.changes <= MAX_CHANGES:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"changes must be in 0..{MAX_CHANGES}"
            )
        count = count_for(request.sku)
        yield stock_pb2.CheckReply(sku=request.sku, count=count)
        for change in range(request.changes):
            await asyncio.sleep(self.latency_s)
            yield stock_pb2.CheckReply(sku=request.sku, count=count - change - 1)

    async def Stats(
        self, request: stock_pb2.StatsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> stock_pb2.StatsReply:
        counts = self.shedder.counts
        return stock_pb2.StatsReply(
            arrivals=dict(self.arrivals.counts),
            served=counts["served"],
            refused=counts["queue_full"] + counts["shed"],
            dropped=counts["deadline"],
            max_in_flight=self.max_in_flight,
        )


def build(args: argparse.Namespace) -> tuple[grpc.aio.Server, int, Any]:
    """The server (not started), the port it bound and its health servicer."""
    arrivals = Arrivals()
    # The service's capacity: `--slots` Check calls at once, a bounded queue, pushback hints.
    shedder = LoadShedder(
        args.limit or args.slots,
        queue=args.queue,
        discipline=args.discipline,
        min_service_s=args.latency,
        methods={CHECK},
    )
    server = grpc.aio.server(interceptors=[arrivals, shedder])
    stock_pb2_grpc.add_StockServicer_to_server(Stock(args.latency, arrivals, shedder), server)
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(f"{args.host}:{args.port}")
    if port == 0:
        raise OSError(f"could not bind {args.host}:{args.port}")
    return server, port, health_servicer


async def serve(args: argparse.Namespace) -> None:
    server, port, health_servicer = build(args)
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    print(f"listening {args.host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1.0)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message}", file=sys.stderr)
        sys.exit(2)


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = _Parser(prog="python -m examples.stock.server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="0: any free port")
    parser.add_argument("--slots", type=int, default=8, help="Check calls served at once")
    parser.add_argument("--latency", type=_positive, default=0.05, help="seconds per Check")
    parser.add_argument("--queue", type=int, default=64, help="Check calls that may wait")
    parser.add_argument("--discipline", choices=DISCIPLINES, default="fifo")
    parser.add_argument(
        "--limit", default=None, help="an adaptive limit instead of --slots: aimd, vegas,max=64"
    )
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"argument --port: must be in 0..65535, got {args.port}")
    if not 1 <= args.slots <= 100_000:
        parser.error(f"argument --slots: must be in 1..100000, got {args.slots}")
    if not 0 <= args.queue <= 1_000_000:
        parser.error(f"argument --queue: must be in 0..1000000, got {args.queue}")
    if args.limit is not None:
        try:
            LoadShedder(args.limit)
        except ValueError as exc:
            parser.error(f"argument --limit: {exc}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    try:
        asyncio.run(serve(args))
    except OSError as exc:
        print(f"python -m examples.stock.server: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
