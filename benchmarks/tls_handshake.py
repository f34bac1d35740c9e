"""Section `tls_handshake`: what a new connection costs the server, plaintext against TLS, side by
side in one run.

Two `db-service` processes run at once, the same flags but TLS (a certificate of
`chaos.lab.tls`: ECDSA P-256, the lab's own CA) on one, both pinned to the server cores. In each
round a client process on the client cores (`python -m benchmarks.tls_handshake`) opens N
channels to one server, each on its own connection (`local_pool`, i.e.
`grpc.use_local_subchannel_pool`), makes one health check on each and closes it; then the same
against the other server, the order reversed every round. The server's CPU time (user + system,
all threads) is read before the client starts and again once the server holds no connection but
its listener (its teardown of the last ones is counted, without sleeping for it), so the figure
is the server's CPU per connection: accept, TLS handshake (TLS only), HTTP/2 setup, one call,
teardown. The clients connect one after another: this is the cost of a connection, not the most
the server can accept at once.

Figures: per mode, the median over rounds of the server's CPU microseconds per connection and
the client's wall time per connection; `ratio` (TLS / plaintext, per round, then their median,
range and 95% interval); `handshake_us` the median of the per-round differences (what TLS adds).

`render` writes the section's part of BENCHMARKS.md from its results (under its `TITLE`),
`summary_rows` its rows of the report's summary; `benchmarks.report` assembles them. Run as a
module it is the client: `python -m benchmarks.tls_handshake --target HOST:PORT [--ca FILE] -n N`
prints `{"wall_s": ...}`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks import markdown as md
from benchmarks.stats import median, median_interval, ratio
from benchmarks.system import CpuPlan, cpu_seconds, run_json, spawn, stop, wait_until
from chaos.lab.ports import HOST, free_port
from chaos.lab.tls import make_certs
from herdlab.grpcutil import channel_options, sync_channel, wait_serving

# The section's title in BENCHMARKS.md.
TITLE = "TLS handshake cost per connection"

MODES = ("plaintext", "tls")
READY_TIMEOUT_S = 20.0
DRAIN_TIMEOUT_S = 30.0  # the server's teardown of a round's last connections
CALL_TIMEOUT_S = 10.0
WARMUP_CONNECTIONS = 50  # per server, before the first round: imports, first-call paths


def connect(target: str, n: int, ca: str | None) -> float:
    """`n` channels to `target`, one connection each, one health check each, closed after it;
    returns the wall time it took."""
    started = time.perf_counter()
    for _ in range(n):
        with sync_channel(target, channel_options(local_pool=True), ca) as channel:
            health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S
            )
    return time.perf_counter() - started


def _drained(pid: int) -> Callable[[], bool]:
    """Whether the server `pid` holds no connection but its listener."""
    proc = psutil.Process(pid)
    return lambda: all(c.status == psutil.CONN_LISTEN for c in proc.net_connections())


def _alive(proc: subprocess.Popen[bytes]) -> Callable[[], bool]:
    return lambda: proc.poll() is None


def _client(plan: CpuPlan, target: str, ca: str | None, n: int) -> float:
    argv = [sys.executable, "-m", "benchmarks.tls_handshake", "--target", target, "-n", str(n)]
    line, _ = run_json([*argv, *(["--ca", ca] if ca else [])], plan.client, 60.0 + n)
    return float(json.loads(line)["wall_s"])


def run(plan: CpuPlan, connections: int, rounds: int) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="herdlab-bench-tls-"))
    certs = make_certs(folder / "tls")
    cas = {"plaintext": None, "tls": str(certs.ca)}
    servers = {}
    try:
        for mode in MODES:
            port = free_port()
            argv = [sys.executable, "-m", "db_service", "--host", HOST, "--port", str(port)]
            argv += ["--metrics-port", "0", *(certs.server_args() if mode == "tls" else [])]
            proc = spawn(argv, plan.server, folder / f"{mode}.log")
            target = f"{HOST}:{port}"
            servers[mode] = (proc, target)
            if not wait_serving(target, READY_TIMEOUT_S, alive=_alive(proc), ca=cas[mode]):
                raise RuntimeError(f"db-service ({mode}) did not serve on {target}")
            _client(plan, target, cas[mode], WARMUP_CONNECTIONS)
        cpu: dict[str, list[float]] = {mode: [] for mode in MODES}
        wall: dict[str, list[float]] = {mode: [] for mode in MODES}
        for number in range(rounds):
            for mode in MODES if number % 2 == 0 else MODES[::-1]:
                proc, target = servers[mode]
                before = cpu_seconds(proc.pid)
                wall_s = _client(plan, target, cas[mode], connections)
                if not wait_until(_drained(proc.pid), DRAIN_TIMEOUT_S):
                    raise RuntimeError(f"db-service ({mode}) still held connections")
                cpu[mode].append((cpu_seconds(proc.pid) - before) / connections * 1e6)
                wall[mode].append(wall_s / connections * 1e6)
    finally:
        for proc, _ in servers.values():
            stop(proc)
    paired = [ratio(t, p) for t, p in zip(cpu["tls"], cpu["plaintext"], strict=True)]
    known = [r for r in paired if r is not None]
    return {
        "connections_per_round": connections,
        "rounds": rounds,
        "certificate": "ECDSA P-256",
        **{
            mode: {
                "server_cpu_us_per_connection": round(median(cpu[mode]), 1),
                "server_cpu_us_by_round": [round(x, 1) for x in cpu[mode]],
                "client_wall_us_per_connection": round(median(wall[mode]), 1),
            }
            for mode in MODES
        },
        "ratio": round(median(known), 3) if known else None,
        "paired_ratios": paired,
        "ratio_interval": median_interval(known),
        "handshake_us": round(
            median([t - p for t, p in zip(cpu["tls"], cpu["plaintext"], strict=True)]), 1
        ),
    }


def render(t: dict[str, Any]) -> list[str]:
    plain, tls = t["plaintext"], t["tls"]
    spread = [x for x in t["paired_ratios"] if x is not None]
    interval = t["ratio_interval"]
    rows = [
        [
            mode,
            f"{t[mode]['server_cpu_us_per_connection']:,.1f}",
            ", ".join(f"{x:,.0f}" for x in t[mode]["server_cpu_us_by_round"]),
            f"{t[mode]['client_wall_us_per_connection']:,.1f}",
        ]
        for mode in MODES
    ]
    return [
        f"Two `db-service` processes side by side, one plaintext and one TLS ({t['certificate']} "
        f"certificate of the lab's CA), the same flags otherwise. In each of {t['rounds']} "
        f"round(s) a client process opens {t['connections_per_round']:,} connections to each "
        "server, one after another (a channel each, one health check, closed), the order "
        "reversed every round; the figure is the server process's CPU time (user + system) per "
        "connection, from before the client starts until the server holds no connection but its "
        "listener: accept, TLS handshake, HTTP/2 setup, one call, teardown.",
        "",
        *md.table(
            [
                "mode",
                "server CPU µs per connection (median)",
                "per round",
                "client wall µs per connection",
            ],
            rows,
        ),
        f"TLS / plaintext server CPU per connection: **{md.times(t['ratio'])}** (median of the "
        "rounds' ratios; per round "
        + ", ".join(f"{x}" for x in t["paired_ratios"])
        + (f"; range {min(spread)}-{max(spread)}" if spread else "")
        + (f"; 95% interval of the median {interval[0]}-{interval[1]}" if interval else "")
        + f"). What TLS adds per connection on the server: {t['handshake_us']:,.0f} µs of CPU "
        "(median of the rounds' differences; plaintext "
        f"{plain['server_cpu_us_per_connection']:,.0f} µs, TLS "
        f"{tls['server_cpu_us_per_connection']:,.0f} µs).",
        "",
    ]


def summary_rows(t: dict[str, Any]) -> list[list[str]]:
    """The summary's rows for this section: figure, limit, distance."""
    return [
        [
            f"TLS: {t['tls']['server_cpu_us_per_connection']:,.0f} µs server CPU per connection",
            f"plaintext {t['plaintext']['server_cpu_us_per_connection']:,.0f} µs",
            md.times(t["ratio"]),
        ]
    ]


def main(args: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.tls_handshake",
        description="The client of the tls_handshake section: N connections, one call each.",
    )
    parser.add_argument("--target", required=True)
    parser.add_argument("--ca", default=None, help="verify the server against this CA (TLS)")
    parser.add_argument("-n", "--connections", type=int, default=500)
    parsed = parser.parse_args(args)
    print(json.dumps({"wall_s": connect(parsed.target, parsed.connections, parsed.ca)}))


if __name__ == "__main__":
    main()
