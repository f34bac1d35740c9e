"""One herd in its own process (`chaos.engine.herd.run_herd`, what `chaos herd` runs): N users
on one warm key. Prints one JSON line: the release spread (barrier opening to the last user's first
send), the herd's summary, this process's memory (RSS before the herd and peak, VmHWM, after) and
its CPU seconds from the release to the last answer.

With `--workers W` the same herd runs on a Locust master and W local workers (`chaos herd
--workers W`, `chaos.engine.herd_workers.run_locust`) instead: the release spread is then across
the workers (the master's release instant to the last user's first send on any worker, each
worker's clock offset taken off), RSS and CPU those of the workers' herd processes.

    python -m benchmarks.herd_probe --target HOST:PORT --users N [--key K] [--channels M] \\
        [--workers W]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

from benchmarks.system import peak_rss_bytes, rss_bytes
from chaos.engine.herd import HerdConfig, HerdHooks, run_herd
from chaos.engine.herd_settings import HerdSettings
from chaos.engine.herd_workers import run_locust
from chaos.lab.ports import free_port
from herdlab.retry import RetryPolicy

DEADLINE_S = 60.0


def _one_process(args: argparse.Namespace) -> dict[str, Any]:
    config = HerdConfig(
        target=args.target,
        users=args.users,
        keys=1,
        key_prefix=args.key,
        channels=min(args.channels, args.users),
        policy=RetryPolicy(name="none", max_total_s=DEADLINE_S, attempt_timeout_s=DEADLINE_S),
    )
    pid = os.getpid()
    before = rss_bytes(pid)
    released_cpu: list[float] = []
    hooks = HerdHooks(on_release=lambda: released_cpu.append(time.process_time()))
    result = asyncio.run(run_herd(config, hooks))
    cpu_s = time.process_time() - released_cpu[0]
    peak = peak_rss_bytes(pid)
    summary = result.summary()
    return {
        "users": args.users,
        "release_spread_s": round(result.release_spread_s, 4),
        "ok": summary["ok"],
        "errors": summary["errors"],
        "lost": summary["lost"],
        "latency_s": summary["latency_s"],
        "seconds": round(result.seconds, 3),
        "rss_before_bytes": before,
        "rss_peak_bytes": peak,
        "rss_per_user_bytes": round((peak - before) / args.users),
        "cpu_s": round(cpu_s, 3),
    }


def _workers(args: argparse.Namespace) -> dict[str, Any]:
    herd = HerdSettings(
        users=args.users,
        keys=1,
        key_prefix=args.key,
        channels=min(args.channels, args.users),
        deadline_s=DEADLINE_S,
        workers=args.workers,
    )
    doc, _ = run_locust(herd, args.target, None, args.workers, free_port())
    return {
        "users": args.users,
        "workers": args.workers,
        "release_spread_s": round(doc["release"]["spread_s"] or 0.0, 4),
        "worker_spreads_s": [row["release_spread_s"] for row in doc["workers"]],
        "ok": doc["ok"],
        "errors": doc["errors"],
        "lost": doc["lost"],
        "unreported": doc["unreported"],
        "latency_s": doc["latency_s"],
        "seconds": round(doc["seconds"], 3),
        "rss_per_user_bytes": doc["rss_per_user_bytes"],
        "cpu_s": round(sum(row["cpu_s"] or 0.0 for row in doc["workers"]), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--key", default="hot")
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(_workers(args) if args.workers else _one_process(args)))


if __name__ == "__main__":
    main()
