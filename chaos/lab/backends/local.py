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

With `proxy` (`chaos up --proxy db,cache`) a third process, the wire-fault proxy (`chaos.wire`,
record `wire`), starts between the DB and the cache with a link in front of each service named:
the cache's DB target is then the proxy's `db` link, and clients of the cache reach it through
the `cache` link (`client_target`). The proxy is a process of its own, not a task inside a
`chaos` invocation, so faults put in force by one `chaos partition` outlive it and expire on the
proxy's own timer; it is stopped with the stack.

Logs: each process writes to `<state_dir>/logs/<name>.log`, which holds one stack's lines (every
start of the service in it: a restore appends). `up` first moves the previous stack's files into
`logs/<its start>/` (a UTC stamp, `20261207T101500.123456Z`), and `down` leaves them in place, so
`chaos logs` shows the last stack's log once it is down.

With `tls` (`chaos up --tls`) the stack makes a CA and a server certificate in `<state_dir>/tls`
(`chaos.lab.tls`) and the DB and the cache serve gRPC over TLS with it; the cache verifies the DB
against the CA, and so does every client of the stack: each service's record keeps the CA's path
(`tls_ca`), which `serving_problem` and the controller's clients read. The wire proxy relays bytes,
so TLS passes through its links; its own admin port stays plaintext.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import psutil

from chaos.lab import prometheus
from chaos.lab.backends.base import (
    STOP_MARGIN_S,
    Backend,
    BackendError,
    ServiceInfo,
    Stopped,
    check_service,
    role_of,
)
from chaos.lab.ports import HOST, free_port
from chaos.lab.redis import redis_config, redis_server, wait_redis
from chaos.lab.state import ServiceRecord, default_state_dir, read_records, save_records
from chaos.lab.tls import DEFAULT_KEY, StackCerts, make_certs
from chaos.wire.proxy import LINK_NAMES
from herdlab.config import grace_s
from herdlab.grpcutil import serving_problem

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
BIND_TRIES = 3
FOLLOW_POLL_S = 0.2  # `chaos logs -f`: how often a quiet log is looked at again
STARTED_FILE = "started"  # in the logs folder: when the stack whose logs are there started
STORES = ("local", "redis")
MAX_REPLICAS = 16


def cache_names(names: Iterable[str]) -> list[str]:
    """The cache's services among `names`: `cache`, or `cache-1` .. `cache-R` in order."""
    return [n for n in names if role_of(n) == "cache"]


@dataclass
class StackInfo:
    services: dict[str, ServiceInfo] = field(default_factory=dict)
    # Local stack: {"targets_file": file_sd path, "url": the local Prometheus or None}.
    prometheus: dict[str, str | None] | None = None
    proxy: dict[str, str] = field(default_factory=dict)  # proxied service -> its link address
    tls_ca: str | None = None  # the CA clients verify the services against; None: plaintext

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "services": {
                name: {"grpc": s.grpc, "metrics": s.metrics, "pid": s.pid, "state": s.state}
                for name, s in self.services.items()
            }
        }
        if self.tls_ca is not None:  # a plaintext stack's document is as it always was
            doc["tls"] = True
            doc["tls_ca"] = self.tls_ca
        if self.prometheus is not None:
            doc["prometheus"] = self.prometheus
        if self.proxy:
            doc["proxy"] = dict(self.proxy)
        return doc


class LocalStack(Backend):
    name = "local"

    def __init__(self, state_dir: Path | None = None) -> None:
        self.state_dir = state_dir or default_state_dir()
        self.state_file = self.state_dir / "stack.json"
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    # -- state ----------------------------------------------------------------------------------

    def records(self) -> dict[str, ServiceRecord]:
        """The state file as it is now ({} without a stack). A command that asks several things
        of the stack reads it once and hands it to each (`status`, `status_info`, `proxied`)."""
        return read_records(self.state_file)

    def _save(self, records: dict[str, ServiceRecord]) -> None:
        save_records(self.state_file, records)

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
        return any(self._process(r) is not None for r in self.records().values())

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
        proxy: Sequence[str] = (),
        replicas: int = 1,
        store: str = "local",
        tls: bool = False,
        tls_key: str = DEFAULT_KEY,
    ) -> StackInfo:
        """Starts the DB (and Redis for the shared store) then the cache's replicas; returns once
        every one serves. A replica's ports are picked free (the cache's ports apply to one).
        With `tls` the services serve over TLS with new certificates (see the module), the
        server's key of kind `tls_key` (`chaos.lab.tls.KEYS`).

        Ports not given are picked free by the OS, then released for the service to bind: another
        process can take one in between. When every port was picked so, a service that could
        not bind its port is started again on fresh ones (at most `BIND_TRIES` times); ports the
        caller chose are never changed. `proxy` names the services to put the wire-fault proxy
        in front of (see the module); the cache's link needs a single replica."""
        unknown = [name for name in proxy if name not in LINK_NAMES]
        if unknown:
            raise BackendError(
                f"cannot proxy {', '.join(unknown)}; choose from {', '.join(LINK_NAMES)}"
            )
        if store not in STORES:
            raise BackendError(f"store must be one of {', '.join(STORES)}, got {store!r}")
        if not 1 <= replicas <= MAX_REPLICAS:
            raise BackendError(f"replicas must be in 1..{MAX_REPLICAS}, got {replicas}")
        if replicas > 1 and (cache_port or cache_metrics_port):
            raise BackendError("cache ports can be chosen for one replica only")
        if replicas > 1 and "cache" in proxy:
            raise BackendError("the wire proxy can stand in front of one cache replica only")
        redis = redis_server() if store == "redis" else None
        if self.is_up():
            raise BackendError(
                f"a lab stack is already up (state in {self.state_dir}); run 'chaos down' first"
            )
        self._new_logs()
        chosen = (db_port, db_metrics_port, cache_port, cache_metrics_port)
        certs = make_certs(self.state_dir / "tls", key_kind=tls_key) if tls else None
        up = partial(
            self._up,
            db_args,
            cache_args,
            *chosen,
            timeout_s=timeout_s,
            proxy=proxy,
            replicas=replicas,
            redis=redis,
            certs=certs,
        )
        for _ in range(BIND_TRIES - 1):
            try:
                return up()
            except BackendError as exc:
                text = str(exc).lower()
                if any(chosen) or not ("bind" in text or "address already in use" in text):
                    raise
        return up()

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
        proxy: Sequence[str] = (),
        replicas: int = 1,
        redis: str | None = None,
        certs: StackCerts | None = None,
    ) -> StackInfo:
        db_port = db_port or free_port()
        tls_ca = str(certs.ca) if certs is not None else None
        db_tls = certs.server_args() if certs is not None else []
        cache_tls = [*db_tls, "--db-tls-ca", str(certs.ca)] if certs is not None else []
        db_metrics_port = db_metrics_port or free_port()
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        db_target = f"{HOST}:{db_port}"
        names = ["cache"] if replicas == 1 else [f"cache-{i}" for i in range(1, replicas + 1)]
        ports = {
            name: (cache_port or free_port(), cache_metrics_port or free_port()) for name in names
        }
        first_cache = f"{HOST}:{ports[names[0]][0]}"
        wire = _wire_record(proxy, db_target, first_cache, logs) if proxy else None
        cache_db_target = wire.links["db"] if wire and wire.links and "db" in wire.links else None
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
                    *db_tls,
                    *db_args,
                ],
                grpc=db_target,
                metrics=f"http://{HOST}:{db_metrics_port}/metrics",
                log=str(logs / "db.log"),
                tls_ca=tls_ca,
            ),
        }
        store_args: list[str] = []
        if redis is not None:
            records["redis"] = self._redis_record(redis, logs)
            store_args = ["--store", f"redis://{records['redis'].grpc}/0"]
        if wire is not None:  # started after the DB, before the caches that may call through it
            records["wire"] = wire
        for name in names:
            port, metrics_port = ports[name]
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
                    cache_db_target or db_target,
                    "--name",
                    name,
                    *cache_tls,
                    *cache_args,
                    *store_args,  # last: the stack's Redis wins over a `--store` in cache_args
                ],
                grpc=f"{HOST}:{port}",
                metrics=f"http://{HOST}:{metrics_port}/metrics",
                log=str(logs / f"{name}.log"),
                tls_ca=tls_ca,
            )
        self._save(records)
        try:
            for name in records:
                self._start(records, name, timeout_s)
            prometheus.write_targets(self.state_dir, {n: r.metrics for n, r in records.items()})
        except BaseException:
            self.down()
            raise
        return self.status_info()

    def _new_logs(self) -> None:
        """Moves the previous stack's logs into `logs/<its start>/` and notes this one's start:
        a log file then holds the lines of one stack."""
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        started = logs / STARTED_FILE
        previous = sorted(logs.glob("*.log"))
        if previous:
            stamp = started.read_text().strip() if started.exists() else ""
            # Logs written before stacks were stamped: named by their first file's last write.
            folder = logs / (stamp or _stamp(min(p.stat().st_mtime for p in previous)))
            folder.mkdir(exist_ok=True)
            for path in previous:
                path.replace(folder / path.name)
        started.write_text(_stamp(time.time()) + "\n")

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
        child = self._spawn(records, record, extra_args)

        def alive() -> bool:
            return child.poll() is None

        # `last`: what the readiness wait last saw; a Redis that never answered says no more.
        if record.kind == "redis":
            ready, last = wait_redis(record.grpc, timeout_s, alive=alive), ""
        else:
            problem = serving_problem(record.grpc, timeout_s, alive=alive, ca=record.tls_ca)
            ready, last = problem is None, f" (last: {problem})"
        if not ready:
            tail = _tail(Path(record.log))
            verb = "answer PING" if record.kind == "redis" else "become SERVING"
            why = (
                f": it exited at start (exit {child.returncode})"
                if child.poll() is not None
                else f" on {record.grpc} within {timeout_s:g}s{last}"
            )
            raise BackendError(f"{name} did not {verb}{why}" + (f": {tail}" if tail else ""))

    def _spawn(
        self, records: dict[str, ServiceRecord], record: ServiceRecord, extra_args: Sequence[str]
    ) -> subprocess.Popen[bytes]:
        """Starts `record`'s command line, output to its log, and records its pid."""
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
        return child

    def start_helper(
        self,
        name: str,
        argv: Sequence[str],
        metrics: str,
        ready: Callable[[], bool],
        timeout_s: float = READY_TIMEOUT_S,
    ) -> ServiceInfo:
        """Starts a helper process beside the lab's services (e.g. the local Prometheus): kept
        in the state file, so `status` shows it and `down` stops it, but no chaos verb acts on
        it. Returns once `ready()` holds (polled, at most `timeout_s`); a helper that exits or
        is not ready in time is stopped, forgotten, and reported with its log's last line."""
        records = self.records()
        if not any(self._process(r) is not None for r in records.values()):
            raise BackendError("no lab stack is up; run 'chaos up' first")
        if name in records and self._process(records[name]) is not None:
            raise BackendError(f"{name} is already running (pid {records[name].pid})")
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        record = ServiceRecord(
            name=name,
            argv=list(argv),
            grpc="",
            metrics=metrics,
            log=str(self.state_dir / "logs" / f"{name}.log"),
        )
        records[name] = record
        child = self._spawn(records, record, ())
        deadline = time.monotonic() + timeout_s
        while not ready():
            if child.poll() is not None or time.monotonic() > deadline:
                proc = self._process(record)
                if proc is not None:
                    self._stop(proc)
                self._reap(child.pid)
                del records[name]
                self._save(records)
                tail = _tail(Path(record.log))
                raise BackendError(
                    f"{name} was not ready within {timeout_s:g}s" + (f": {tail}" if tail else "")
                )
            time.sleep(0.05)
        return self._info(record)

    def down(self) -> list[str]:
        """Stops every helper, then every service (cache first); returns the names that were
        running."""
        records = self.records()
        stopped = []
        # Reverse start order: helpers (started last) first, then the cache, the proxy, the DB.
        for name in reversed(list(records)):
            record = records[name]
            proc = self._process(record)
            if proc is not None:
                self._stop(proc)
                stopped.append(name)
        self._reap_all()
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()
        prometheus.remove_targets(self.state_dir)
        return stopped

    def _stop(self, proc: psutil.Process) -> None:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGCONT)  # a paused process cannot act on SIGTERM
            proc.terminate()
            # `down` returns once the process has exited: its ports and files are closed. One
            # that an earlier `chaos` invocation started is init's to reap, which may take a
            # second or two (`_exited`); this invocation's own children are reaped by the caller.
            if not _exited(proc, STOP_TIMEOUT_S):
                proc.kill()
                _exited(proc, STOP_TIMEOUT_S)

    def _reap_all(self) -> None:
        for pid in list(self._children):
            self._reap(pid)

    # -- Backend --------------------------------------------------------------------------------

    def status(self, records: Mapping[str, ServiceRecord] | None = None) -> dict[str, ServiceInfo]:
        """Every service's state now, of `records` (default: the state file read now)."""
        known = self.records() if records is None else records
        return {name: self._info(record) for name, record in known.items()}

    def status_info(self, records: Mapping[str, ServiceRecord] | None = None) -> StackInfo:
        known = self.records() if records is None else records
        services = self.status(known)
        return StackInfo(
            services,
            prometheus=prometheus.describe(self.state_dir, services),
            proxy=self.proxied(known),
            tls_ca=self.tls_ca(known),
        )

    def tls_ca(self, records: Mapping[str, ServiceRecord] | None = None) -> str | None:
        """The CA the stack's services are verified against, None for a plaintext stack (or
        none up)."""
        known = self.records() if records is None else records
        return next((r.tls_ca for r in known.values() if r.tls_ca), None)

    def proxied(self, records: Mapping[str, ServiceRecord] | None = None) -> dict[str, str]:
        """The services behind the wire proxy, each with the address its clients use."""
        wire = (self.records() if records is None else records).get("wire")
        return dict(wire.links or {}) if wire is not None else {}

    def proxy_admin(self) -> str:
        """The wire proxy's admin address; BackendError when the stack has none."""
        records = self.records()
        if not records:
            raise BackendError("no lab stack is up; run 'chaos up' first")
        wire = records.get("wire")
        if wire is None:
            raise BackendError(
                "the stack has no wire proxy; start it with 'chaos up --proxy db,cache'"
            )
        if self._process(wire) is None:
            raise BackendError("the wire proxy is not running")
        return wire.grpc

    @property
    def proxy_file(self) -> Path:
        """Where `chaos proxy` (the wire proxy alone, in front of the user's service) keeps its
        record while it runs, apart from any stack's: `chaos wire target ...` reads it."""
        return self.state_dir / "proxy.json"

    def standalone_proxy(self) -> ServiceRecord | None:
        """The record of the `chaos proxy` running now, if one is (a stale file is ignored)."""
        record = read_records(self.proxy_file).get("proxy")
        return record if record is not None and self._process(record) is not None else None

    def client_target(self, service: str) -> str:
        """Where clients of `service` connect: its proxy link when proxied, else the service."""
        proxied = self.proxied()
        if service in proxied:
            return proxied[service]
        return self._record(service)[1].grpc

    def _record(self, service: str) -> tuple[dict[str, ServiceRecord], ServiceRecord]:
        check_service(service)
        records = self.records()
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

    def stop(self, service: str) -> Stopped:
        """SIGTERM (SIGCONT first: a paused process cannot act on it), bounded by the grace its
        command line or environment gives it (`--grace`, `HERDLAB_GRACE`)."""
        records, record = self._record(service)
        proc = self._process(record)
        if proc is None:
            raise BackendError(f"{service} is not running")
        try:
            bound = grace_s(proc.cmdline(), proc.environ()) + STOP_MARGIN_S
        except psutil.Error:  # gone, or its environment unreadable: the default grace
            bound = grace_s([], {}) + STOP_MARGIN_S
        started = time.monotonic()
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
        forced = not _exited(proc, bound)
        if forced:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
            _exited(proc, STOP_TIMEOUT_S)
        took = time.monotonic() - started
        if record.pid is not None:
            self._reap(record.pid)
        record.state = "stopped"
        self._save(records)
        return Stopped(self._info(record), round(took, 3), bound, forced)

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

    def logs(self, service: str, *, lines: int, follow: bool) -> Iterator[str]:
        """The service's log file (it keeps every start of the service in this stack: a restore
        appends); with no stack up, the last stack's, and `follow` stops at its end."""
        path = Path(self._record(service)[1].log) if self.records() else self._last_log(service)
        try:
            with path.open(errors="replace") as log:
                yield from collections.deque((line.rstrip("\n") for line in log), maxlen=lines)
                partial = ""
                while follow and self.state_file.exists():
                    chunk = log.readline()
                    if not chunk:
                        time.sleep(FOLLOW_POLL_S)
                        continue
                    partial += chunk
                    if partial.endswith("\n"):
                        yield partial.rstrip("\n")
                        partial = ""
        except OSError as exc:
            raise BackendError(f"cannot read {path}: {exc.strerror}") from exc

    def _last_log(self, service: str) -> Path:
        """`service`'s log in the last stack, once it is down."""
        check_service(service)
        logs = self.state_dir / "logs"
        path = logs / f"{service}.log"
        if path.exists():
            return path
        kept = [p.stem for p in sorted(logs.glob("*.log"))]
        if not kept:
            raise BackendError("no lab stack is up; run 'chaos up' first")
        raise BackendError(
            f"no lab stack is up, and the last one had no service {service!r}; "
            f"it had {', '.join(kept)}"
        )

    def resume(self, service: str) -> ServiceInfo:
        return self._signal(service, signal.SIGCONT, "running")


def _wire_record(
    proxy: Sequence[str], db_target: str, cache_target: str, logs: Path
) -> ServiceRecord:
    """The wire proxy's record: an admin port, and a link per proxied service."""
    upstreams = {"db": db_target, "cache": cache_target}
    links = {name: free_port() for name in LINK_NAMES if name in proxy}
    admin = free_port()
    argv = [sys.executable, "-m", "chaos.wire", "--host", HOST, "--port", str(admin)]
    for name, port in links.items():
        argv += ["--link", f"{name}:{port}:{upstreams[name]}"]
    return ServiceRecord(
        name="wire",
        argv=argv,
        grpc=f"{HOST}:{admin}",
        metrics="",
        log=str(logs / "wire.log"),
        links={name: f"{HOST}:{port}" for name, port in links.items()},
    )


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


def _stamp(epoch_s: float) -> str:
    """A UTC instant as a folder name: `20261207T101500.123456Z`."""
    moment = datetime.datetime.fromtimestamp(epoch_s, datetime.UTC)
    return moment.strftime("%Y%m%dT%H%M%S.%fZ")


def _tail(log: Path, lines: int = 1) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])
