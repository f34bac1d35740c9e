"""The local stack's Redis: the `redis-server` on PATH, a loopback-only config without
persistence, and a readiness probe (PING) that needs no client library."""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

from chaos.lab.backends.base import BackendError
from chaos.lab.ports import HOST

REDIS_INSTALL = "redis-server not found on PATH; install it (e.g. apt-get install redis-server)"


def redis_server() -> str:
    """The `redis-server` on PATH; BackendError saying how to install it otherwise."""
    found = shutil.which("redis-server")
    if found is None:
        raise BackendError(REDIS_INSTALL)
    return found


def redis_config(port: int, directory: Path) -> str:
    """A redis-server config for the lab: loopback only, no persistence, in `directory`."""
    return "\n".join(
        [
            f"bind {HOST}",
            f"port {port}",
            "protected-mode yes",
            'save ""',
            "appendonly no",
            f"dir {directory}",
            "daemonize no",
            'logfile ""',
            "",
        ]
    )


def redis_ping(address: str, timeout_s: float) -> bool:
    """True once a redis-server answers PING on `address` (HOST:PORT), within `timeout_s`."""
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def wait_redis(address: str, timeout_s: float, alive: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and alive():
        if redis_ping(address, 0.5):
            return True
        time.sleep(0.01)
    return False
