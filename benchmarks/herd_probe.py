"""One herd in its own process (`chaos.engine.herd.run_herd`, what `chaos herd` runs): N users
on one warm key. Prints one JSON line: the release spread (barrier opening to the last user's first
send), the herd's summary, and this process's memory: RSS before the herd and peak (VmHWM) after.

    python -m benchmarks.herd_probe --target HOST:PORT --users N [--key K] [--channels M]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os

from benchmarks.system import peak_rss_bytes, rss_bytes
from chaos.engine.herd import HerdConfig, run_herd
from herdlab.retry import RetryPolicy

DEADLINE_S = 60.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--key", default="hot")
    parser.add_argument("--channels", type=int, default=8)
    args = parser.parse_args()
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
    result = asyncio.run(run_herd(config))
    peak = peak_rss_bytes(pid)
    summary = result.summary()
    print(
        json.dumps(
            {
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
            }
        )
    )


if __name__ == "__main__":
    main()
