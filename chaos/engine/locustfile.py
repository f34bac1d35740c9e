"""The lab's locustfile: the herd on a Locust master and its workers.

    locust -f chaos/engine/locustfile.py --master --headless --expect-workers 2 \\
        --herd-target HOST:PORT --herd-users 100000 --herd-json herd.json
    locust -f chaos/engine/locustfile.py --worker --master-host MASTER   # on each worker host

Every setting of `chaos herd` is an option `--herd-KEY` (environment `HERDLAB_HERD_KEY`), read by
the master only; each worker gets its share from the master. What happens:

- Locust's users here are the herd's shares, one per worker (the load shape `HerdShape` asks for
  as many users as there are workers); the lab's users are `--herd-users`, inside the shares.
- Each share's user asks the master for its part (`herd_join` -> `herd_plan`), runs it in the
  asyncio herd core in a child process (`chaos.engine.herd_child`), and reports every request as
  a Locust request event (so Locust's statistics, web UI, CSV and HTML report show them) and to
  the master (`herd_outcomes`, then `herd_done`).
- Burst: each share connects and parks its users, then says `herd_ready`. Once all have, the
  master measures each worker's clock offset (`herd_clock`, best of `CLOCK_PINGS` round trips),
  picks one release instant and sends each worker that instant on its own clock (`herd_go`).
- The master writes the result document (`--herd-json`, `chaos.engine.herd_workers.document`)
  once every share is done or its worker is gone (3 missed heartbeats), or the run's limit has
  passed; requests of a share that never reported are `unreported`. Then it stops the test
  (headless: it quits, and its workers with it). A worker whose master is silent for
  `--herd-heartbeat-timeout` stops.

A worker that reaches the cache at another address than the master names (a host of its own:
`chaos.lab.hosts`) is given it with `--herd-worker-target`. The web UI is bound to 127.0.0.1
unless told otherwise, and only a loopback address is accepted.
A worker waits for its master at most `HERDLAB_HERD_MASTER_WAIT` seconds (60), then ends with one
line and exit status 2 (Locust itself would wait 5 minutes and give no status of its own).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import gevent
import locust.runners
from gevent.event import AsyncResult
from gevent.os import make_nonblocking, nb_read
from locust import LoadTestShape, User, events, task
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import STATE_MISSING, MasterRunner, WorkerRunner

from chaos.engine.herd_child import read_frame, write_frame
from chaos.engine.herd_settings import HerdSettings
from chaos.engine.herd_workers import (
    DONE,
    ENGINE_SETTINGS,
    FAILED,
    HEARTBEAT_TIMEOUT_S,
    MISSING,
    RELEASE_LEAD_S,
    TIMED_OUT,
    WorkerShare,
    document,
    merged_result,
    option_name,
    outcome_from_row,
    released_path,
    run_limit_s,
    settings_from_payload,
    settings_from_texts,
    settings_payload,
    share,
    start_limit_s,
)
from herdlab import settings

CLOCK_PINGS = 5
POLL_S = 0.05
REQUEST_NAME = "cache.Get"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
MASTER_WAIT_S = 60.0


class HerdRequestError(Exception):
    """A herd request that ended with an error: its gRPC code (or the guard's refusal)."""


def _quit(message: str) -> None:
    """Bad input: one line, exit status 2, nothing started."""
    print(f"herd: {message}", file=sys.stderr)
    os._exit(2)


def _bound_master_wait() -> None:
    """A worker waits for its master at most `HERDLAB_HERD_MASTER_WAIT` seconds (default
    `MASTER_WAIT_S`; Locust's own is 5 minutes), then ends with one line and exit status 2."""
    try:
        wait_s = float(os.environ.get("HERDLAB_HERD_MASTER_WAIT", MASTER_WAIT_S))
    except ValueError:
        _quit("HERDLAB_HERD_MASTER_WAIT must be a number of seconds")
    locust.runners.CONNECT_TIMEOUT = max(1, min(locust.runners.CONNECT_TIMEOUT, math.ceil(wait_s)))
    locust.runners.CONNECT_RETRY_COUNT = max(0, round(wait_s / locust.runners.CONNECT_TIMEOUT) - 1)
    connect = WorkerRunner.connect_to_master

    def connect_or_quit(runner: WorkerRunner) -> None:
        try:
            connect(runner)  # type: ignore[no-untyped-call]
        except ConnectionError:
            _quit(f"master {runner.master_host}:{runner.master_port} unreachable after {wait_s:g}s")

    WorkerRunner.connect_to_master = connect_or_quit  # type: ignore[method-assign]


_bound_master_wait()


def _options(parser: Any) -> None:
    parser.set_defaults(web_host="127.0.0.1")
    group = parser.add_argument_group("the lab's herd (read by the master)")
    group.add_argument(
        "--herd-target", env_var="HERDLAB_CACHE_TARGET", help="The cache's gRPC address."
    )
    group.add_argument(
        "--herd-tls-ca", env_var="HERDLAB_TLS_CA", help="Verify the cache's TLS against this CA."
    )
    group.add_argument(
        "--herd-worker-target",
        env_var="HERDLAB_HERD_WORKER_TARGET",
        help="The cache's gRPC address as this worker reaches it [default: the master's "
        "--herd-target] (worker).",
    )
    group.add_argument("--herd-json", help="Write the result document here; - for stdout (master).")
    group.add_argument("--herd-result", help="Write the merged result here, pickled (master).")
    group.add_argument(
        "--herd-heartbeat-timeout",
        type=float,
        default=HEARTBEAT_TIMEOUT_S,
        env_var="HERDLAB_HERD_HEARTBEAT_TIMEOUT",
        help="A worker stops when its master is silent this long (seconds).",
    )
    for name, spec in settings.fields(HerdSettings):
        if name in ENGINE_SETTINGS:
            continue
        group.add_argument(
            option_name(spec.key),
            env_var=f"HERDLAB_HERD_{spec.key.upper()}",
            action="append" if spec.kind == "guards" else "store",
            help=f"{spec.help} [{spec.allowed()}]",
        )


def _herd_texts(options: Any) -> dict[str, Any]:
    texts: dict[str, Any] = {}
    for name, spec in settings.fields(HerdSettings):
        if name in ENGINE_SETTINGS:
            continue
        value = getattr(options, option_name(spec.key)[2:].replace("-", "_"), None)
        if value is not None:
            texts[spec.key] = value
    return texts


class _Master:
    """The master's side of one run."""

    def __init__(self, environment: Environment, herd: HerdSettings) -> None:
        self.environment = environment
        self.herd = herd
        self.shares: list[WorkerShare] = []
        self.by_client: dict[str, WorkerShare] = {}
        self.clock_replies: dict[tuple[str, int], AsyncResult] = {}
        self.finished = False
        self.parts = 0

    @property
    def runner(self) -> MasterRunner:
        runner = self.environment.runner
        assert isinstance(runner, MasterRunner)
        return runner

    def start(self, parts: int) -> None:
        options = _options_of(self.environment)
        config = self.herd.config(options.herd_target)
        self.parts = parts
        self.shares = [WorkerShare(i, share(config, parts, i)) for i in range(parts)]
        self.by_client = {}
        self.finished = False
        gevent.spawn(self.run)

    def on_join(self, msg: Any) -> None:
        free = [s for s in self.shares if s.client_id is None]
        if not free:
            return
        part = free[0]
        part.client_id, part.host, part.state = msg.node_id, msg.data["host"], "joined"
        part.address = msg.data.get("address", "")
        self.by_client[msg.node_id] = part
        options = _options_of(self.environment)
        self.runner.send_message(
            "herd_plan",
            {
                "index": part.index,
                "parts": self.parts,
                "settings": settings_payload(self.herd),
                "target": options.herd_target,
                "tls_ca": options.herd_tls_ca,
            },
            client_id=msg.node_id,
        )

    def on_ready(self, msg: Any) -> None:
        part = self.by_client.get(msg.node_id)
        if part is not None and not part.finished:
            part.state, part.connected = "ready", msg.data["connected"]

    def on_outcomes(self, msg: Any) -> None:
        part = self.by_client.get(msg.node_id)
        if part is not None and not part.finished:
            part.outcomes += [outcome_from_row(row) for row in msg.data["rows"]]

    def on_done(self, msg: Any) -> None:
        part = self.by_client.get(msg.node_id)
        if part is not None and not part.finished:
            part.done, part.state = msg.data, DONE

    def on_failed(self, msg: Any) -> None:
        part = self.by_client.get(msg.node_id)
        if part is not None and not part.finished:
            part.error, part.state = msg.data["error"], FAILED

    def on_clock(self, msg: Any) -> None:
        reply = self.clock_replies.get((msg.node_id, msg.data["seq"]))
        if reply is not None:
            reply.set(msg.data["now_ns"])

    def _check_gone(self) -> None:
        for part in self.shares:
            if part.client_id is None or part.finished:
                continue
            node = self.runner.clients.get(part.client_id)
            if node is None or node.state == STATE_MISSING:
                part.state = MISSING

    def _wait(self, until: Any, deadline: float) -> None:
        while time.monotonic() < deadline:
            self._check_gone()
            if until():
                return
            gevent.sleep(POLL_S)

    def _measure_clock(self, part: WorkerShare) -> None:
        """The worker's clock offset from the round trip with the shortest time."""
        assert part.client_id is not None
        best: tuple[int, int] | None = None
        for seq in range(CLOCK_PINGS):
            reply = self.clock_replies[(part.client_id, seq)] = AsyncResult()
            sent = time.time_ns()
            self.runner.send_message("herd_clock", {"seq": seq}, client_id=part.client_id)
            try:
                their_ns = reply.get(timeout=1.0)
            except gevent.Timeout:
                continue
            back = time.time_ns()
            rtt = back - sent
            if best is None or rtt < best[0]:
                best = (rtt, their_ns - (sent + back) // 2)
        if best is not None:
            part.rtt_ns, part.clock_offset_ns = best

    def run(self) -> None:
        config = self.shares[0].config
        started = time.monotonic()
        burst = config.open_loop is None
        self._wait(
            lambda: all(
                s.finished or (s.state == "ready" if burst else s.client_id is not None)
                for s in self.shares
            ),
            started + start_limit_s(config),
        )
        release_ns = time.time_ns()
        if burst:
            ready = [s for s in self.shares if s.state == "ready"]
            for part in ready:
                self._measure_clock(part)
            lead_ns = round(RELEASE_LEAD_S * 1e9) + 2 * max((s.rtt_ns for s in ready), default=0)
            release_ns = time.time_ns() + lead_ns
            self._announce(release_ns)
            for part in ready:
                self.runner.send_message(
                    "herd_go",
                    {"release_ns": release_ns + part.clock_offset_ns},
                    client_id=part.client_id,
                )
        else:
            self._announce(release_ns)
        released = time.monotonic()
        self._wait(lambda: all(s.finished for s in self.shares), released + run_limit_s(config))
        for part in self.shares:
            if not part.finished:
                part.state = TIMED_OUT
        self._write(release_ns, time.monotonic() - released)

    def _announce(self, release_ns: int) -> None:
        """The release instant, for whoever started this master (`herd_workers.run_locust`)."""
        options = _options_of(self.environment)
        if options.herd_json and options.herd_json != "-":
            released_path(Path(options.herd_json)).write_text(str(release_ns))

    def _write(self, release_ns: int, seconds: float) -> None:
        options = _options_of(self.environment)
        result = merged_result(self.shares, release_ns, seconds)
        doc = document(self.herd, options.herd_target, self.shares, result, release_ns)
        if options.herd_json == "-":
            print(_json(doc), end="", flush=True)
        elif options.herd_json:
            Path(options.herd_json).write_text(_json(doc))
        if options.herd_result:
            with Path(options.herd_result).open("wb") as file:
                pickle.dump(result, file)
        self.finished = True
        if options.headless:
            self.runner.quit()


def _json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2) + "\n"


def _options_of(environment: Environment) -> Any:
    """Locust's parsed options (set on every runner this file is loaded by)."""
    assert environment.parsed_options is not None
    return environment.parsed_options


class _PipeReader:
    """A child's pipe read cooperatively, whole reads or the end: gevent's file objects can
    return nothing from a pipe that is only empty for now, which reads as its end."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        make_nonblocking(fd)

    def read(self, size: int, /) -> bytes:
        data: bytes = nb_read(self.fd, size)
        return data


class _Worker:
    """The worker's side: its share's plan and release, from the master."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment
        self.plan = AsyncResult()
        self.go = AsyncResult()
        self.child: subprocess.Popen[bytes] | None = None
        # Read now: Locust hands its workers the master's values of the custom options later.
        self.target: str | None = _options_of(environment).herd_worker_target

    @property
    def runner(self) -> WorkerRunner:
        runner = self.environment.runner
        assert isinstance(runner, WorkerRunner)
        return runner

    def on_clock(self, msg: Any) -> None:
        self.runner.send_message(
            "herd_clock_reply", {"seq": msg.data["seq"], "now_ns": time.time_ns()}
        )

    def address(self) -> str:
        """This worker's own address: the one its packets to the master leave from."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect((self.runner.master_host, self.runner.master_port))
            except OSError:
                return ""
            address: str = probe.getsockname()[0]
            return address

    def run(self) -> None:
        self.runner.send_message(
            "herd_join", {"host": socket.gethostname(), "address": self.address()}
        )
        plan = self.plan.get(timeout=60)
        herd = settings_from_payload(plan["settings"])
        target = self.target or plan["target"]
        config = share(herd.config(target), plan["parts"], plan["index"])
        if plan["tls_ca"]:
            config = replace(config, tls_ca=plan["tls_ca"])
        child = self.child = subprocess.Popen(
            [sys.executable, "-m", "chaos.engine.herd_child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert child.stdin is not None and child.stdout is not None
        stdin = child.stdin
        write_frame(stdin, config)

        def release() -> None:
            write_frame(stdin, ("go", self.go.get()))

        stdout = _PipeReader(child.stdout.fileno())
        fire = self.environment.events.request.fire
        try:
            while True:
                try:
                    kind, payload = read_frame(stdout)
                except EOFError:
                    self.runner.send_message(
                        "herd_failed", {"error": "the herd process ended without reporting"}
                    )
                    return
                if kind == "ready":
                    self.runner.send_message("herd_ready", {"connected": payload})
                    gevent.spawn(release)
                elif kind == "outcomes":
                    for row in payload:
                        outcome = outcome_from_row(row)
                        fire(  # type: ignore[no-untyped-call]
                            request_type="grpc",
                            name=REQUEST_NAME,
                            response_time=outcome.latency_s * 1e3,
                            response_length=0,
                            exception=None
                            if outcome.code is None
                            else HerdRequestError(outcome.code),
                            context={},
                        )
                    self.runner.send_message("herd_outcomes", {"rows": payload})
                elif kind == "done":
                    self.runner.send_message("herd_done", payload)
                    return
                else:
                    self.runner.send_message("herd_failed", {"error": payload})
                    return
        finally:
            self.stop()

    def stop(self) -> None:
        child, self.child = self.child, None
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()


_MASTER: _Master | None = None
_WORKER: _Worker | None = None


def _init(environment: Environment, **_: Any) -> None:
    global _MASTER, _WORKER
    options = environment.parsed_options
    runner = environment.runner
    if options is None or runner is None:
        return
    if getattr(options, "web_host", "127.0.0.1") not in LOOPBACK and not options.headless:
        _quit(f"the web UI listens on loopback only, got --web-host {options.web_host}")
    if isinstance(runner, WorkerRunner):
        locust.runners.MASTER_HEARTBEAT_TIMEOUT = options.herd_heartbeat_timeout
        worker = _WORKER = _Worker(environment)
        runner.register_message("herd_plan", lambda msg, **_: worker.plan.set(msg.data))
        runner.register_message("herd_go", lambda msg, **_: worker.go.set(msg.data["release_ns"]))
        runner.register_message("herd_clock", lambda msg, **_: worker.on_clock(msg))
        return
    if not options.herd_target:
        _quit("--herd-target (or HERDLAB_CACHE_TARGET) is required: the cache's gRPC address")
    try:
        herd = settings_from_texts(_herd_texts(options))
    except ValueError as exc:
        _quit(str(exc))
    if not isinstance(runner, MasterRunner):
        _quit("run the herd with --master and workers (--worker --master-host HOST)")
    master = _MASTER = _Master(environment, herd)
    for kind, handler in (
        ("herd_join", master.on_join),
        ("herd_ready", master.on_ready),
        ("herd_outcomes", master.on_outcomes),
        ("herd_done", master.on_done),
        ("herd_failed", master.on_failed),
        ("herd_clock_reply", master.on_clock),
    ):
        runner.register_message(kind, lambda msg, handler=handler, **_: handler(msg))


def _test_start(environment: Environment, **_: Any) -> None:
    if _MASTER is not None and isinstance(environment.runner, MasterRunner):
        _MASTER.start(environment.runner.worker_count)


def _quitting(**_: Any) -> None:
    if _WORKER is not None:
        _WORKER.stop()


for _event, _listener in (
    (events.init_command_line_parser, _options),
    (events.init, _init),
    (events.test_start, _test_start),
    (events.quitting, _quitting),
):
    _event.add_listener(_listener)  # type: ignore[no-untyped-call]


class HerdShape(LoadTestShape):
    """One Locust user (a share of the herd) per worker, until the master has written the
    result."""

    def tick(self) -> tuple[int, float] | None:
        if _MASTER is None or self.runner is None:
            return None
        if _MASTER.finished:
            return None
        runner = self.runner
        assert isinstance(runner, MasterRunner)
        count = _MASTER.parts or runner.worker_count
        return count, count


class HerdShareUser(User):
    """One share of the herd, on one worker."""

    @task
    def herd(self) -> None:
        if _WORKER is not None:
            _WORKER.run()
        raise StopUser()
