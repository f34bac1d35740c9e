"""What a new connection costs the server, plaintext against TLS: `python -m
benchmarks.tls_handshake`.

One `db-service` process per mode (plaintext, then TLS with a certificate of `chaos.lab.tls`),
the same flags otherwise. N channels, each on its own connection (`local_pool`, i.e.
`grpc.use_local_subchannel_pool`), make one health check each and close; the server process's CPU
time (user + system, psutil) is read before and after, so the figure is the server's CPU per
connection: accept, HTTP/2 setup, one call, teardown, plus the TLS handshake in TLS mode. Each
mode runs `--rounds` times; the median round is reported, with the client's wall time per
connection. The client runs in this process, so keep the machine otherwise idle.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chaos.lab.ports import HOST, free_port
from chaos.lab.tls import make_certs
from herdlab.grpcutil import channel_options, sync_channel, wait_serving

READY_TIMEOUT_S = 20.0


def _cpu_s(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def _connections(target: str, n: int, ca: str | None) -> None:
    """`n` channels, one connection each, one health check each, closed after it."""
    for _ in range(n):
        with sync_channel(target, channel_options(local_pool=True), ca) as channel:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)


def measure(n: int, rounds: int, tls_args: list[str], ca: str | None) -> dict[str, float]:
    """The median round's server CPU and client wall time per connection, in microseconds."""
    port = free_port()
    argv = [sys.executable, "-m", "db_service", "--host", HOST, "--port", str(port)]
    argv += ["--metrics-port", "0", *tls_args]
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = f"{HOST}:{port}"
    try:
        if not wait_serving(target, READY_TIMEOUT_S, alive=lambda: child.poll() is None, ca=ca):
            raise RuntimeError(f"db-service did not serve on {target}")
        proc = psutil.Process(child.pid)
        _connections(target, min(n, 50), ca)  # warm-up: imports, first-call paths
        cpu, wall = [], []
        for _ in range(rounds):
            cpu_before, started = _cpu_s(proc), time.perf_counter()
            _connections(target, n, ca)
            wall.append((time.perf_counter() - started) / n * 1e6)
            time.sleep(0.2)  # the server's teardown of the last connections
            cpu.append((_cpu_s(proc) - cpu_before) / n * 1e6)
        return {
            "server_cpu_us_per_connection": round(statistics.median(cpu), 1),
            "client_wall_us_per_connection": round(statistics.median(wall), 1),
        }
    finally:
        child.terminate()
        child.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description="Server CPU per new connection, plaintext vs TLS.")
    parser.add_argument("-n", "--connections", type=int, default=500, help="per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    certs = make_certs(Path(tempfile.mkdtemp(prefix="herdlab-tls-bench-")))
    results = {
        "connections_per_round": args.connections,
        "rounds": args.rounds,
        "plaintext": measure(args.connections, args.rounds, [], None),
        "tls": measure(args.connections, args.rounds, certs.server_args(), str(certs.ca)),
    }
    plain = results["plaintext"]["server_cpu_us_per_connection"]
    tls = results["tls"]["server_cpu_us_per_connection"]
    results["tls_over_plaintext_server_cpu"] = round(tls / plain, 2) if plain else None
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
