"""The gevent side of `benchmarks.locust_engines`: Locust's documented gRPC user in one process.

`grpc.experimental.gevent.init_gevent()` and the synchronous stubs; N Locust users (greenlets)
over 8 channels, parked on one barrier, released together, R requests each on one warm key.
Locust is imported first: it patches the process for gevent before anything else loads.

    python -m benchmarks.locust_gevent_probe --target HOST:PORT --users N --requests R

prints one JSON line: requests, failures, the release spread, and CPU seconds from the release to
the last answer.
"""

from __future__ import annotations

# isort: off
from locust import User, task
from locust.env import Environment
from locust.exception import StopUser

# isort: on
import argparse
import json
import time
from typing import Any

import gevent
import grpc
import grpc.experimental.gevent as grpc_gevent  # type: ignore[import-not-found]
import psutil
from gevent.event import Event

from protos import cache_pb2, cache_pb2_grpc

KEY_PREFIX = "hot"
LIMIT_S = 300.0


def gevent_probe(target: str, users: int, requests: int) -> dict[str, Any]:
    """In this process (Locust patches it for gevent): `users` Locust users with sync stubs over
    8 channels, parked on one barrier, released together, `requests` requests each."""
    grpc_gevent.init_gevent()
    channels = [grpc.insecure_channel(target) for _ in range(8)]
    for channel in channels:
        grpc.channel_ready_future(channel).result(timeout=10)
    stubs = [cache_pb2_grpc.CacheStub(channel) for channel in channels]
    barrier = Event()
    state: dict[str, Any] = {"waiting": 0, "done": 0, "release_ns": 0, "first": []}
    finished = Event()

    class GrpcUser(User):
        @task
        def herd(self) -> None:
            number = state["waiting"]
            state["waiting"] += 1
            if state["waiting"] == users:
                state["release_ns"] = time.time_ns()
                state["cpu_at_release"] = sum(psutil.Process().cpu_times()[:2])
                barrier.set()
            barrier.wait()
            state["first"].append(time.time_ns())
            stub = stubs[number % len(stubs)]
            request = cache_pb2.CacheGetRequest(key=f"{KEY_PREFIX}0")
            for _ in range(requests):
                started = time.perf_counter()
                exception = None
                try:
                    stub.Get(request, timeout=60)
                except grpc.RpcError as exc:
                    exception = exc
                self.environment.events.request.fire(
                    request_type="grpc",
                    name="cache.Get",
                    response_time=(time.perf_counter() - started) * 1e3,
                    response_length=0,
                    exception=exception,
                    context={},
                )
            state["done"] += 1
            if state["done"] == users:
                state["done_ns"] = time.time_ns()
                state["cpu_at_done"] = sum(psutil.Process().cpu_times()[:2])
                finished.set()
            raise StopUser()

    env = Environment(user_classes=[GrpcUser])
    runner = env.create_local_runner()
    runner.start(users, spawn_rate=users)
    finished.wait(timeout=LIMIT_S)
    runner.quit()
    gevent.sleep(0)
    sent = env.stats.total.num_requests
    cpu_s = state["cpu_at_done"] - state["cpu_at_release"]
    return {
        "users": users,
        "requests": sent,
        "failures": env.stats.total.num_failures,
        "release_spread_s": (max(state["first"]) - state["release_ns"]) / 1e9,
        "seconds": (state["done_ns"] - state["release_ns"]) / 1e9,
        "cpu_s": cpu_s,
        "requests_per_cpu_s": sent / cpu_s if cpu_s > 0 else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--requests", type=int, default=1)
    args = parser.parse_args()
    print(json.dumps(gevent_probe(args.target, args.users, args.requests)))


if __name__ == "__main__":
    main()
