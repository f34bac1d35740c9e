"""The live stack as a `chaos.engine.actions.base.Target` (what the verbs act on: the chosen
backend's services and their admin planes, and the local stack's wire proxy), and what every
verb does around an action: `--json` and `--dry-run`, the journal, the services' count of chaos
actions, and the foreground hold of a fault given `--for D` (Ctrl-C or SIGTERM undoes it at
once: exit 130 or 143).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict
from typing import Any, NoReturn

import click

from cache_service.__main__ import main as cache_main
from cache_service.settings import CacheSettings
from chaos.cli.context import Lab, emit_json, out
from chaos.engine.trial import lease_samples
from chaos.lab.admin import Admin, first_arrival, note_action
from chaos.lab.backends.base import Backend, BackendError, ServiceInfo, Stopped
from chaos.lab.backends.local import cache_names
from chaos.lab.state import ServiceRecord
from chaos.wire.admin import WireClient
from chaos.wire.proxy import TARGET_LINK
from db_service.__main__ import main as db_main
from db_service.settings import DbSettings
from herdlab import settings
from herdlab.auth import AdminError
from herdlab.config import format_value

NO_STACK = "no lab stack is up; run 'chaos up' first"
# How long `outage db` waits for the restored DB's first request, and how long the caches may
# send it nothing before nobody is taken to be reconnecting.
LAG_WAIT_S = 30.0
LAG_IDLE_S = 1.0


def start_settings(records: Mapping[str, ServiceRecord]) -> tuple[DbSettings, CacheSettings]:
    """The DB's and the cache's settings as the local stack started them (their command lines
    in its state file, `LocalStack.records()`)."""
    caches = cache_names(records)
    if "db" not in records or not caches:
        raise BackendError("no lab stack is up; run 'chaos up' first")
    found = []
    # Every replica starts with the same settings: the first one's command line says them.
    for name, command, cls in (("db", db_main, DbSettings), (caches[0], cache_main, CacheSettings)):
        argv = records[name].argv[3:]  # after `python -m package`
        with command.make_context(name, list(argv)) as ctx:
            found.append(settings.from_options(cls, ctx.params))
    db, cache = found
    assert isinstance(db, DbSettings) and isinstance(cache, CacheSettings)
    return db, cache


def common(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(
        command
    )
    return click.option("--dry-run", is_flag=True, help="Say what would be done; do nothing.")(
        command
    )


class Live:
    """The live stack, acted on by one verb: a failed process action is journalled before it
    propagates; a composite action's steps are journalled as they are done."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.stopped: int | None = None  # the signal that cut a held fault short

    def _process(
        self, verb: str, service: str, act: Callable[[Backend], ServiceInfo | Stopped]
    ) -> dict[str, Any]:
        try:
            done = act(self.lab.backend())
        except BackendError as exc:
            self.lab.journal.append(
                verb, service, "error", backend=self.lab.backend_name, error=str(exc)
            )
            raise
        info = done.info if isinstance(done, Stopped) else done
        result: dict[str, Any] = {
            "service": {k: v for k, v in asdict(info).items() if v is not None}
        }
        if isinstance(done, Stopped):
            result |= {"exit_s": done.exit_s, "bound_s": done.bound_s, "forced": done.forced}
        return result

    async def kill(self, service: str) -> dict[str, Any]:
        return self._process("kill", service, lambda b: b.kill(service))

    async def stop(self, service: str) -> dict[str, Any]:
        return self._process("stop", service, lambda b: b.stop(service))

    async def restore(self, service: str) -> dict[str, Any]:
        return self._process("restore", service, lambda b: b.restore(service))

    async def pause(self, service: str) -> dict[str, Any]:
        return self._process("pause", service, lambda b: b.pause(service))

    async def resume(self, service: str) -> dict[str, Any]:
        return self._process("resume", service, lambda b: b.resume(service))

    async def lease_holder(self) -> str:
        """The running replica whose lease counter is the highest."""
        services = self.lab.backend().status()
        taken = {
            name: (await asyncio.to_thread(lease_samples, services[name].metrics))["leases"]
            for name in cache_names(services)
            if services[name].state == "running"
        }
        holder = max(taken, key=lambda name: taken[name], default=None)
        if holder is None or taken[holder] == 0:
            raise BackendError("no replica holds a lease")
        return holder

    def check(self, needs: str, service: str) -> None:
        """What a real run checks first (for `--dry-run`): a stack up with `service`, or with
        a DB and a cache to reach; BackendError as the real run would raise otherwise."""
        services = self.lab.backend().status()
        if needs == "service" and service not in services:
            raise BackendError(NO_STACK)
        if needs == "admin":
            self._admins(services)
        if needs == "wire":
            self.wire_admin(service)
        if needs == "start":
            self.states()
            self.start_settings()

    def _admins(self, services: dict[str, ServiceInfo]) -> list[Admin]:
        caches = cache_names(services)
        if "db" not in services or not caches:
            raise BackendError(NO_STACK)
        tls_ca = self.lab.tls_ca()
        return [Admin(services["db"].grpc, services[name].grpc, tls_ca=tls_ca) for name in caches]

    @asynccontextmanager
    async def admin(self) -> AsyncIterator[Admin]:
        async with self._admins(self.lab.backend().status())[0] as admin:
            yield admin

    async def cache_admins(self) -> AsyncIterator[Admin]:
        for admin in self._admins(self.lab.backend().status()):
            async with admin:
                yield admin

    async def hold(self, seconds: float, revert: Callable[[], Awaitable[object]]) -> None:
        self.stopped = await hold_for(seconds, revert)

    def note(self, verb: str, service: str, **details: Any) -> None:
        self.lab.journal.append(verb, service, "ok", backend=self.lab.backend_name, **details)

    async def reconnect_lag(self, up_at: float) -> dict[str, Any]:
        """Waits for the restored DB's first request (at most `LAG_WAIT_S`, less if the running
        caches send it nothing for `LAG_IDLE_S`): `reconnect_lag_s`, seconds from `up_at` (0 for
        one that came while the restore was confirming it serves), null with the reason
        otherwise (a cache that does not answer is a reason, not a failed outage)."""
        started = time.monotonic()
        bound = {"reconnect_lag_wait_s": LAG_WAIT_S}
        running = {n: s for n, s in self.lab.backend().status().items() if s.state == "running"}
        if not cache_names(running):
            return {"reconnect_lag_s": None} | bound | {"reconnect_lag_why": "no cache is running"}
        try:
            async with AsyncExitStack() as stack:
                admins = [await stack.enter_async_context(a) for a in self._admins(running)]
                first = await first_arrival(admins, LAG_WAIT_S, LAG_IDLE_S)
        except AdminError as exc:
            return {"reconnect_lag_s": None} | bound | {"reconnect_lag_why": str(exc)}
        if first is not None:
            return {"reconnect_lag_s": round(max(0.0, first / 1e9 - up_at), 3)} | bound
        why = (
            f"no request reached the DB within {format_value(LAG_WAIT_S)}s"
            if time.monotonic() - started >= LAG_WAIT_S
            else f"the caches sent the DB nothing for {format_value(LAG_IDLE_S)}s"
        )
        return {"reconnect_lag_s": None} | bound | {"reconnect_lag_why": why}

    def wire_admin(self, link: str) -> str:
        if link == TARGET_LINK:
            record = self.lab.stack.standalone_proxy()
            if record is None:
                raise BackendError(
                    "no proxy runs in front of a target; start one with "
                    "'chaos proxy --listen 127.0.0.1:PORT --upstream HOST:PORT'"
                )
            return record.grpc
        if self.lab.backend_name != "local":
            raise BackendError("wire faults need the local stack's proxy ('chaos up --proxy ...')")
        admin = self.lab.stack.proxy_admin()
        if link not in self.lab.stack.proxied():
            raise BackendError(
                f"the wire proxy is not in front of {link}; restart with --proxy {link}"
            )
        return admin

    def states(self) -> dict[str, str]:
        services = self.lab.backend().status()
        self._admins(services)
        return {name: info.state for name, info in services.items()}

    def start_settings(self) -> tuple[DbSettings, CacheSettings]:
        if self.lab.backend_name != "local":
            return DbSettings(), CacheSettings()
        return start_settings(self.lab.stack.records())

    async def clear_wire(self) -> list[str]:
        services = self.lab.backend().status()
        if self.lab.backend_name != "local" or "wire" not in services:
            return []
        async with WireClient(services["wire"].grpc) as client:
            return [f.name for f in await client.clear()]

    def cut(self, service: str) -> None:
        """A partition is the wire fault it is: the proxy lists it, the journal has the verb."""

    async def heal(self, service: str) -> dict[str, Any]:
        async with WireClient(self.wire_admin(service)) as client:
            return {"removed": await client.heal(service)}


def shown(key: str, value: Any, started: float) -> str:
    """A detail as the terminal shows it: instants (`down_at`, a flap's `outages`) in seconds
    since the command started, `+1.25s`; the JSON and the journal keep wall-clock times."""
    if key.endswith("_at") and isinstance(value, float):
        return f"+{value - started:.2f}s"
    if key == "reconnect_lag_s":
        return "none" if value is None else f"+{value:.2f}s"
    if key == "outages":
        return ",".join(f"+{down - started:.2f}s..+{up - started:.2f}s" for down, up in value)
    return format_value(value)


def report(
    lab: Lab,
    verb: str,
    target: str,
    as_json: bool,
    dry_run: bool,
    counted_as: str | None = None,
    *,
    started: float,
    **details: Any,
) -> None:
    """Has a done action counted (as acting on `counted_as`, by default `target`), journals it
    with the services that counted it (`counted_by`), then prints it (instants relative to
    `started`, the command's start)."""
    if dry_run:
        doc = {"verb": verb, "target": target, "result": "dry-run", **details}
    else:
        counted_by = _count(lab, verb, counted_as or target)
        doc = lab.journal.append(
            verb, target, "ok", backend=lab.backend_name, counted_by=counted_by, **details
        )
    if as_json:
        emit_json(doc)
    else:
        extra = " ".join(
            f"{k}={shown(k, v, started)}" for k, v in details.items() if k != "service"
        )
        prefix = "would " if dry_run else ""
        out.print(f"{prefix}{verb} {target}" + (f" ({extra})" if extra else ""))


def _count(lab: Lab, verb: str, service: str) -> list[str]:
    """Has every running service count the action in `herdlab_chaos_actions_total` (see
    `herdlab.chaoslog`): this command exits at once, the services are what Prometheus scrapes.
    Best effort: the action is done and journalled whoever counts it; returns who did."""
    try:
        running = {n: s.grpc for n, s in lab.backend().status().items() if s.state == "running"}
    except BackendError:
        return []
    return asyncio.run(note_action(running, verb, service, tls_ca=lab.tls_ca()))


async def hold_for(seconds: float, revert: Callable[[], Awaitable[object]]) -> int | None:
    """Waits `seconds` in the foreground; None if it ran its course. SIGINT or SIGTERM ends the
    wait at once, runs `revert` and returns that signal (end the command with `stop_as`)."""
    running = asyncio.get_running_loop()
    waiter = asyncio.ensure_future(asyncio.sleep(seconds))
    received: list[int] = []

    def stop(sig: int) -> None:
        received.append(sig)
        waiter.cancel()

    # The loop's handlers stand in for the controller's own while the fault holds; removing
    # them leaves SIG_DFL, so the controller's are put back after (`stop_as` relies on them).
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in before:
        running.add_signal_handler(sig, stop, sig)
    try:
        await waiter
        return None
    except asyncio.CancelledError:
        await revert()
        return received[0] if received else signal.SIGINT
    finally:
        for sig, handler in before.items():
            running.remove_signal_handler(sig)
            signal.signal(sig, handler)


def stop_as(sig: int) -> NoReturn:
    """Ends the command as the signal `hold_for` caught would have: through the controller's
    own handling of it (exit 130 for SIGINT, 143 for SIGTERM), after the revert."""
    signal.raise_signal(signal.Signals(sig))
    raise KeyboardInterrupt
