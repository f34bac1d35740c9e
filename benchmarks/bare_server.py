"""The bare server: the `Cache` service over the same proto, answering a constant, nothing else.

It is the physical limit the cache is compared with: the same grpc.aio server, the same server
options (`herdlab.grpcutil.SERVER_OPTIONS`, so a 10,000-call burst is not shed), no store, no
coalescer, no metrics, no health or reflection.

`--hold N --hold-key K` makes it the fan-out limit: calls for key K are held until N of them are
pending and `--settle` seconds more have passed (so the server is idle, as the cache is when its
DB answers), then all are answered at once (what the coalescer does when its fetch ends). The
instants the first and the N-th call arrived and the gate opened are written as JSON to
`--events`. Calls for other keys pass at once. `--loop` picks the event loop (`herdlab.loop`).

    python -m benchmarks.bare_server --port P [--hold N --hold-key K --events PATH] [--loop L]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from pathlib import Path

import grpc

from herdlab import loop
from herdlab.grpcutil import SERVER_OPTIONS, Context
from protos import cache_pb2, cache_pb2_grpc

# A held call waits at most this long for the gate, so a short burst cannot hang the server.
HOLD_TIMEOUT_S = 300.0
CONSTANT = cache_pb2.CacheGetResponse(
    key="bare", value="v1:0000000000000000", version=1, source=cache_pb2.HIT
)


class BareCache(cache_pb2_grpc.CacheServicer):
    def __init__(self, hold: int, hold_key: str, settle_s: float, events: Path | None) -> None:
        self.hold = hold
        self.settle_s = settle_s
        self.hold_key = hold_key
        self.events = events
        self.pending = 0
        self.first_pending_ns = 0
        self.all_pending_ns = 0
        # One future every held call awaits, as the coalescer's waiters await one fetch.
        self.gate: asyncio.Future[None] | None = None

    async def Get(
        self, request: cache_pb2.CacheGetRequest, context: Context
    ) -> cache_pb2.CacheGetResponse:
        if self.hold and request.key == self.hold_key and not self._opened():
            loop = asyncio.get_running_loop()
            if self.gate is None:
                self.gate = loop.create_future()
                loop.call_later(HOLD_TIMEOUT_S, self._open)
            self.pending += 1
            if self.pending == 1:
                self.first_pending_ns = time.time_ns()
            if self.pending == self.hold:
                self.all_pending_ns = time.time_ns()
                loop.call_later(self.settle_s, self._open)
            await self.gate
        return CONSTANT

    async def Expire(
        self, request: cache_pb2.ExpireRequest, context: Context
    ) -> cache_pb2.ExpireResponse:
        """Nothing is stored, so nothing expires."""
        return cache_pb2.ExpireResponse(expired=0)

    def _opened(self) -> bool:
        return self.gate is not None and self.gate.done()

    def _open(self) -> None:
        if self.gate is None or self.gate.done():
            return
        opened_ns = time.time_ns()
        self.gate.set_result(None)
        if self.events is not None:
            tmp = self.events.with_suffix(".tmp")
            event = {
                "first_pending_ns": self.first_pending_ns,
                "all_pending_ns": self.all_pending_ns,
                "gate_open_ns": opened_ns,
                "held": self.pending,
            }
            tmp.write_text(json.dumps(event))
            tmp.replace(self.events)  # readers never see a partial file


async def serve(port: int, hold: int, hold_key: str, settle_s: float, events: Path | None) -> None:
    server = grpc.aio.server(options=SERVER_OPTIONS)
    servicer = BareCache(hold, hold_key, settle_s, events)
    cache_pb2_grpc.add_CacheServicer_to_server(servicer, server)
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        raise OSError(f"could not bind 127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--hold", type=int, default=0, help="hold calls until N are pending")
    parser.add_argument("--hold-key", default="burst")
    parser.add_argument(
        "--settle", type=float, default=1.0, help="seconds between the N-th call and the gate"
    )
    parser.add_argument("--events", type=Path, default=None)
    parser.add_argument("--loop", choices=loop.NAMES, default=loop.chosen())
    args = parser.parse_args()
    loop.run(serve(args.port, args.hold, args.hold_key, args.settle, args.events), args.loop)


if __name__ == "__main__":
    main()
