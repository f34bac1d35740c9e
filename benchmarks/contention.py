"""Brooker's 2015 contention model, in simulated time, driven by the project's own retry policies.

The model (aws-samples/aws-arch-backoff-simulator, `src/backoff_simulator.py`): N clients each
update one row once with optimistic concurrency: read the version, write with it; a write with a
stale version fails, and the client waits `network delay + backoff(attempt)` and reads again.
Every message takes a network delay of |N(10 ms, 2 ms)|. `calls` counts writes (the server's
work); `time` is when the last client's write succeeded. Discrete events on a heap: no real
sleeping, so the machine's load cannot change a result, and a seed reproduces it exactly.

The backoff is the wait of a `herdlab.retry.RetryPolicy` (base 5 ms, cap 2 s), asked through
tenacity's calling convention with one call state per client, exactly as the cache and the herd
ask it. Only the waits are used: as in the original, clients retry until they succeed.

One convention differs from the original script: the project's n-th retry waits
`base * 2**(n-1)` (first retry: base), the script's `base * 2**n` (first retry: 2 * base).
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import tenacity
from tenacity import RetryCallState

from herdlab.retry import JITTERED, RetryPolicy

POLICIES = ("none", "exponential", *JITTERED)
BASE_S = 0.005
CAP_S = 2.0
NET_MEAN_S = 0.010
NET_SD_S = 0.002
# One run never processes more events than this (no backoff at 100 clients needs ~25,000).
MAX_EVENTS = 5_000_000

_READ, _READ_REPLY, _WRITE, _WRITE_REPLY = range(4)


@dataclass(frozen=True)
class Run:
    calls: int
    time_s: float


def policy_for(name: str, seed: int) -> RetryPolicy:
    """The project's policy `name` with the model's base and cap, seeded."""
    return RetryPolicy(
        name=name, base_s=BASE_S, cap_s=CAP_S, max_attempts=100, max_total_s=3600.0, seed=seed
    )


def simulate(clients: int, policy: RetryPolicy, net: random.Random) -> Run:
    """One run of the model: `clients` contend until each has written once."""
    wait = policy.wait()
    retrying = tenacity.Retrying()
    states = [
        RetryCallState(retry_object=retrying, fn=None, args=(), kwargs={}) for _ in range(clients)
    ]
    attempts = [0] * clients

    def delay() -> float:
        return abs(net.normalvariate(NET_MEAN_S, NET_SD_S))

    version = 0
    calls = 0
    now = 0.0
    seq = 0
    queue: list[tuple[float, int, int, int, int]] = []
    for client in range(clients):
        seq += 1
        heapq.heappush(queue, (delay(), seq, _READ, client, 0))
    for _ in range(MAX_EVENTS):
        if not queue:
            return Run(calls, now)
        now, _, kind, client, payload = heapq.heappop(queue)
        if kind == _READ:
            event = (now + delay(), _READ_REPLY, version)
        elif kind == _READ_REPLY:
            event = (now + delay(), _WRITE, payload)
        elif kind == _WRITE:
            calls += 1
            ok = payload == version
            if ok:
                version += 1
            event = (now + delay(), _WRITE_REPLY, int(ok))
        elif payload:
            continue
        else:
            attempts[client] += 1
            state = states[client]
            state.attempt_number = attempts[client]
            state.upcoming_sleep = wait(state)
            event = (now + delay() + state.upcoming_sleep, _READ, 0)
        seq += 1
        heapq.heappush(queue, (event[0], seq, event[1], client, event[2]))
    raise RuntimeError(f"simulation of {clients} clients exceeded {MAX_EVENTS:,} events")


def average(policy: str, clients: int, seeds: Sequence[int]) -> dict[str, float | int | str]:
    """Mean calls and completion time over `seeds` (each seeds the network and the jitter)."""
    runs = [simulate(clients, policy_for(policy, seed), random.Random(seed)) for seed in seeds]
    calls = [r.calls for r in runs]
    times = [r.time_s for r in runs]
    return {
        "policy": policy,
        "clients": clients,
        "runs": len(runs),
        "calls_mean": round(sum(calls) / len(runs), 1),
        "time_ms_mean": round(1000 * sum(times) / len(runs), 1),
        "calls_max": max(calls),
        "time_ms_max": round(1000 * max(times), 1),
    }


def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares slope of log(y) on log(x): 2 means y grows as x**2."""
    points = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if x > 0 and y > 0]
    if len(points) < 2:
        return None
    mx = sum(p[0] for p in points) / len(points)
    my = sum(p[1] for p in points) / len(points)
    sxx = sum((p[0] - mx) ** 2 for p in points)
    sxy = sum((p[0] - mx) * (p[1] - my) for p in points)
    return round(sxy / sxx, 2) if sxx else None
