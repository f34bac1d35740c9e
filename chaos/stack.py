"""The local stack: the lab's services as real processes on 127.0.0.1, and the local chaos backend.

`up` starts the DB, waits until it is SERVING, then starts the cache pointed at it; `down` stops
both (SIGTERM, then SIGKILL after the grace period) and leaves no process behind. With
`replicas` R > 1 the cache runs as R processes, `cache-1` .. `cache-R`; with the shared store
(`store="redis"`) a `redis-server` from PATH runs first (`redis`, on 127.0.0.1, a free port, no
persistence, its config and directory in the state dir) and every replica keeps its values and
leases there. The services of a stack are the names in its state file, in start order. What was
started is written to `<state_dir>/stack.json`, so separate `chaos` invocations (up, kill,
restore, status, down) act on the same processes. Each process is identified by pid AND start
time, so a recycled pid is never signalled.

Ports not given are chosen free by the OS. `restore` starts a service again with the same command
line, hence on the same address: clients reconnect to where they were.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from chaos.backends.base import Backend, BackendError, ServiceInfo, check_service
from herdlab.grpcutil import wait_serving

HOST = "127.0.0.1"
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
BIND_TRIES = 3
STORES = ("local", "redis")
MAX_REPLICAS = 16
REDIS_INSTALL = "redis-server not found on PATH; install it (e.g. apt-get install redis-server)"


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "herdlab"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServiceRecord:
    """What the state file keeps of one started service."""

    name: str
    argv: list[str]
    grpc: str
    metrics: str
    log: str
    pid: int | None = None
    started_at: float | None = None  # psutil create_time, to recognise the process
    state: str = "stopped"
    kind: str = "grpc"  # how readiness is checked: gRPC health, or "redis" (PING)


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


def cache_names(names: Iterable[str]) -> list[str]:
    """The cache's services among `names`: `cache`, or `cache-1` .. `cache-R` in order."""
    return [n for n in names if n == "cache" or n.startswith("cache-")]


@dataclass
class StackInfo:
    services: dict[str, ServiceInfo] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "services": {
                name: {"grpc": s.grpc, "metrics": s.metrics, "pid": s.pid, "state": s.state}
                for name, s in self.services.items()
            }
        }


class LocalStack(Backend):
    name = "local"

    def __init__(self, state_dir: Path | None = None) -> None:
        self.state_dir = state_dir or default_state_dir()
        self.state_file = self.state_dir / "stack.json"
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    # -- state ----------------------------------------------------------------------------------

    def _load(self) -> dict[str, ServiceRecord]:
        try:
            raw = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise BackendError(f"cannot read {self.state_file}: {exc}") from exc
        return {name: ServiceRecord(**record) for name, record in raw["services"].items()}

    def _save(self, records: dict[str, ServiceRecord]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"services": {n: asdict(r) for n, r in records.items()}}))
        tmp.replace(self.state_file)

    def _process(self, record: ServiceRecord) -> psutil.Process | None:
        """The live process of `record`, or None if it has exited (or the pid was recycled)."""
        if record.pid is None:
            return None
        try:
            proc = psutil.Process(record.pid)
            if record.started_at is not None and abs(proc.create_time() - record.started_at) > 0.5:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                self._reap(record.pid)
                return None
            return proc
        except psutil.NoSuchProcess:
            return None

    def _reap(self, pid: int) -> None:
        child = self._children.pop(pid, None)
        if child is not None:
            child.wait(timeout=STOP_TIMEOUT_S)

    def _info(self, record: ServiceRecord) -> ServiceInfo:
        proc = self._process(record)
        if proc is None:
            state, pid = "stopped", None
        else:
            state = "paused" if proc.status() == psutil.STATUS_STOPPED else "running"
            pid = record.pid
        return ServiceInfo(record.name, state, record.grpc, record.metrics, pid=pid)

    # -- lifecycle ------------------------------------------------------------------------------

    def is_up(self) -> bool:
        return any(self._process(r) is not None for r in self._load().values())

    def up(
        self,
        db_args: Sequence[str] = (),
        cache_args: Sequence[str] = (),
        *,
        db_port: int = 0,
        db_metrics_port: int = 0,
        cache_port: int = 0,
        cache_metrics_port: int = 0,
        timeout_s: float = READY_TIMEOUT_S,
        replicas: int = 1,
        store: str = "local",
    ) -> StackInfo:
        """Starts the DB (and Redis for the shared store) then the cache's replicas; returns once
        every one serves. A replica's ports are picked free (the cache's ports apply to one).

        Ports not given are picked free by the OS, then released for the service to bind: another
        process can take one in between. When every port was picked so, a service that could
        not bind its port is started again on fresh ones (at most `BIND_TRIES` times); ports the
        caller chose are never changed."""
        if store not in STORES:
            raise BackendError(f"store must be one of {', '.join(STORES)}, got {store!r}")
        if not 1 <= replicas <= MAX_REPLICAS:
            raise BackendError(f"replicas must be in 1..{MAX_REPLICAS}, got {replicas}")
        if replicas > 1 and (cache_port or cache_metrics_port):
            raise BackendError("cache ports can be chosen for one replica only")
        redis = redis_server() if store == "redis" else None
        if self.is_up():
            raise BackendError(
                f"a lab stack is already up (state in {self.state_dir}); run 'chaos down' first"
            )
        chosen = (db_port, db_metrics_port, cache_port, cache_metrics_port)
        for _ in range(BIND_TRIES - 1):
            try:
                return self._up(
                    db_args,
                    cache_args,
                    *chosen,
                    timeout_s=timeout_s,
                    replicas=replicas,
                    redis=redis,
                )
            except BackendError as exc:
                text = str(exc).lower()
                if any(chosen) or not ("bind" in text or "address already in use" in text):
                    raise
        return self._up(
            db_args, cache_args, *chosen, timeout_s=timeout_s, replicas=replicas, redis=redis
        )

    def _up(
        self,
        db_args: Sequence[str],
        cache_args: Sequence[str],
        db_port: int,
        db_metrics_port: int,
        cache_port: int,
        cache_metrics_port: int,
        *,
        timeout_s: float,
        replicas: int = 1,
        redis: str | None = None,
    ) -> StackInfo:
        db_port = db_port or free_port()
        db_metrics_port = db_metrics_port or free_port()
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        db_target = f"{HOST}:{db_port}"
        records = {
            "db": ServiceRecord(
                name="db",
                argv=[
                    sys.executable,
                    "-m",
                    "db_service",
                    "--host",
                    HOST,
                    "--port",
                    str(db_port),
                    "--metrics-host",
                    HOST,
                    "--metrics-port",
                    str(db_metrics_port),
                    *db_args,
                ],
                grpc=db_target,
                metrics=f"http://{HOST}:{db_metrics_port}/metrics",
                log=str(logs / "db.log"),
            ),
        }
        store_args: list[str] = []
        if redis is not None:
            records["redis"] = self._redis_record(redis, logs)
            store_args = ["--store", f"redis://{records['redis'].grpc}/0"]
        names = ["cache"] if replicas == 1 else [f"cache-{i}" for i in range(1, replicas + 1)]
        for name in names:
            port = cache_port or free_port()
            metrics_port = cache_metrics_port or free_port()
            records[name] = ServiceRecord(
                name=name,
                argv=[
                    sys.executable,
                    "-m",
                    "cache_service",
                    "--host",
                    HOST,
                    "--port",
                    str(port),
                    "--metrics-host",
                    HOST,
                    "--metrics-port",
                    str(metrics_port),
                    "--db-target",
                    db_target,
                    *cache_args,
                    *store_args,  # last: the stack's Redis wins over a `--store` in cache_args
                ],
                grpc=f"{HOST}:{port}",
                metrics=f"http://{HOST}:{metrics_port}/metrics",
                log=str(logs / f"{name}.log"),
            )
        self._save(records)
        try:
            for name in records:
                self._start(records, name, timeout_s)
        except BaseException:
            self.down()
            raise
        return self.status_info()

    def _redis_record(self, binary: str, logs: Path) -> ServiceRecord:
        port = free_port()
        directory = self.state_dir / "redis"
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "redis.conf"
        config.write_text(redis_config(port, directory))
        return ServiceRecord(
            name="redis",
            argv=[binary, str(config)],
            grpc=f"{HOST}:{port}",
            metrics="",
            log=str(logs / "redis.log"),
            kind="redis",
        )

    def _start(
        self,
        records: dict[str, ServiceRecord],
        name: str,
        timeout_s: float,
        extra_args: Sequence[str] = (),
    ) -> None:
        record = records[name]
        with open(record.log, "ab") as log:
            child = subprocess.Popen(
                [*record.argv, *extra_args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in the terminal reaches the controller only
            )
        self._children[child.pid] = child
        record.pid = child.pid
        record.started_at = psutil.Process(child.pid).create_time()
        record.state = "running"
        self._save(records)
        wait = wait_redis if record.kind == "redis" else wait_serving
        if not wait(record.grpc, timeout_s, alive=lambda: child.poll() is None):
            tail = _tail(Path(record.log))
            ready = "answer PING" if record.kind == "redis" else "become SERVING"
            raise BackendError(
                f"{name} did not {ready} on {record.grpc} within {timeout_s:g}s"
                + (f": {tail}" if tail else "")
            )

    def down(self) -> list[str]:
        """Stops every service (the caches first); returns the names that were running."""
        records = self._load()
        stopped = []
        for name in reversed(list(records)):
            record = records[name]
            proc = self._process(record)
            if proc is not None:
                self._stop(proc)
                stopped.append(name)
        self._reap_all()
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()
        return stopped

    def _stop(self, proc: psutil.Process) -> None:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGCONT)  # a paused process cannot act on SIGTERM
            proc.terminate()
            # psutil's wait: `down` returns only once the process is gone, reaped included.
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except psutil.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)

    def _reap_all(self) -> None:
        for pid in list(self._children):
            self._reap(pid)

    # -- Backend --------------------------------------------------------------------------------

    def status(self) -> dict[str, ServiceInfo]:
        return {name: self._info(record) for name, record in self._load().items()}

    def status_info(self) -> StackInfo:
        return StackInfo(self.status())

    def _record(self, service: str) -> tuple[dict[str, ServiceRecord], ServiceRecord]:
        check_service(service)
        records = self._load()
        if not records:
            raise BackendError("no lab stack is up; run 'chaos up' first")
        if service not in records:
            raise BackendError(
                f"the lab stack has no service {service!r}; it has {', '.join(records)}"
            )
        return records, records[service]

    def kill(self, service: str) -> ServiceInfo:
        records, record = self._record(service)
        proc = self._process(record)
        if proc is None:
            raise BackendError(f"{service} is not running")
        proc.kill()
        _exited(proc, STOP_TIMEOUT_S)
        if record.pid is not None:
            self._reap(record.pid)
        record.state = "stopped"
        self._save(records)
        return self._info(record)

    def restore(self, service: str, extra_args: Sequence[str] = ()) -> ServiceInfo:
        """Starts `service` again with its command line, plus `extra_args` for this start only
        (flags given later win, e.g. a new `--data-version` for the DB)."""
        records, record = self._record(service)
        if self._process(record) is not None:
            raise BackendError(f"{service} is already running (pid {record.pid})")
        self._start(records, service, READY_TIMEOUT_S, extra_args)
        return self._info(record)

    def _signal(self, service: str, sig: signal.Signals, expect: str) -> ServiceInfo:
        records, record = self._record(service)
        proc = self._process(record)
        if proc is None:
            raise BackendError(f"{service} is not running")
        proc.send_signal(sig)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while self._info(record).state != expect and time.monotonic() < deadline:
            time.sleep(0.005)
        record.state = expect
        self._save(records)
        return self._info(record)

    def pause(self, service: str) -> ServiceInfo:
        return self._signal(service, signal.SIGSTOP, "paused")

    def resume(self, service: str) -> ServiceInfo:
        return self._signal(service, signal.SIGCONT, "running")


def _exited(proc: psutil.Process, timeout_s: float) -> bool:
    """True once `proc` has exited, within `timeout_s`. A zombie counts as exited: a process
    started by an earlier `chaos` invocation is reaped by init, which may take a second, and an
    outage should not be that second longer than asked."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.005)
    return False


def _tail(log: Path, lines: int = 1) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])
