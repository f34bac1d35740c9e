"""Hosts of their own: network namespaces the lab makes so processes on one machine run as
separate hosts, each with its own network stack and address.

Host i of a run by process PID is the namespace `herdlab-PID-i` and a veth pair: `hlPIDri` in the
root namespace, `hlPIDni` inside. Each pair gets a /30 of 198.18.0.0/15 (RFC 2544's benchmarking
block) that no interface of the machine uses yet: the root side's address (`outer`) and the
host's own (`inner`). Those addresses exist only on those veths; the namespace has its loopback,
its veth and the /30's own route, no default route, so the one place a host can reach is its
outer address.

The lab's services listen on 127.0.0.1, which a namespace cannot reach. The `Relay` brings the
ports a host needs to its outer address: a wire link (`chaos.wire.proxy.Link`, faults none) per
host and port, `outer:PORT` -> `127.0.0.1:PORT`, in a thread of the process that made the hosts.
Each connection a host opens is one connection the relay opens on loopback; the relay counts what
it accepted per host (`connections`), since the service itself sees the relay's loopback address.

Teardown: `Hosts` removes its namespaces (after killing every process still inside: a namespace
lives on while a process is in it, and its veth pair with it) when its block ends, by an error,
Ctrl-C or SIGTERM (the controller turns SIGTERM into Ctrl-C). A controller killed by SIGKILL runs
no code, so `Hosts` starts a watcher beside it, `python -m chaos.lab.hosts OWNER_PID`, in a
session of its own, that waits for the owner to exit (`chaos.lab.tether.wait_exit`: a pidfd) and
then removes the owner's hosts; a normal teardown stops the watcher first. As a last resort every
`Hosts` sweeps, before making its own, the lab's namespaces and veths whose owner is gone.

Why no library: pyroute2 could make the same namespaces in-process, but the `ip` command
(iproute2) is on every machine that can make namespaces at all, `ip netns exec` is how a process
is started inside one, and the lab makes a handful of each per run.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from chaos.lab import tether
from chaos.lab.ports import HOST
from chaos.wire.proxy import Link
from herdlab import loop

PREFIX = "herdlab-"
NETWORK = ipaddress.ip_network("198.18.0.0/15")
BLOCK = 4  # a /30 per host: network, outer, inner, broadcast
MAX_HOSTS = 64
IP_TIMEOUT_S = 10.0
RELAY_START_S = 10.0
POLL_S = 0.02
LOCK = Path(tempfile.gettempdir()) / "herdlab-hosts.lock"
_NAMESPACE = re.compile(rf"^{PREFIX}(\d+)-(\d+)$")
_VETH = re.compile(r"^hl(\d+)r(\d+)$")


class HostsUnavailable(RuntimeError):
    """Namespaces cannot be made here (no `ip`, no privileges): the reason, in one line."""


@dataclass(frozen=True)
class Host:
    """One host: its namespace, the root side of its veth pair, and the pair's addresses."""

    index: int
    namespace: str
    veth: str
    outer: str  # the root side's address: where the host reaches the lab
    inner: str  # the host's own address

    def argv(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside this host."""
        return ["ip", "netns", "exec", self.namespace, *argv]


def _ip(*args: str) -> str:
    try:
        done = subprocess.run(
            ["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HostsUnavailable(f"ip {' '.join(args)}: {exc}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["failed"])[-1]
        raise HostsUnavailable(f"ip {' '.join(args)}: {last}")
    return done.stdout


def problem() -> str | None:
    """Why this machine's `ip` cannot make hosts, or None (privileges show when making them)."""
    if shutil.which("ip") is None:
        return "no ip command (iproute2) on PATH"
    try:
        version = _ip("-V")
    except HostsUnavailable as exc:
        return str(exc)
    if "iproute2" not in version:
        return f"ip is not iproute2's ({version.strip()})"
    return None


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_dead(procs: Sequence[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Waits until every process of `procs` has exited (a zombie has: it holds no namespace
    any more, whoever is to reap it); returns those still running after `timeout_s`."""
    running = list(procs)
    deadline = time.monotonic() + timeout_s
    while running and time.monotonic() < deadline:
        running = [p for p in running if _alive(p.pid) and p.is_running()]
        if running:
            psutil.wait_procs(running, timeout=POLL_S)
    return running


def namespaces() -> list[str]:
    """The lab's namespaces on this machine."""
    names = [line.split()[0] for line in _ip("netns", "list").splitlines() if line.strip()]
    return [name for name in names if _NAMESPACE.match(name)]


def _veths() -> list[str]:
    names = [line.split(":")[1].strip().split("@")[0] for line in _ip("-o", "link").splitlines()]
    return [name for name in names if _VETH.match(name)]


def _remove_namespace(name: str) -> None:
    """Kills what runs inside (bounded: SIGKILL, waited on) and removes the namespace."""
    pids = [int(p) for p in _ip("netns", "pids", name).split()]
    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc = psutil.Process(pid)
            proc.kill()
            procs.append(proc)
    wait_dead(procs, IP_TIMEOUT_S)
    _ip("netns", "delete", name)


def sweep(owner: int | None = None) -> list[str]:
    """Removes the hosts of `owner`, or (None) of every owner that is gone; returns the
    namespaces and veths removed. A veth goes with its namespace; one left in the root namespace
    (its maker died before moving its twin in) is removed by name."""
    removed = []
    for pattern, found, remove in (
        (_NAMESPACE, namespaces, _remove_namespace),
        (_VETH, _veths, lambda name: _ip("link", "delete", name)),
    ):
        for name in found():
            match = pattern.match(name)
            assert match is not None
            pid = int(match.group(1))
            if pid == owner or (owner is None and not _alive(pid)):
                with contextlib.suppress(HostsUnavailable):  # gone meanwhile
                    remove(name)
                    removed.append(name)
    return removed


def _free_blocks(count: int) -> list[ipaddress.IPv4Address]:
    """The first addresses of `count` /30s of 198.18.0.0/15 with no address in use here."""
    used = set()
    for line in _ip("-4", "-o", "addr", "show").splitlines():
        address = ipaddress.ip_interface(line.split()[3]).ip
        if address in NETWORK:
            used.add(int(address) // BLOCK)
    first = int(NETWORK.network_address) // BLOCK
    blocks = []
    for block in range(first, first + NETWORK.num_addresses // BLOCK):
        if block not in used:
            blocks.append(ipaddress.IPv4Address(block * BLOCK))
            if len(blocks) == count:
                return blocks
    raise HostsUnavailable("no free /30 left in 198.18.0.0/15")


def _make(index: int, owner: int, base: ipaddress.IPv4Address) -> Host:
    host = Host(
        index=index,
        namespace=f"{PREFIX}{owner}-{index}",
        veth=f"hl{owner}r{index}",
        outer=str(base + 1),
        inner=str(base + 2),
    )
    inside = f"hl{owner}n{index}"
    _ip("netns", "add", host.namespace)
    _ip("link", "add", host.veth, "type", "veth", "peer", "name", inside)
    _ip("link", "set", inside, "netns", host.namespace)
    _ip("addr", "add", f"{host.outer}/30", "dev", host.veth)
    _ip("link", "set", host.veth, "up")
    _ip("-n", host.namespace, "addr", "add", f"{host.inner}/30", "dev", inside)
    _ip("-n", host.namespace, "link", "set", inside, "up")
    _ip("-n", host.namespace, "link", "set", "lo", "up")
    return host


@dataclass
class Hosts:
    """`count` hosts for the block, owned by this process: made on entry (HostsUnavailable,
    nothing left behind, when they cannot be), removed on exit."""

    count: int
    owner: int = field(default_factory=os.getpid)
    hosts: list[Host] = field(default_factory=list)
    _watcher: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> list[Host]:
        if not 1 <= self.count <= MAX_HOSTS:
            raise ValueError(f"hosts must be in 1..{MAX_HOSTS}, got {self.count}")
        reason = problem()
        if reason:
            raise HostsUnavailable(reason)
        try:
            with LOCK.open("a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # two runs never pick the same /30
                sweep()
                self._watcher = subprocess.Popen(
                    [sys.executable, "-m", "chaos.lab.hosts", str(self.owner)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
                for index, base in enumerate(_free_blocks(self.count)):
                    self.hosts.append(_make(index, self.owner, base))
        except BaseException:
            self.close()
            raise
        return self.hosts

    def close(self) -> None:
        with contextlib.suppress(HostsUnavailable):
            sweep(self.owner)
        self.hosts = []
        if self._watcher is not None:
            tether.release(self._watcher)
            self._watcher = None

    def __exit__(self, *_: object) -> None:
        self.close()


@dataclass
class Relay:
    """For each host and port, `outer:PORT` -> `127.0.0.1:PORT`, in a thread, for the block."""

    hosts: Sequence[Host]
    ports: Sequence[int]
    links: dict[tuple[str, int], Link] = field(default_factory=dict)
    _thread: threading.Thread | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    _error: BaseException | None = None

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        try:
            for host in self.hosts:
                for port in self.ports:
                    link = Link(f"{host.namespace}:{port}", HOST, port)
                    self.links[(host.inner, port)] = link
                    await link.start(host.outer, port)
        except BaseException as exc:
            self._error = exc
        self._ready.set()
        if self._error is None:
            await self._stop.wait()
        for link in self.links.values():
            await link.stop()

    def __enter__(self) -> Relay:
        self._thread = threading.Thread(target=loop.run, args=(self._serve(),), daemon=True)
        self._thread.start()
        if not self._ready.wait(RELAY_START_S) or self._error is not None:
            self.__exit__()
            raise HostsUnavailable(f"the hosts' relay did not start: {self._error}")
        return self

    def connections(self, ports: Sequence[int]) -> dict[str, int]:
        """Connections accepted from each host (by its address) on `ports`."""
        counts = {host.inner: 0 for host in self.hosts}
        for (inner, port), link in self.links.items():
            if port in ports:
                counts[inner] += link.stats.totals["accepted"]
        return counts

    def __exit__(self, *_: object) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # its loop already ended
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(RELAY_START_S)


def loopback_ports(target: str) -> list[int]:
    """The ports of a cache target on loopback (`HOST:PORT`, or an `ipv4:` list of them): what
    a host may reach. ValueError for any other address: a host reaches nothing else."""
    ports = []
    for part in target.removeprefix("ipv4:").split(","):
        address, _, port = part.rpartition(":")
        if address not in (HOST, "localhost") or not port.isdigit():
            raise ValueError(f"hosts reach the lab's stack on {HOST} only, not {part}")
        ports.append(int(port))
    return ports


def reached_from(target: str, host: Host) -> str:
    """`target` (on loopback) as `host` reaches it: at its outer address."""
    parts = [f"{host.outer}:{port}" for port in loopback_ports(target)]
    return ("ipv4:" if target.startswith("ipv4:") else "") + ",".join(parts)


def main(argv: list[str]) -> int:
    """The watcher: removes OWNER_PID's hosts once that process has exited."""
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m chaos.lab.hosts OWNER_PID", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the owner's release: its hosts are its own
    owner = int(argv[0])
    if tether.wait_exit(owner, tether.MAX_WATCH_S):
        with LOCK.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            sweep(owner)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
