"""The kernel limits a process holding thousands of connections meets, and raising what it may.

Every socket is an open file: a server holding 20,000 connections needs more than 20,000 open
files, and so does a herd process holding as many channels, and the wire proxy in front of it
twice as many. A process may raise its soft `RLIMIT_NOFILE` up to its hard limit, and past it
only with privileges (root or CAP_SYS_RESOURCE; else it takes the limit of whoever started it);
the lab's servers, the proxy and the herd raise what they may at start and say what they have.
Host-wide bounds no process can change are read for the record: ephemeral ports per source
address (`ip_local_port_range`), the accept queue (`somaxconn`) and the SYN queue
(`tcp_max_syn_backlog`).
"""

from __future__ import annotations

import contextlib
import resource
from pathlib import Path

# Open files a lab process asks for where it may raise its hard limit: a proxy in front of a
# server holding 20,000 connections holds 40,000 sockets; within every Linux's `nr_open`.
PRIVILEGED_OPEN_FILES = 262_144
SYSCTLS = {
    "somaxconn": "/proc/sys/net/core/somaxconn",
    "tcp_max_syn_backlog": "/proc/sys/net/ipv4/tcp_max_syn_backlog",
    "ip_local_port_range": "/proc/sys/net/ipv4/ip_local_port_range",
}


def raise_open_files() -> tuple[int, int]:
    """Raises this process's open-files limit: both limits to `PRIVILEGED_OPEN_FILES` where the
    process may raise its hard limit (root, CAP_SYS_RESOURCE), else the soft one to the hard
    one; returns (soft, hard) as they are afterwards (unchanged when the kernel refuses)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < PRIVILEGED_OPEN_FILES:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (PRIVILEGED_OPEN_FILES,) * 2)
            return resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft, hard
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def host_limits() -> dict[str, str]:
    """The host's connection limits by sysctl name, as the kernel prints them ("" if unreadable)."""
    found = {}
    for name, path in SYSCTLS.items():
        try:
            found[name] = " ".join(Path(path).read_text().split())
        except OSError:
            found[name] = ""
    return found


def listen_drops() -> dict[str, int]:
    """The kernel's counts (this network namespace, every listener) of connections its accept
    queues could not take: `ListenOverflows` (queue full) and `ListenDrops` (dropped for any
    reason, overflows included), from /proc/net/netstat; {} where it cannot be read."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return {}
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            row = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            return {
                name: int(row[name]) for name in ("ListenOverflows", "ListenDrops") if name in row
            }
    return {}
