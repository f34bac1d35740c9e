"""Two ways to run the herd on Locust, side by side in one run against one lab stack:

- `gevent` (`benchmarks.locust_gevent_probe`): Locust's documented gRPC user,
  `grpc.experimental.gevent.init_gevent()` and the synchronous stubs, each lab user a Locust user
  (a greenlet) in one Locust process (Locust as a library);
- `asyncio`: the lab's locustfile, a Locust master and one worker whose share runs in the asyncio
  herd core in a child process, every request reported back as a Locust request event
  (`chaos.engine.locustfile`).

For each: requests per CPU second of the load side (the gevent process; the worker and its herd
process together), from the release to the last answer, over USERS_RATE users x REQUESTS requests
on one warm key; and the release spread of a USERS_BURST-user burst (barrier opening to the last
user's first send). The cache and DB are pinned to the server cores, the load to the client core.

    python -m benchmarks.locust_engines [--burst 10000] [--users 1000] [--requests 20]

prints one JSON document (the figures in the README, "The herd on Locust").
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks.servers import get, lab_stack
from benchmarks.system import cpu_plan, pin
from chaos.engine.herd_settings import HerdSettings
from chaos.engine.herd_workers import master_argv, worker_argv
from chaos.lab.ports import free_port

KEY_PREFIX = "hot"
POLL_S = 0.05
LIMIT_S = 300.0


def _tree_cpu_s(proc: psutil.Process) -> float:
    """CPU seconds of `proc` and its live children."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            times = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _gevent(target: str, users: int, requests: int, cores: frozenset[int]) -> dict[str, Any]:
    argv = [sys.executable, "-m", "benchmarks.locust_gevent_probe", "--target", target]
    argv += ["--users", str(users), "--requests", str(requests)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
    pin(proc.pid, cores)
    out, _ = proc.communicate(timeout=LIMIT_S)
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def _asyncio(target: str, users: int, requests: int, cores: frozenset[int]) -> dict[str, Any]:
    """A master and one worker of the lab's locustfile; CPU of the worker and its herd process
    from the release on, by sampling."""
    herd = HerdSettings(users=users, requests=requests, key_prefix=KEY_PREFIX, deadline_s=60.0)
    port = free_port()
    with (
        tempfile.TemporaryDirectory(prefix="herdlab-locust-bench-") as tmp,
        (Path(tmp) / "log").open("wb") as log,
    ):
        out = Path(tmp) / "herd.json"
        master = subprocess.Popen(
            master_argv(herd, target, None, 1, port, out), stdout=log, stderr=subprocess.STDOUT
        )
        worker = subprocess.Popen(worker_argv(port), stdout=log, stderr=subprocess.STDOUT)
        process = psutil.Process(worker.pid)
        samples: list[tuple[int, float]] = []
        deadline = time.monotonic() + LIMIT_S
        while master.poll() is None and time.monotonic() < deadline:
            pin(worker.pid, cores)
            for child in process.children(recursive=True):
                pin(child.pid, cores)
            samples.append((time.time_ns(), _tree_cpu_s(process)))
            time.sleep(POLL_S)
        master.wait(timeout=10)
        worker.wait(timeout=30)
        doc: dict[str, Any] = json.loads(out.read_text())
    release_ns = doc["release"]["release_ns"]
    done_ns = release_ns + round(doc["seconds"] * 1e9)
    at_release = max((cpu for at, cpu in samples if at <= release_ns), default=0.0)
    # the herd process ends (and leaves the tree) right after its last answer
    at_done = max(cpu for at, cpu in samples if at <= done_ns + round(POLL_S * 1e9))
    cpu_s = at_done - at_release
    return {
        "users": users,
        "requests": doc["sent"],
        "failures": doc["sent"] - doc["ok"],
        "release_spread_s": doc["workers"][0]["release_spread_s"],
        "seconds": doc["seconds"],
        "cpu_s": cpu_s,
        "requests_per_cpu_s": doc["sent"] / cpu_s if cpu_s > 0 else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    plan = cpu_plan()
    figures: dict[str, Any] = {"machine": plan.describe()}
    with lab_stack(plan, ["--latency", "5ms", "--spread", "0ms"], ["--ttl", "1h"]) as (
        _,
        _db,
        cache,
    ):
        get(cache.target, f"{KEY_PREFIX}0", 10.0)
        for name, run in (("gevent", _gevent), ("asyncio", _asyncio)):
            figures[name] = {
                "throughput": run(cache.target, args.users, args.requests, plan.client),
                "burst": run(cache.target, args.burst, 1, plan.client),
            }
    for kind in ("throughput", "burst"):
        a, g = figures["asyncio"][kind], figures["gevent"][kind]
        figures[f"{kind}_ratio_asyncio_over_gevent"] = {
            "requests_per_cpu_s": (a["requests_per_cpu_s"] or 0) / (g["requests_per_cpu_s"] or 1),
            "release_spread": a["release_spread_s"] / g["release_spread_s"],
        }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
