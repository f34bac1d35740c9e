"""`python -m herdlab.healthcheck [TARGET]`: exit 0 if TARGET's grpc.health.v1 says SERVING.

The container healthcheck of the lab's image. TARGET is host:port, by default the value of
`HERDLAB_HEALTH_TARGET`; anything but SERVING within the timeout (unreachable, NOT_SERVING while
a server drains, no answer) exits 1 with one line on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys

from herdlab.config import parse_duration
from herdlab.grpcutil import wait_serving

ENV_TARGET = "HERDLAB_HEALTH_TARGET"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m herdlab.healthcheck", description="grpc.health.v1 check of a lab service."
    )
    parser.add_argument(
        "target",
        nargs="?",
        default=os.environ.get(ENV_TARGET),
        help=f"host:port of the gRPC server [default: ${ENV_TARGET}]",
    )
    parser.add_argument("--timeout", default="2s", help="How long to wait for SERVING.")
    args = parser.parse_args(argv)
    if not args.target:
        print(f"healthcheck: no target: give host:port or set {ENV_TARGET}", file=sys.stderr)
        return 1
    try:
        timeout_s = parse_duration(args.timeout)
    except ValueError as exc:
        print(f"healthcheck: {exc}", file=sys.stderr)
        return 1
    if wait_serving(args.target, timeout_s):
        return 0
    print(f"healthcheck: {args.target} not SERVING within {args.timeout}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
