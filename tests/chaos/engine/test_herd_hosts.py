"""The herd's workers as hosts of their own (`chaos.lab.hosts`): a real master and two real
workers in two network namespaces the lab makes, against a real stack; real signals to the
controller. Counts add up, the cache was reached from the two hosts' addresses, and nothing of
the hosts is left after the run, after SIGTERM or after SIGKILL of the controller. Skipped
where namespaces cannot be made."""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import os
import shutil
import signal
import subprocess
import sys

import psutil
import pytest

from chaos.engine.herd_settings import HerdSettings
from chaos.engine.herd_workers import run_locust
from chaos.lab.backends.local import StackInfo
from chaos.lab.hosts import NETWORK, Hosts, HostsUnavailable, namespaces, wait_dead
from chaos.lab.ports import free_port


def _unavailable() -> str | None:
    if importlib.util.find_spec("locust") is None:
        return "needs the locust extra"
    try:
        with Hosts(1):
            return None
    except HostsUnavailable as exc:
        return f"network namespaces cannot be made here: {exc}"


_WHY = _unavailable()
pytestmark = pytest.mark.skipif(_WHY is not None, reason=_WHY or "")
LIMIT_S = 90.0


def _left_by(pid: int) -> list[str]:
    """Namespaces and links of `pid`'s hosts still on this machine."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    ours = [n for n in namespaces() if n.startswith(f"herdlab-{pid}-")]
    return ours + [line for line in links.stdout.splitlines() if f" hl{pid}r" in line]


def test_counts_add_up_over_two_hosts(stack_info: StackInfo) -> None:
    herd = HerdSettings(users=200, requests=2, keys=20, workers=2, hosts=True, key_prefix="hosts-")
    said: list[str] = []
    target = stack_info.services["cache"].grpc
    doc, _ = run_locust(herd, target, None, 2, free_port(), say=said.append)
    assert said == []  # no fallback to plain processes
    assert (doc["sent"], doc["lost"], doc["unreported"]) == (400, 0, 0)
    assert doc["ok"] + sum(doc["errors"].values()) == 400
    rows = {row["address"]: row for row in doc["workers"]}
    hosts = {host["address"]: host for host in doc["hosts"]}
    assert set(rows) == set(hosts) and len(hosts) == 2
    assert all(ipaddress.ip_address(a) in NETWORK for a in hosts)
    for address, host in hosts.items():
        assert rows[address]["state"] == "done"
        # The cache was reached from this host: the relay accepted its channels there.
        assert host["cache_connections"] >= rows[address]["connected_channels"] > 0
    assert _left_by(os.getpid()) == []


def _controller(stack_info: StackInfo) -> subprocess.Popen[bytes]:
    """`chaos herd --workers 2 --hosts` with a herd that runs far longer than the test."""
    argv = [sys.executable, "-m", "chaos", "herd", "--workers", "2", "--hosts", "--users", "4"]
    target = stack_info.services["cache"].grpc
    return subprocess.Popen(
        [*argv, "--requests", "10000", "--think", "100ms", "--target", target, "--json"],
        stdout=subprocess.DEVNULL,
    )


def _hosts_running(controller: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """The processes in the controller's two hosts, once both workers run there (bounded)."""
    for _ in range(int(LIMIT_S / 0.05)):
        assert controller.poll() is None, "the controller ended before its hosts ran"
        inside = []
        for name in namespaces():
            if name.startswith(f"herdlab-{controller.pid}-"):
                pids = subprocess.run(
                    ["ip", "netns", "pids", name], capture_output=True, text=True, check=False
                ).stdout.split()
                procs = []
                for pid in pids:
                    with contextlib.suppress(psutil.NoSuchProcess):  # a short-lived one
                        procs.append(psutil.Process(int(pid)))
                inside.append(procs)
        if len(inside) == 2 and all(inside):
            return [p for procs in inside for p in procs]
        psutil.wait_procs([], timeout=0.05)
    raise AssertionError("the controller's hosts did not come up")


def test_sigterm_of_the_controller_removes_its_hosts(stack_info: StackInfo) -> None:
    controller = _controller(stack_info)
    try:
        inside = _hosts_running(controller)
        controller.send_signal(signal.SIGTERM)
        assert controller.wait(timeout=LIMIT_S) == 128 + signal.SIGTERM
    finally:
        controller.kill()
        controller.wait()
    assert _left_by(controller.pid) == []
    assert wait_dead(inside, LIMIT_S) == []


def test_sigkill_of_the_controller_leaves_its_hosts_to_the_watcher(stack_info: StackInfo) -> None:
    controller = _controller(stack_info)
    orphans: list[psutil.Process] = []
    try:
        inside = _hosts_running(controller)
        orphans = psutil.Process(controller.pid).children()  # the master, outside the hosts
        watchers = [
            p for p in orphans if p.cmdline()[-2:] == ["chaos.lab.hosts", str(controller.pid)]
        ]
        assert len(watchers) == 1
        controller.kill()
        assert psutil.wait_procs(watchers, timeout=LIMIT_S)[1] == []
    finally:
        controller.kill()
        controller.wait()
        for proc in orphans:  # no controller is left to end them
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
    assert _left_by(controller.pid) == []
    assert wait_dead(inside, LIMIT_S) == []


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_without_privileges_hosts_are_unavailable_in_one_line() -> None:
    """A process without CAP_NET_ADMIN (and the rest) cannot make hosts: one line why, and
    nothing of them left behind."""
    probe = (
        "import os\n"
        "from chaos.engine.herd_workers import plain\n"
        "from chaos.lab.hosts import Hosts, HostsUnavailable\n"
        "try:\n"
        "    with Hosts(2): pass\n"
        "except HostsUnavailable as exc:\n"
        "    print(os.getpid(), plain(str(exc)))\n"
    )
    done = subprocess.run(
        ["setpriv", "--inh-caps=-all", "--bounding-set=-all", sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=LIMIT_S,
    )
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    pid, said = line.split(" ", 1)
    assert said.startswith("hosts: no network namespaces here (ip netns add herdlab-"), said
    assert said.endswith("; the workers run as plain processes")
    assert _left_by(int(pid)) == []
