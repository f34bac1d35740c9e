"""The chaos verbs: break the backend on purpose and put it back.

Process faults go through the chosen backend (local processes or Docker containers):
  kill (SIGKILL), restore (start again, same address), pause / resume (SIGSTOP / SIGCONT),
  outage (kill, wait, restore), flap (outage, up, outage, ... for N cycles).
Runtime faults go through the services' admin RPCs, wherever they run:
  latency, errors (injected error rate), queue (the DB's discipline), expire (drop cached keys),
  freshness (the cache's stale serving, early refresh and TTL jitter).

Every verb takes `--json` and `--dry-run` (says what it would do, does nothing) and appends what
it did to the journal. A done action is also counted by every service still running
(`herdlab_chaos_actions_total{verb,target}`, for Prometheus; `counted_by` names them).
Durations take unit suffixes: 500ms, 10s, 1m, 1m30s.

`latency` and `errors` take `--for D`: the DB is told to put the old values back itself after D
(so the revert holds even if this process is killed), and the command stays in the foreground
until then; Ctrl-C or SIGTERM puts them back at once (exit 130 or 143).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any, NoReturn

import click

from cache_service.settings import CacheSettings
from chaos.cli.context import CONTEXT, Lab, emit_json, out, pass_lab
from chaos.lab.admin import Admin, note_action
from chaos.lab.backends.base import SERVICE_NAMES, Backend, BackendError, ServiceInfo, is_service
from chaos.lab.backends.local import cache_names
from db_service.queueing import NAMES as DISCIPLINES
from db_service.settings import DbSettings
from herdlab import loop
from herdlab.config import DURATION, PROBABILITY, format_value
from herdlab.settings import by_key
from protos import admin_pb2


class _Service(click.ParamType):  # type: ignore[type-arg]
    """A lab service's name; whether the running stack has it is the backend's to say."""

    name = "SERVICE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if not is_service(str(value)):
            self.fail(f"{value!r} is not one of {SERVICE_NAMES}", param, ctx)
        return str(value)

    def get_metavar(self, param: click.Parameter, ctx: click.Context) -> str:
        return "[db|cache|cache-N|redis]"


SERVICE = _Service()
DB_ONLY = click.Choice(("db",))  # the targets runtime faults work on
MAX_CYCLES = 1000
MAX_OUTAGE_S = 3600.0


def _common(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(
        command
    )
    return click.option("--dry-run", is_flag=True, help="Say what would be done; do nothing.")(
        command
    )


def _report(
    lab: Lab,
    verb: str,
    target: str,
    as_json: bool,
    dry_run: bool,
    counted_as: str | None = None,
    **details: Any,
) -> None:
    """Has a done action counted (as acting on `counted_as`, by default `target`), journals it
    with the services that counted it (`counted_by`), then prints it."""
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
        extra = " ".join(f"{k}={format_value(v)}" for k, v in details.items() if k != "service")
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
    return asyncio.run(note_action(running, verb, service))


def _service_doc(info: ServiceInfo) -> dict[str, Any]:
    return {k: v for k, v in asdict(info).items() if v is not None}


def _positive_duration(value: float, flag: str) -> float:
    if not 0 < value <= MAX_OUTAGE_S:
        raise click.BadParameter(
            f"must be in (0, {MAX_OUTAGE_S:g}s], got {value:g}s", param_hint=flag
        )
    return value


def _check_up(lab: Lab, service: str) -> None:
    """What a real run of a process verb checks first (for `--dry-run`): a stack is up and has
    `service`; BackendError as the real run would raise otherwise."""
    if service not in lab.backend().status():
        raise BackendError("no lab stack is up; run 'chaos up' first")


def _act(
    lab: Lab, verb: str, service: str, action: Callable[[Backend, str], ServiceInfo]
) -> ServiceInfo:
    """Runs one backend action, journalling a failure before it propagates."""
    backend = lab.backend()
    try:
        return action(backend, service)
    except BackendError as exc:
        lab.journal.append(verb, service, "error", backend=lab.backend_name, error=str(exc))
        raise


# -- process faults -------------------------------------------------------------------------


def _process_verb(
    verb: str, action: Callable[[Backend, str], ServiceInfo], summary: str
) -> click.Command:
    @click.command(verb, context_settings=CONTEXT, help=summary)
    @click.argument("service", type=SERVICE)
    @_common
    @pass_lab
    def command(lab: Lab, service: str, as_json: bool, dry_run: bool) -> None:
        details: dict[str, Any] = {}
        if dry_run:
            _check_up(lab, service)
        else:
            details["service"] = _service_doc(_act(lab, verb, service, action))
        _report(lab, verb, service, as_json, dry_run, **details)

    return command


kill = _process_verb(
    "kill", lambda b, s: b.kill(s), "SIGKILL a service: it is gone at once; connections reset."
)
restore = _process_verb(
    "restore",
    lambda b, s: b.restore(s),
    "Start a killed service again on the same address; wait for SERVING.",
)
pause = _process_verb(
    "pause",
    lambda b, s: b.pause(s),
    "SIGSTOP a service: it hangs; its callers wait until their deadlines.",
)
resume = _process_verb("resume", lambda b, s: b.resume(s), "SIGCONT a paused service.")


def _outage(lab: Lab, service: str, seconds: float) -> tuple[float, float]:
    """Kill, wait, restore. The service is restored even when interrupted (Ctrl-C)."""
    killed_at = time.time()
    _act(lab, "kill", service, lambda b, s: b.kill(s))
    lab.journal.append("kill", service, "ok", backend=lab.backend_name, within="outage")
    try:
        time.sleep(seconds)
    finally:
        _act(lab, "restore", service, lambda b, s: b.restore(s))
        lab.journal.append("restore", service, "ok", backend=lab.backend_name, within="outage")
    return killed_at, time.time()


@click.command(context_settings=CONTEXT)
@click.argument("service", type=SERVICE)
@click.option("--for", "duration", required=True, type=DURATION, help="How long it stays down.")
@_common
@pass_lab
def outage(lab: Lab, service: str, duration: float, as_json: bool, dry_run: bool) -> None:
    """Kill a service, keep it down for a while, restore it (same address)."""
    _positive_duration(duration, "--for")
    if dry_run:
        _check_up(lab, service)
        _report(lab, "outage", service, as_json, dry_run, seconds=duration)
        return
    down_at, up_at = _outage(lab, service, duration)
    _report(
        lab, "outage", service, as_json, dry_run, seconds=duration, down_at=down_at, up_at=up_at
    )


@click.command(context_settings=CONTEXT)
@click.argument("service", type=SERVICE)
@click.option("--down", "down_s", required=True, type=DURATION, help="Time down per cycle.")
@click.option("--up", "up_s", required=True, type=DURATION, help="Time up per cycle.")
@click.option(
    "--cycles",
    default=5,
    show_default=True,
    type=click.IntRange(1, MAX_CYCLES),
    help="How many outages.",
)
@_common
@pass_lab
def flap(
    lab: Lab, service: str, down_s: float, up_s: float, cycles: int, as_json: bool, dry_run: bool
) -> None:
    """Outage after outage: down, up, down, up ... for N cycles."""
    _positive_duration(down_s, "--down")
    _positive_duration(up_s, "--up")
    if dry_run:
        _check_up(lab, service)
        _report(lab, "flap", service, as_json, dry_run, down_s=down_s, up_s=up_s, cycles=cycles)
        return
    outages = []
    for cycle in range(cycles):
        outages.append(_outage(lab, service, down_s))
        if cycle + 1 < cycles:
            time.sleep(up_s)
    _report(
        lab,
        "flap",
        service,
        as_json,
        dry_run,
        down_s=down_s,
        up_s=up_s,
        cycles=cycles,
        outages=outages,
    )


# -- runtime faults (admin plane) -----------------------------------------------------------


def _admin(lab: Lab) -> Admin:
    services = lab.backend().status()
    caches = cache_names(services)
    if "db" not in services or not caches:
        raise BackendError("no lab stack is up; run 'chaos up' first")
    return Admin(services["db"].grpc, services[caches[0]].grpc)


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


async def _set_faults_for(
    lab: Lab, faults: admin_pb2.Faults, seconds: float | None
) -> tuple[admin_pb2.DbState, int | None]:
    """Sets `faults`; with `seconds`, for that long (see the module). Returns the DB's state
    after the change and the signal that cut the time short (reverted then), if one did."""
    async with _admin(lab) as admin:
        if seconds is None:
            return await admin.set_faults(faults), None
        before = (await admin.db_state()).faults
        previous = admin_pb2.Faults()
        for name in ("latency_ms", "spread_ms", "error_rate"):
            if faults.HasField(name):
                setattr(previous, name, getattr(before, name))
        faults.for_ms = seconds * 1000
        state = await admin.set_faults(faults)
        stopped = await hold_for(seconds, lambda: admin.set_faults(previous))
        return state, stopped


def _timed(lab: Lab, verb: str, target: str, stopped: int | None, details: dict[str, Any]) -> None:
    if stopped is not None:
        lab.journal.append(verb, target, "reverted", backend=lab.backend_name, **details)
        stop_as(stopped)


def _db_only(service: str, verb: str) -> None:
    if service != "db":
        raise click.BadParameter(
            f"{verb} is injected into the db only, not {service!r}", param_hint="SERVICE"
        )


FOR_OPTION = click.option(
    "--for",
    "duration",
    type=DURATION,
    default=None,
    help="Put the old value back after this long (the DB does it itself; Ctrl-C does it now).",
)


def _check_for(lab: Lab, duration: float | None, dry_run: bool) -> None:
    """What a real run checks first: a valid duration, a stack up with a DB."""
    if duration is not None:
        _positive_duration(duration, "--for")
    if dry_run:
        _admin(lab)


@click.command(context_settings=CONTEXT)
@click.argument("service", type=DB_ONLY)
@click.argument("latency", type=DURATION)
@click.option(
    "--spread",
    type=DURATION,
    default=None,
    help="Extra latency, uniform in [0, spread] [default: unchanged].",
)
@FOR_OPTION
@_common
@pass_lab
def latency(
    lab: Lab,
    service: str,
    latency: float,
    spread: float | None,
    duration: float | None,
    as_json: bool,
    dry_run: bool,
) -> None:
    """Set the DB's base latency per query (runtime, through its admin service)."""
    _check_for(lab, duration, dry_run)
    faults = admin_pb2.Faults(latency_ms=latency * 1000)
    if spread is not None:
        faults.spread_ms = spread * 1000
    details: dict[str, Any] = {"latency_ms": latency * 1000}
    if spread is not None:
        details["spread_ms"] = spread * 1000
    if duration is not None:
        details["for_s"] = duration
    if not dry_run:
        state, stopped = loop.run(_set_faults_for(lab, faults, duration))
        details["capacity_per_s"] = round(state.capacity_per_s, 1)
        _timed(lab, "latency", service, stopped, details)
    _report(lab, "latency", service, as_json, dry_run, **details)


@click.command(context_settings=CONTEXT)
@click.argument("service", type=DB_ONLY)
@click.argument("rate", type=PROBABILITY)
@FOR_OPTION
@_common
@pass_lab
def errors(
    lab: Lab, service: str, rate: float, duration: float | None, as_json: bool, dry_run: bool
) -> None:
    """Make the DB fail this fraction of queries with UNAVAILABLE (0 turns it off)."""
    _check_for(lab, duration, dry_run)
    details: dict[str, Any] = {"error_rate": rate}
    if duration is not None:
        details["for_s"] = duration
    if not dry_run:
        _, stopped = loop.run(_set_faults_for(lab, admin_pb2.Faults(error_rate=rate), duration))
        _timed(lab, "errors", service, stopped, details)
    _report(lab, "errors", service, as_json, dry_run, **details)


async def _set_queue(
    lab: Lab, discipline: str, target: float | None, interval: float | None
) -> admin_pb2.DbState:
    async with _admin(lab) as admin:
        return await admin.set_queue_discipline(discipline, target, interval)


@click.command(context_settings=CONTEXT)
@click.argument("service", type=SERVICE)
@click.argument("discipline", type=click.Choice(DISCIPLINES))
@click.option(
    "--target",
    type=DURATION,
    default=None,
    help="CoDel: how long a query joining a standing queue may wait [default: unchanged].",
)
@click.option(
    "--interval",
    type=DURATION,
    default=None,
    help="How long the queue must stay non-empty to stand [default: unchanged].",
)
@_common
@pass_lab
def queue(
    lab: Lab,
    service: str,
    discipline: str,
    target: float | None,
    interval: float | None,
    as_json: bool,
    dry_run: bool,
) -> None:
    """Set how the DB serves its queue: fifo, codel (sheds waiters past their limit) or lifo
    (newest first while the queue stands)."""
    _db_only(service, "queue")
    details: dict[str, Any] = {"discipline": discipline}
    declared = by_key(DbSettings)
    for flag, key, value in (
        ("--target", "codel_target", target),
        ("--interval", "codel_interval", interval),
    ):
        if value is None:
            continue
        problem = declared[key][1].problem(value)
        if problem:
            raise click.BadParameter(problem, param_hint=flag)
        details[f"{key}_ms"] = value * 1000
    if target is not None and interval is not None:
        # Either alone is checked against the DB's current value by the DB itself.
        pair = DbSettings(codel_target_s=target, codel_interval_s=interval).problems()
        if pair:
            raise click.UsageError(pair[0])
    if dry_run:
        _admin(lab)
    else:
        state = loop.run(_set_queue(lab, discipline, target, interval))
        details["codel_target_ms"] = state.capacity.codel_target_ms
        details["codel_interval_ms"] = state.capacity.codel_interval_ms
    _report(lab, "queue", service, as_json, dry_run, **details)


async def _expire(lab: Lab, keys: list[str] | None) -> int:
    """Expires on every replica of the cache (each has its own local store)."""
    services = lab.backend().status()
    expired = 0
    for name in cache_names(services) or ["cache"]:
        if name not in services or "db" not in services:
            raise BackendError("no lab stack is up; run 'chaos up' first")
        async with Admin(services["db"].grpc, services[name].grpc) as admin:
            expired += await admin.expire(keys)
    return expired


@click.command(context_settings=CONTEXT)
@click.argument("keys", nargs=-1)
@click.option("--all", "all_keys", is_flag=True, help="Expire every key.")
@_common
@pass_lab
def expire(lab: Lab, keys: tuple[str, ...], all_keys: bool, as_json: bool, dry_run: bool) -> None:
    """Drop keys from the cache (or --all), so the next reads miss: the start of a stampede."""
    if all_keys == bool(keys):
        raise click.UsageError("give either KEY... or --all")
    target = "all" if all_keys else ",".join(keys)
    details: dict[str, Any] = {}
    if dry_run:
        _admin(lab)
    else:
        details["expired"] = loop.run(_expire(lab, None if all_keys else list(keys)))
    _report(lab, "expire", target, as_json, dry_run, counted_as="cache", **details)


async def _set_coalescing(lab: Lab, enabled: bool) -> None:
    async with _admin(lab) as admin:
        await admin.set_coalescing(enabled)


@click.command(context_settings=CONTEXT)
@click.argument("state", type=click.Choice(("on", "off")))
@_common
@pass_lab
def coalescing(lab: Lab, state: str, as_json: bool, dry_run: bool) -> None:
    """Turn the cache's single-flight coalescing on or off (runtime)."""
    if dry_run:
        _admin(lab)
    else:
        loop.run(_set_coalescing(lab, state == "on"))
    _report(lab, "coalescing", "cache", as_json, dry_run, coalescing=state)


async def _set_capacity(lab: Lab, capacity: admin_pb2.Capacity) -> admin_pb2.DbState:
    async with _admin(lab) as admin:
        return await admin.set_capacity(capacity)


@click.command(context_settings=CONTEXT)
@click.option("--concurrency", type=click.IntRange(1, 1_000_000), default=None, help="DB slots.")
@click.option("--queue", type=click.IntRange(0, 10_000_000), default=None, help="DB wait queue.")
@_common
@pass_lab
def capacity(
    lab: Lab, concurrency: int | None, queue: int | None, as_json: bool, dry_run: bool
) -> None:
    """Set the DB's capacity at runtime: queries served at once and the wait-queue bound."""
    if concurrency is None and queue is None:
        raise click.UsageError("give --concurrency, --queue or both")
    details: dict[str, Any] = {
        k: v for k, v in (("concurrency", concurrency), ("queue", queue)) if v is not None
    }
    if dry_run:
        _admin(lab)
    else:
        state = loop.run(
            _set_capacity(lab, admin_pb2.Capacity(concurrency=concurrency, queue=queue))
        )
        details["capacity_per_s"] = round(state.capacity_per_s, 1)
    _report(lab, "capacity", "db", as_json, dry_run, **details)


async def _set_freshness(lab: Lab, freshness: admin_pb2.Freshness) -> admin_pb2.CacheState:
    async with _admin(lab) as admin:
        return await admin.set_freshness(freshness)


# flag -> (the cache setting whose bounds it has, the admin field it sets)
_FRESHNESS = {
    "--swr": ("stale_while_revalidate", "stale_while_revalidate_s"),
    "--sie": ("stale_if_error", "stale_if_error_s"),
    "--beta": ("beta", "beta"),
    "--ttl-jitter": ("ttl_jitter", "ttl_jitter_pct"),
}


@click.command(context_settings=CONTEXT)
@click.option(
    "--swr",
    type=DURATION,
    default=None,
    help="stale-while-revalidate: serve a value expired less than this long ago while one "
    "background refresh runs; 0 turns it off [default: unchanged].",
)
@click.option(
    "--sie",
    type=DURATION,
    default=None,
    help="stale-if-error: when a fetch fails, serve a value expired less than this long ago "
    "instead of the error; 0 turns it off [default: unchanged].",
)
@click.option(
    "--beta",
    type=float,
    default=None,
    help="XFetch's beta (early refresh); 0 turns it off [default: unchanged].",
)
@click.option(
    "--ttl-jitter",
    type=float,
    default=None,
    help="Shorten each new value's TTL by up to this percentage [default: unchanged].",
)
@_common
@pass_lab
def freshness(
    lab: Lab,
    swr: float | None,
    sie: float | None,
    beta: float | None,
    ttl_jitter: float | None,
    as_json: bool,
    dry_run: bool,
) -> None:
    """Set the cache's freshness policy at runtime (through its admin service): stale serving,
    early refresh and TTL jitter. Unset options keep their value."""
    declared = by_key(CacheSettings)
    request = admin_pb2.Freshness()
    details: dict[str, Any] = {}
    for flag, value in (
        ("--swr", swr),
        ("--sie", sie),
        ("--beta", beta),
        ("--ttl-jitter", ttl_jitter),
    ):
        if value is None:
            continue
        key, field = _FRESHNESS[flag]
        problem = declared[key][1].problem(value)
        if problem:
            raise click.BadParameter(problem, param_hint=flag)
        setattr(request, field, value)
        details[field] = value
    if not details:
        raise click.UsageError("give at least one of --swr, --sie, --beta, --ttl-jitter")
    if dry_run:
        _admin(lab)
    else:
        state = loop.run(_set_freshness(lab, request))
        details = {
            "stale_while_revalidate_s": state.freshness.stale_while_revalidate_s,
            "stale_if_error_s": state.freshness.stale_if_error_s,
            "beta": state.freshness.beta,
            "ttl_jitter_pct": state.freshness.ttl_jitter_pct,
        }
    _report(lab, "freshness", "cache", as_json, dry_run, **details)


COMMANDS = (
    kill,
    restore,
    pause,
    resume,
    outage,
    flap,
    latency,
    errors,
    queue,
    expire,
    coalescing,
    capacity,
    freshness,
)
