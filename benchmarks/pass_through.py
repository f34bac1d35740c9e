"""The pass-through server: a `Cache` service that forwards every `Get` to another `Cache` server.

It is the middle hop of the bare chain (herd -> pass-through -> bare server), the limit the lab's
herd -> cache -> DB chain is compared with for a stampede's sharpness: one grpc.aio server that
makes one grpc.aio call per request, and nothing else (no store, no coalescing, no retry policy,
no metrics, no health). Calls to the upstream carry the caller's remaining deadline.

    python -m benchmarks.pass_through --port P --upstream HOST:PORT [--channels M] [--loop L]
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import grpc

from herdlab import loop
from herdlab.grpcutil import SERVER_OPTIONS, Context, channel_options
from protos import cache_pb2, cache_pb2_grpc

# A call that carries no deadline of its own waits at most this long for the upstream.
DEFAULT_TIMEOUT_S = 300.0


class PassThrough(cache_pb2_grpc.CacheServicer):
    def __init__(self, stubs: list[cache_pb2_grpc.CacheAsyncStub]) -> None:
        self.stubs = stubs
        self.next = 0

    async def Get(
        self, request: cache_pb2.CacheGetRequest, context: Context
    ) -> cache_pb2.CacheGetResponse:
        self.next = (self.next + 1) % len(self.stubs)
        remaining = context.time_remaining()
        reply: cache_pb2.CacheGetResponse = await self.stubs[self.next].Get(
            request, timeout=DEFAULT_TIMEOUT_S if remaining is None else remaining
        )
        return reply

    async def Expire(
        self, request: cache_pb2.ExpireRequest, context: Context
    ) -> cache_pb2.ExpireResponse:
        """Not part of the chain: nothing is stored here."""
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the pass-through only forwards Get")


async def serve(port: int, upstream: str, channel_count: int) -> None:
    channels = [
        grpc.aio.insecure_channel(upstream, options=channel_options(local_pool=True))
        for _ in range(channel_count)
    ]
    server = grpc.aio.server(options=SERVER_OPTIONS)
    cache_pb2_grpc.add_CacheServicer_to_server(
        PassThrough([cache_pb2_grpc.CacheStub(ch) for ch in channels]), server
    )
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        raise OSError(f"could not bind 127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    running = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        running.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        await server.stop(0)
    finally:
        await asyncio.gather(*(ch.close(grace=None) for ch in channels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--loop", choices=loop.NAMES, default=loop.chosen())
    args = parser.parse_args()
    loop.run(serve(args.port, args.upstream, max(1, args.channels)), args.loop)


if __name__ == "__main__":
    main()
