"""The herd on Locust workers: what the master and its workers share, and running them here.

Locust (PyPI `locust`, the `locust` extra) is the engine where a herd outgrows one process or one
machine: a master and workers over ZeroMQ, its web UI, CSV and HTML reports. The lab's locustfile
(`chaos.engine.locustfile`, `LOCUSTFILE`) makes each worker run one share of the herd: the burst's
users and connections split near-evenly (`share`), an open loop's rate and in-flight bound split
evenly. Each share runs in the asyncio herd core (`chaos.engine.herd_child`, chosen by
measurement: README, "The herd on Locust").

This module imports no Locust (importing it patches the process for gevent, which the asyncio
herd and `chaos` itself cannot run under): the master's bookkeeping of each worker's share
(`WorkerShare`), the result document it writes (`document`: `chaos herd --json`'s keys, merged over
the workers, plus `unreported`, per-worker rows and the release across workers), and `run_locust`,
which starts a master and N workers as local processes for `chaos herd --workers N` and for an
experiment whose `[herd] engine` is `locust`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from chaos.engine.herd import (
    LOST_MARGIN_S,
    HerdConfig,
    HerdResult,
    OpenLoop,
    Outcome,
    connect_timeout_s,
)
from chaos.engine.herd_fleet import START_TIMEOUT_S, merge, per_process, split
from chaos.engine.herd_settings import HerdSettings
from chaos.lab.admin import Admin
from chaos.lab.hosts import Host, Hosts, HostsUnavailable, Relay, loopback_ports, reached_from
from chaos.lab.ports import free_port
from herdlab import settings
from herdlab.auth import AdminError
from herdlab.limits import raise_open_files

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
# A worker stops when it has not heard from its master for this long (Locust's own default is
# 60 s); the master takes a worker for gone after 3 missed 1 s heartbeats (Locust's).
HEARTBEAT_TIMEOUT_S = 10.0
# The release instant is set this far after the master's decision, plus twice the slowest
# round trip to a worker, so every worker has it in time.
RELEASE_LEAD_S = 0.25
POLL_S = 0.02
# The herd's settings that are the engine's, not one herd's: not passed to a worker.
ENGINE_SETTINGS = ("rounds", "engine", "workers", "hosts")
# A share's states, as its worker row shows them.
DONE, FAILED, MISSING, ABSENT, TIMED_OUT = "done", "failed", "missing", "absent", "timed out"


class WorkersError(RuntimeError):
    """The master or a worker could not start, or the run did not end within its limit."""


def share(config: HerdConfig, parts: int, index: int) -> HerdConfig:
    """Part `index` of `parts` of the herd `config`: the burst's (`herd_fleet.split`), or an open
    loop at rate / parts with its in-flight bound split and key draws of its own."""
    plan = config.open_loop
    if plan is None:
        return split(config, parts)[index]
    arrivals = plan.arrivals
    return replace(
        config,
        channels=max(1, config.channels // parts),
        open_loop=OpenLoop(
            plan.rate_per_s / parts, plan.duration_s, max(1, math.ceil(plan.max_in_flight / parts))
        ),
        first_draw=config.first_draw + index * arrivals,
        seed=None if config.seed is None else config.seed + index,
    )


def expected_requests(config: HerdConfig) -> int:
    """The requests a herd sends (an open loop's arrivals, skipped ones included)."""
    if config.open_loop is not None:
        return config.open_loop.arrivals
    return config.users * config.requests_per_user


def run_limit_s(config: HerdConfig) -> float:
    """How long a share may take from its release to its last answer and closed channels."""
    closing_s = START_TIMEOUT_S + connect_timeout_s(config.channels)
    per_request_s = config.policy.max_total_s + LOST_MARGIN_S
    if config.open_loop is not None:
        return config.open_loop.duration_s + per_request_s + closing_s
    return config.requests_per_user * (per_request_s + config.think_s) + closing_s


def start_limit_s(config: HerdConfig) -> float:
    """How long a share may take to start and connect."""
    return START_TIMEOUT_S + connect_timeout_s(config.channels)


def settings_payload(herd: HerdSettings) -> dict[str, Any]:
    """The herd's settings as plain values (what Locust's messages carry)."""
    return {name: getattr(herd, name) for name, _ in settings.fields(HerdSettings)}


def settings_from_payload(payload: dict[str, Any]) -> HerdSettings:
    return HerdSettings(**payload)


def settings_from_texts(texts: dict[str, str | list[str]]) -> HerdSettings:
    """The herd's settings from their texts (`{key: text}`, a guard set as its list of guards),
    as Locust options and environment give them. ValueError naming the key."""
    known = settings.by_key(HerdSettings)
    typed: dict[str, Any] = {}
    for key, text in texts.items():
        name, spec = known[key]
        if isinstance(text, list):
            typed[key] = text
            continue
        if text == "none" and getattr(HerdSettings(), name) is None:
            continue
        try:
            if spec.kind in ("int", "seed"):
                typed[key] = int(text)
            elif spec.kind == "float" and spec.read is None:
                typed[key] = float(text)
            elif spec.kind == "bool":
                if text not in ("true", "false"):
                    raise ValueError(f"{key} must be true or false, got {text!r}")
                typed[key] = text == "true"
            else:
                typed[key] = text
        except ValueError as exc:
            raise ValueError(f"herd.{key}: {exc}") from None
    herd = settings.with_values(HerdSettings(), typed, where="herd")
    problems = herd.problems()
    if problems:
        raise ValueError("herd: " + "; ".join(problems))
    return herd


def settings_texts(herd: HerdSettings) -> dict[str, str]:
    """The settings that differ from the defaults, as texts (`settings_from_texts` reads them)."""
    default = HerdSettings()
    return {
        spec.key: spec.text(getattr(herd, name))
        for name, spec in settings.fields(HerdSettings)
        if name not in ENGINE_SETTINGS and getattr(herd, name) != getattr(default, name)
    }


def option_name(key: str) -> str:
    """The Locust option of the herd setting `key`."""
    return "--herd-" + key.replace("_", "-")


def outcome_from_row(row: list[Any] | tuple[Any, ...]) -> Outcome:
    user, key, source, code, attempts, sent_ns, done_ns, stale_age_s = row
    return Outcome(user, key, source, code, attempts, sent_ns, done_ns, stale_age_s)


@dataclass
class WorkerShare:
    """One share of the herd as the master sees it: its worker, what it reported, and the clock
    offset the master measured (the worker's clock minus the master's)."""

    index: int
    config: HerdConfig
    client_id: str | None = None
    host: str = ""
    address: str = ""  # the worker's own address, as it reaches its master
    state: str = ABSENT
    connected: int = 0
    clock_offset_ns: int = 0
    rtt_ns: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    done: dict[str, Any] | None = None
    error: str = ""

    @property
    def finished(self) -> bool:
        return self.state in (DONE, FAILED, MISSING, TIMED_OUT)

    def unreported(self) -> int:
        """Requests of this share that never reported: a worker gone, failed or late."""
        lost = sum(self.done["lost"].values()) if self.done is not None else 0
        return max(0, expected_requests(self.config) - len(self.outcomes) - lost)

    def result(self) -> HerdResult:
        """What this share reported, on the master's clock."""
        shift = -self.clock_offset_ns
        done = self.done or {}
        outcomes = [
            replace(o, sent_ns=o.sent_ns + shift, done_ns=o.done_ns + shift) for o in self.outcomes
        ]
        release_ns = done.get("release_ns", 0) + shift if done else 0
        return HerdResult(
            users=self.config.users if self.config.open_loop is None else 0,
            outcomes=outcomes,
            release_ns=release_ns,
            release_spread_s=done.get("release_spread_s", 0.0),
            lost=Counter(done.get("lost", {})),
            wrong_values=done.get("wrong_values", 0),
            seconds=done.get("seconds", 0.0),
            attempt_times_ns=[t + shift for t in done.get("attempt_times_ns", [])],
            connected_channels=done.get("connected_channels", self.connected),
            connections=done.get("connections", 0),
            connect_start_ns=done.get("connect_start_ns", 0) + shift if done else 0,
            channel_events=[
                (at + shift, channel, state)
                for at, channel, state in done.get("channel_events", [])
            ],
            first_errors=done.get("first_errors", {}),
        )

    def first_send_ns(self) -> int | None:
        """The share's first user's first send, on the master's clock (the release spread's
        first send: a user woken by the release, before its request is on the wire); the first
        request sent where the worker never said."""
        if self.done is not None and self.done.get("first_send_ns"):
            return int(self.done["first_send_ns"]) - self.clock_offset_ns
        sends = [o.sent_ns for o in self.outcomes]
        return min(sends) - self.clock_offset_ns if sends else None

    def rss_growth_bytes(self) -> int | None:
        """How much the share's herd process's peak RSS grew over the herd."""
        if self.done is None or "rss_peak_bytes" not in self.done:
            return None
        return int(self.done["rss_peak_bytes"] - self.done["rss_before_bytes"])

    def last_first_send_ns(self) -> int | None:
        """The share's last user's first send, on the master's clock."""
        if self.done is None or not self.outcomes:
            return None
        last: float = (
            self.done["release_ns"] + self.done["release_spread_s"] * 1e9 - self.clock_offset_ns
        )
        return round(last)


def merged_result(shares: list[WorkerShare], release_ns: int, seconds: float) -> HerdResult:
    """Every share's result as one (`herd_fleet.merge`), on the master's clock."""
    return merge([s.result() for s in shares], release_ns, seconds)


def _offset_s(at_ns: int | None, release_ns: int) -> float | None:
    return None if at_ns is None else (at_ns - release_ns) / 1e9


def document(
    herd: HerdSettings,
    target: str,
    shares: list[WorkerShare],
    result: HerdResult,
    release_ns: int,
) -> dict[str, Any]:
    """The result document of a herd on workers: `chaos herd --json`'s keys over the merged
    result, `unreported`, one row per worker and the release across workers. Times of a
    worker are on its own clock in its row's `release_spread_s` and on the master's clock (its
    offset taken off) in `first_send_s` and `last_first_send_s`, seconds after the release."""
    soft, hard = raise_open_files()
    config = herd.config(target)
    summary = result.summary()
    rows = []
    for s in shares:
        part = s.result().summary() if s.done is not None or s.outcomes else None
        rows.append(
            {
                "worker": s.index,
                "client_id": s.client_id,
                "host": s.host,
                "address": s.address,
                "state": s.state,
                "error": s.error,
                "users": s.config.users if config.open_loop is None else 0,
                "sent": part["sent"] if part else 0,
                "ok": part["ok"] if part else 0,
                "errors": part["errors"] if part else {},
                "lost": part["lost"] if part else 0,
                "wrong_values": part["wrong_values"] if part else 0,
                "unreported": s.unreported(),
                "connected_channels": s.connected,
                "clock_offset_s": s.clock_offset_ns / 1e9,
                "clock_rtt_s": s.rtt_ns / 1e9,
                "release_spread_s": s.done["release_spread_s"] if s.done else None,
                "first_send_s": _offset_s(s.first_send_ns(), release_ns),
                "last_first_send_s": _offset_s(s.last_first_send_ns(), release_ns),
                "rss_peak_bytes": s.done.get("rss_peak_bytes") if s.done else None,
                "rss_per_user_bytes": _per_user(s.rss_growth_bytes(), s.config.users),
                "cpu_s": s.done.get("cpu_s") if s.done else None,
            }
        )
    growths = [(s.rss_growth_bytes(), s.config.users) for s in shares]
    measured = [(g, n) for g, n in growths if g is not None]
    cpus = [(r["cpu_s"], r["users"]) for r in rows if r["cpu_s"] is not None]
    firsts = [r["first_send_s"] for r in rows if r["first_send_s"] is not None]
    lasts = [r["last_first_send_s"] for r in rows if r["last_first_send_s"] is not None]
    return {
        "target": target,
        "users": result.users,
        "policy": herd.policy,
        "guards": config.guards,
        **summary,
        "processes": len(shares),
        "open_files": {"soft": soft, "hard": hard, "connections_per_process": per_process(soft)},
        "engine": "locust",
        "unreported": sum(s.unreported() for s in shares),
        "release": {
            "release_ns": release_ns,
            "spread_s": max(lasts) if lasts else None,
            "first_to_last_s": max(lasts) - min(firsts) if lasts and firsts else None,
        },
        "workers": rows,
        "db": None,  # `run_locust` reads the DB's record where it knows the DB
        "rss_per_user_bytes": _per_user(
            sum(g for g, _ in measured) if measured else None, sum(n for _, n in measured)
        ),
        "cpu_s_per_user": (
            sum(c for c, _ in cpus) / sum(n for _, n in cpus)
            if cpus and sum(n for _, n in cpus)
            else None
        ),
    }


def _per_user(total: float | None, users: int) -> int | None:
    return None if total is None or not users else round(total / users)


def _locust(*args: str) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), *args]


def master_argv(
    herd: HerdSettings,
    target: str,
    tls_ca: str | None,
    workers: int,
    port: int,
    out: Path,
) -> list[str]:
    """A headless master on loopback that waits for `workers` workers and writes the result
    document to `out` (and the merged result, pickled, beside it)."""
    argv = _locust(
        "--master",
        "--headless",
        "--master-bind-host",
        "127.0.0.1",
        "--master-bind-port",
        str(port),
        "--expect-workers",
        str(workers),
        "--expect-workers-max-wait",
        f"{START_TIMEOUT_S:g}",
        "--herd-target",
        target,
        "--herd-json",
        str(out),
        "--herd-result",
        str(out.with_suffix(".pickle")),
        "--loglevel",
        "WARNING",
        "--only-summary",
    )
    if tls_ca:
        argv += ["--herd-tls-ca", tls_ca]
    for key, text in settings_texts(herd).items():
        if key == "guards":
            for guard in text.split("+"):
                argv += [option_name(key), guard]
        else:
            argv += [option_name(key), text]
    return argv


def worker_argv(port: int, host: str = "127.0.0.1") -> list[str]:
    return _locust(
        "--worker", "--master-host", host, "--master-port", str(port), "--loglevel", "WARNING"
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Ends `proc` and everything in its session (a worker's herd process too)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # what the session left behind
    proc.wait()


def released_path(out: Path) -> Path:
    """Where the master writes the release instant (ns, its clock) beside its document `out`."""
    return out.with_suffix(".released")


def hosts_problem(herd: HerdSettings, target: str, tls_ca: str | None) -> str | None:
    """Why the herd's workers cannot run as hosts of their own against `target`, or None."""
    if not herd.hosts:
        return None
    if tls_ca:
        return "hosts reach the stack in plaintext only; run it without TLS"
    try:
        loopback_ports(target)
    except ValueError as exc:
        return str(exc)
    return None


def plain(reason: str) -> str:
    """The one line said where hosts cannot be made."""
    return f"hosts: no network namespaces here ({reason}); the workers run as plain processes"


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _db_record(db_target: str, cache_target: str, tls_ca: str | None, after_seq: int | None) -> Any:
    """The DB's record through its admin plane: with `after_seq` None, how many arrivals it
    has recorded ever; else the arrival times (ns) recorded after `after_seq`. None where the
    DB does not answer (down, or killed by the experiment): the herd runs all the same."""

    async def read() -> Any:
        async with Admin(db_target, cache_target, tls_ca=tls_ca) as admin:
            try:
                if after_seq is None:
                    return await admin.db_record_total()
                return await admin.db_arrivals(after_seq)
            except AdminError:
                return None

    return asyncio.run(read())


def db_arrivals_doc(db_target: str, arrivals_ns: list[int], release_ns: int) -> dict[str, Any]:
    """The document's `db`: the herd's arrivals at the DB by the DB's own record, the first and
    last in seconds after the release (the DB's clock: the same machine's as the master's)."""
    first, last = (min(arrivals_ns), max(arrivals_ns)) if arrivals_ns else (None, None)
    return {
        "target": db_target,
        "arrivals": len(arrivals_ns),
        "first_arrival_s": _offset_s(first, release_ns),
        "last_arrival_s": _offset_s(last, release_ns),
        "arrival_spread_s": None if first is None or last is None else (last - first) / 1e9,
    }


def run_locust(
    herd: HerdSettings,
    target: str,
    tls_ca: str | None,
    workers: int,
    port: int,
    log_dir: Path | None = None,
    on_release: Callable[[], None] | None = None,
    say: Callable[[str], None] = _say,
    db_target: str | None = None,
) -> tuple[dict[str, Any], HerdResult]:
    """Runs the herd on a Locust master and `workers` local workers (each a process of its own,
    in a session of its own, all ended afterwards); returns the master's document and the merged
    result. With `herd.hosts` each worker runs in a host of its own (`chaos.lab.hosts`), reaching
    the master and the cache through the hosts' relay, all removed afterwards; where hosts cannot
    be made, `say` is told in one line and the workers run as plain processes. `on_release` is
    called (from this thread) once the release instant has passed. With `db_target` (the DB
    behind the cache) the document's `db` gives the herd's arrivals there by the DB's own
    record (`db_arrivals_doc`), else it is null. WorkersError when the master fails or the run
    passes its limit."""
    problem = hosts_problem(herd, target, tls_ca)
    if problem:
        raise WorkersError(problem)
    seen = None if db_target is None else _db_record(db_target, target, tls_ca, None)
    with contextlib.ExitStack() as stack:
        hosts: list[Host] = []
        if herd.hosts:
            try:
                hosts = stack.enter_context(Hosts(workers))
            except HostsUnavailable as exc:
                say(plain(str(exc)))
        relay = None
        if hosts:
            try:
                relay = stack.enter_context(Relay(hosts, [port, *loopback_ports(target)]))
            except HostsUnavailable as exc:
                raise WorkersError(str(exc)) from None
        doc, result = _run_locust(herd, target, tls_ca, workers, port, log_dir, on_release, hosts)
        doc["db"] = None
        arrivals = None if seen is None else _db_record(db_target or "", target, tls_ca, seen)
        if db_target is not None and arrivals is not None:
            doc["db"] = db_arrivals_doc(db_target, arrivals, doc["release"]["release_ns"])
        doc["hosts"] = None
        if relay is not None:
            seen = relay.connections(loopback_ports(target))
            doc["hosts"] = [
                {
                    "namespace": h.namespace,
                    "address": h.inner,
                    "reaches": h.outer,
                    "cache_connections": seen[h.inner],
                }
                for h in hosts
            ]
        return doc, result


def _run_locust(
    herd: HerdSettings,
    target: str,
    tls_ca: str | None,
    workers: int,
    port: int,
    log_dir: Path | None,
    on_release: Callable[[], None] | None,
    hosts: list[Host],
) -> tuple[dict[str, Any], HerdResult]:
    config = herd.config(target)
    limit_s = 2 * START_TIMEOUT_S + run_limit_s(share(config, workers, 0)) + HEARTBEAT_TIMEOUT_S
    with tempfile.TemporaryDirectory(prefix="herdlab-locust-") as tmp:
        folder = Path(tmp)
        logs = log_dir or folder
        out = folder / "herd.json"
        procs: list[subprocess.Popen[bytes]] = []

        def start(argv: list[str], name: str) -> subprocess.Popen[bytes]:
            with (logs / f"{name}.log").open("wb") as log:
                proc = subprocess.Popen(
                    argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            procs.append(proc)
            return proc

        try:
            master = start(master_argv(herd, target, tls_ca, workers, port, out), "master")
            for index in range(workers):
                if hosts:
                    host = hosts[index]
                    argv = host.argv(
                        [
                            *worker_argv(port, host.outer),
                            "--herd-worker-target",
                            reached_from(target, host),
                        ]
                    )
                else:
                    argv = worker_argv(port)
                start(argv, f"worker-{index}")
            deadline = time.monotonic() + limit_s
            released = on_release is None
            while master.poll() is None:
                if time.monotonic() > deadline:
                    raise WorkersError(f"the Locust master did not end within {limit_s:.0f}s")
                if not released and released_path(out).exists():
                    release_ns = int(released_path(out).read_text() or 0)
                    time.sleep(max(0.0, (release_ns - time.time_ns()) / 1e9))
                    assert on_release is not None
                    on_release()
                    released = True
                time.sleep(POLL_S)
            for proc in procs[1:]:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(
                        timeout=max(0.1, min(HEARTBEAT_TIMEOUT_S, deadline - time.monotonic()))
                    )
            if not out.exists():
                tail = (logs / "master.log").read_text(errors="replace").strip().splitlines()[-1:]
                raise WorkersError(
                    f"the Locust master wrote no result (exit {master.returncode}): "
                    f"{tail[0] if tail else 'no output'}"
                )
            doc: dict[str, Any] = json.loads(out.read_text())
            with out.with_suffix(".pickle").open("rb") as file:
                result: HerdResult = pickle.load(file)
            return doc, result
        finally:
            for proc in procs:
                _stop(proc)


async def run_on_workers(
    herd: HerdSettings, config: HerdConfig, on_release: Callable[[], None]
) -> HerdResult:
    """An experiment's herd (`[herd] engine = "locust"`): `config`'s target, CA and keys on
    `herd.worker_count` local Locust workers; `on_release` is called on the event loop."""
    loop = asyncio.get_running_loop()

    def released() -> None:
        loop.call_soon_threadsafe(on_release)

    _, result = await asyncio.to_thread(
        run_locust,
        replace(herd, key_prefix=config.key_prefix),
        config.target,
        config.tls_ca,
        herd.worker_count,
        free_port(),
        on_release=released,
    )
    return result
