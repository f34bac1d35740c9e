"""A client of the stock service that gains the cures in a few lines: a retry policy with full
jitter and the recommended guards on every call of its channel (`herdlab.client.Cures`), and
single-flight on its lookups (`herdlab.singleflight.single_flight`), so `--callers` concurrent
lookups of `--skus` items send about one call per item.

    python -m examples.stock.client --target 127.0.0.1:50070 [--callers 500] [--skus 20]
        [--guards limit:n=8+breaker] [--policy full] [--timeout 5] [--no-single-flight]

Prints one JSON line: the answers by status code, and what the server saw (`Stats`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import Counter
from typing import NoReturn

import grpc

from examples.stock import stock_pb2, stock_pb2_grpc
from herdlab.client import Cures
from herdlab.retry import POLICY_NAMES, RetryPolicy
from herdlab.singleflight import single_flight


async def run(args: argparse.Namespace) -> dict[str, object]:
    # The cures: a policy and guards on every call of the channel, gRPC's own retries off.
    cures = Cures(RetryPolicy(args.policy, base_s=0.05, cap_s=1.0), guards=args.guards)
    async with cures.insecure_channel(args.target) as channel:
        stub = stock_pb2_grpc.StockStub(channel)

        async def check(sku: str) -> int:
            reply = await stub.Check(stock_pb2.CheckRequest(sku=sku), timeout=args.timeout)
            return reply.count

        # Single-flight: concurrent lookups of one sku share one call.
        lookup = check if args.no_single_flight else single_flight(key=lambda sku: sku)(check)
        results = await asyncio.gather(
            *(lookup(f"sku-{n % args.skus}") for n in range(args.callers)),
            return_exceptions=True,
        )
        codes = Counter(
            r.code().name if isinstance(r, grpc.aio.AioRpcError) else "OK" for r in results
        )
        stats = await stub.Stats(stock_pb2.StatsRequest(), timeout=args.timeout)
    return {
        "answers": dict(codes),
        "attempts_sent": cures.sent,
        "server": {
            "check_arrivals": stats.arrivals.get("/shop.v1.Stock/Check", 0),
            "served": stats.served,
            "refused": stats.refused,
            "dropped": stats.dropped,
            "max_in_flight": stats.max_in_flight,
        },
    }


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message}", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    parser = _Parser(prog="python -m examples.stock.client", description=__doc__)
    parser.add_argument("--target", required=True)
    parser.add_argument("--callers", type=int, default=500)
    parser.add_argument("--skus", type=int, default=20)
    parser.add_argument("--policy", choices=POLICY_NAMES, default="full")
    # A limit at the server's slots (8 by default) and a breaker: `recommended` is the same set
    # sized for the lab's DB (20 slots).
    parser.add_argument("--guards", default="limit:n=8+breaker")
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--no-single-flight", action="store_true")
    args = parser.parse_args(argv)
    if not 1 <= args.callers <= 100_000 or not 1 <= args.skus <= args.callers:
        parser.error("--callers must be in 1..100000 and --skus in 1..callers")
    if not 0 < args.timeout <= 3600:
        parser.error(f"argument --timeout: must be in (0, 3600], got {args.timeout}")
    try:
        Cures(guards=args.guards)
    except ValueError as exc:
        parser.error(f"argument --guards: {exc}")
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
