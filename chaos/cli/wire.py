"""Wire faults from the command line, and the faults in force as a whole.

- `chaos partition db|cache [--for D]`: blackhole both directions of the service's proxy link
  (connections stay open and carry nothing: half-open);
- `chaos wire db|cache --latency 200ms [--jitter 50ms] | --bandwidth KIB | --blackhole |
  --reset | --timeout D | --limit BYTES [--stream S] [--for D]`: one fault on the link;
- `chaos heal db|cache`: remove the link's wire faults;
- `chaos faults [--json]`: what is in force (wire faults, the DB's latency, error rate and
  capacity, the cache's coalescing, paused or killed services), each marked where it differs
  from the stack's start settings;
- `chaos reset`: everything back to the stack's start settings, wire faults removed.

A fault given `--for D` is handed to the proxy with that deadline, so it expires even if this
process is killed; the command stays in the foreground until then, and Ctrl-C or SIGTERM
removes the fault at once (exit 130 or 143). They all need the local stack started with
`--proxy` (exit 2 with one line otherwise), and take `--json`, `--dry-run` and write the
journal like the other verbs (`chaos.cli.live`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from typing import Any

import click

from cache_service.__main__ import main as cache_main
from cache_service.settings import CacheSettings
from chaos.cli.context import CONTEXT, Lab, emit_json, out, pass_lab
from chaos.cli.live import common, hold_for, report, stop_as
from chaos.engine.actions.base import positive_duration
from chaos.lab.admin import Admin
from chaos.lab.backends.base import BackendError
from chaos.lab.backends.local import ServiceRecord, cache_names
from chaos.wire.admin import WireClient, fault_doc
from chaos.wire.proxy import LINK_NAMES, STREAMS, parse_fault
from db_service.__main__ import main as db_main
from db_service.settings import DbSettings
from herdlab import loop, settings
from herdlab.auth import AdminError
from herdlab.config import DURATION, format_value
from protos import admin_pb2, wire_pb2

LINK = click.Choice(LINK_NAMES)


def _proxy(lab: Lab, link: str) -> str:
    """The proxy's admin address, once it is known to stand in front of `link`."""
    if lab.backend_name != "local":
        raise BackendError("wire faults need the local stack's proxy ('chaos up --proxy ...')")
    admin = lab.stack.proxy_admin()
    if link not in lab.stack.proxied():
        raise BackendError(f"the wire proxy is not in front of {link}; restart with --proxy {link}")
    return admin


async def _apply(admin: str, fault: wire_pb2.Fault) -> tuple[wire_pb2.Fault, int | None]:
    async with WireClient(admin) as client:
        added = await client.add(fault)
        if fault.for_ms <= 0 or fault.once:
            return added, None

        async def remove() -> None:
            with contextlib.suppress(AdminError):  # NOT_FOUND: it has just expired
                await client.remove(added.name)

        return added, await hold_for(fault.for_ms / 1000, remove)


def _put(
    lab: Lab,
    verb: str,
    link: str,
    fault: wire_pb2.Fault,
    as_json: bool,
    dry_run: bool,
) -> None:
    try:
        parse_fault(
            fault.name,
            link,
            fault.kind,
            dict(fault.attributes),
            stream=fault.stream,
            for_ms=fault.for_ms,
            once=fault.once,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    admin = _proxy(lab, link)
    details: dict[str, Any] = {"fault": fault.kind, "stream": fault.stream or "both"}
    details.update({k: round(v, 3) for k, v in fault.attributes.items()})
    if fault.for_ms:
        details["for_s"] = fault.for_ms / 1000
    if dry_run:
        report(lab, verb, link, as_json, dry_run, **details)
        return
    added, stopped = loop.run(_apply(admin, fault))
    details["name"] = added.name
    if added.expires_at_unix:
        details["expires_at"] = added.expires_at_unix
    if stopped is not None:
        lab.journal.append(verb, link, "reverted", backend=lab.backend_name, **details)
        stop_as(stopped)
    report(lab, verb, link, as_json, dry_run, **details)


def _for_ms(duration: float | None) -> float:
    if duration is None:
        return 0.0
    problem = positive_duration(duration)
    if problem:
        raise click.BadParameter(problem, param_hint="--for")
    return duration * 1000


@click.command(context_settings=CONTEXT)
@click.argument("service", type=LINK)
@click.option("--for", "duration", type=DURATION, default=None, help="Heal after this long.")
@common
@pass_lab
def partition(lab: Lab, service: str, duration: float | None, as_json: bool, dry_run: bool) -> None:
    """Partition a service on the wire: its connections stay open and carry nothing, both ways
    (no reset: clients notice only by keepalive or deadline). Needs 'chaos up --proxy'."""
    fault = wire_pb2.Fault(
        name=f"{service}-partition",
        link=service,
        kind="blackhole",
        stream="both",
        for_ms=_for_ms(duration),
    )
    _put(lab, "partition", service, fault, as_json, dry_run)


@click.command(context_settings=CONTEXT)
@click.argument("service", type=LINK)
@click.option("--latency", type=DURATION, default=None, help="Delay each chunk this long.")
@click.option("--jitter", type=DURATION, default=None, help="With --latency: +- spread.")
@click.option("--bandwidth", type=click.FloatRange(min=0.001), default=None, help="KiB/s at most.")
@click.option("--blackhole", is_flag=True, help="Drop the bytes, keep the connections.")
@click.option("--reset", is_flag=True, help="Reset (TCP RST) the connections open now.")
@click.option("--timeout", type=DURATION, default=None, help="Drop bytes; close after this.")
@click.option("--limit", type=click.IntRange(min=0), default=None, help="Close after N bytes.")
@click.option(
    "--stream",
    type=click.Choice(STREAMS),
    default="both",
    show_default=True,
    help="Which direction: upstream (client to service), downstream, or both.",
)
@click.option("--for", "duration", type=DURATION, default=None, help="Remove it after this long.")
@common
@pass_lab
def wire(
    lab: Lab,
    service: str,
    latency: float | None,
    jitter: float | None,
    bandwidth: float | None,
    blackhole: bool,
    reset: bool,
    timeout: float | None,
    limit: int | None,
    stream: str,
    duration: float | None,
    as_json: bool,
    dry_run: bool,
) -> None:
    """Put one fault on a service's proxy link: latency (+ jitter), bandwidth, blackhole, reset,
    timeout or limit. --reset without --for resets the connections open now, once; with --for,
    new connections are reset too until it ends. Needs 'chaos up --proxy'."""
    asked: dict[str, dict[str, float]] = {}
    if latency is not None:
        asked["latency"] = {"latency_ms": latency * 1000, "jitter_ms": (jitter or 0.0) * 1000}
    if bandwidth is not None:
        asked["bandwidth"] = {"rate_kbps": bandwidth}
    if blackhole:
        asked["blackhole"] = {}
    if reset:
        asked["reset"] = {}
    if timeout is not None:
        asked["timeout"] = {"timeout_ms": timeout * 1000}
    if limit is not None:
        asked["limit"] = {"max_bytes": float(limit)}
    if len(asked) != 1:
        raise click.UsageError(
            "give exactly one of --latency, --bandwidth, --blackhole, --reset, --timeout, --limit"
        )
    if jitter is not None and latency is None:
        raise click.UsageError("--jitter goes with --latency")
    ((kind, attributes),) = asked.items()
    fault = wire_pb2.Fault(
        name=f"{service}-{kind}",
        link=service,
        kind=kind,
        stream=stream,
        attributes=attributes,
        for_ms=_for_ms(duration),
        once=kind == "reset" and duration is None,
    )
    _put(lab, "wire", service, fault, as_json, dry_run)


async def _heal(admin: str, link: str) -> list[str]:
    async with WireClient(admin) as client:
        names = [f.name for f in await client.faults() if f.link == link]
        for name in names:
            await client.remove(name)
        return names


@click.command(context_settings=CONTEXT)
@click.argument("service", type=LINK)
@common
@pass_lab
def heal(lab: Lab, service: str, as_json: bool, dry_run: bool) -> None:
    """Remove every wire fault on a service's proxy link."""
    admin = _proxy(lab, service)
    details: dict[str, Any] = {}
    if not dry_run:
        details["removed"] = loop.run(_heal(admin, service))
    report(lab, "heal", service, as_json, dry_run, **details)


# -- what is in force -------------------------------------------------------------------------


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


async def in_force(lab: Lab, records: Mapping[str, ServiceRecord] | None = None) -> dict[str, Any]:
    """What is in force now (`chaos faults --json`; `chaos status` shows it too). A local
    stack's state file is read once (or `records`, read by the caller, is used)."""
    db_start: DbSettings | None = None
    cache_start: CacheSettings | None = None
    if lab.backend_name == "local":
        known = lab.stack.records() if records is None else records
        services = lab.stack.status(known)
        db_start, cache_start = start_settings(known)  # no stack: the same error as below
    else:
        services = lab.backend().status()
    caches = cache_names(services)
    if "db" not in services or not caches:
        raise BackendError("no lab stack is up; run 'chaos up' first")
    doc: dict[str, Any] = {
        "services": {n: s.state for n, s in services.items() if s.state != "running"},
        "db": None,
        "cache": None,
        "wire": [],
    }
    async with Admin(services["db"].grpc, services[caches[0]].grpc) as admin:
        if services["db"].state == "running":
            state = await admin.db_state()
            db = {
                "latency_ms": state.faults.latency_ms,
                "spread_ms": state.faults.spread_ms,
                "error_rate": state.faults.error_rate,
                "concurrency": state.capacity.concurrency,
                "queue": state.capacity.queue,
                "discipline": state.capacity.discipline,
            }
            reverts = dict(state.reverts_at_unix)
            if db_start is not None:
                start = _db_start(db_start)
                db["changed"] = sorted(k for k, v in db.items() if start[k] != v)
            db["reverts_at"] = reverts  # set with --for: when the DB puts each back
            doc["db"] = db
        if services[caches[0]].state == "running":
            cache_state = await admin.cache_state()
            cache: dict[str, Any] = {"coalescing": cache_state.coalescing}
            if cache_start is not None:
                cache["changed"] = (
                    ["coalescing"] if cache_start.coalescing != cache_state.coalescing else []
                )
            doc["cache"] = cache
    if lab.backend_name == "local" and "wire" in services and services["wire"].state == "running":
        async with WireClient(services["wire"].grpc) as client:
            doc["wire"] = [fault_doc(f) for f in await client.faults()]
    return doc


def settings_text(values: Mapping[str, Any]) -> str:
    """A service's settings in force (`in_force`'s `db` or `cache`) as one `k=v, ...` text."""
    return ", ".join(
        f"{k}={format_value(v)}" for k, v in values.items() if k not in ("changed", "reverts_at")
    )


def _db_start(db: DbSettings) -> dict[str, Any]:
    return {
        "latency_ms": db.latency_s * 1000,
        "spread_ms": db.spread_s * 1000,
        "error_rate": db.error_rate,
        "concurrency": db.concurrency,
        "queue": db.queue,
        "discipline": db.queue_discipline,
    }


@click.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print them as JSON.")
@pass_lab
def faults(lab: Lab, as_json: bool) -> None:
    """List what is in force: wire faults, the DB's latency, error rate and capacity, the
    cache's coalescing, paused or killed services; settings changed since 'chaos up' marked."""
    doc = loop.run(in_force(lab))
    if as_json:
        emit_json(doc)
        return
    lines = [f"{name}: {state}" for name, state in doc["services"].items()]
    for service in ("db", "cache"):
        values = doc[service]
        if values is None:
            continue
        changed = set(values.get("changed", ()))
        text = settings_text(values)
        reverts = values.get("reverts_at") or {}
        text += "".join(
            f", {k} reverts in {max(0.0, at - time.time()):.1f}s" for k, at in reverts.items()
        )
        lines.append(
            f"{service}: {text}" + (f" (changed: {', '.join(sorted(changed))})" if changed else "")
        )
    for fault in doc["wire"]:
        left = fault["expires_at"]
        until = f", {max(0.0, left - time.time()):.1f}s left" if left else ""
        attrs = " ".join(f"{k}={format_value(v)}" for k, v in fault["attributes"].items())
        lines.append(
            f"wire {fault['link']}: {fault['kind']} {fault['stream']} {attrs}".rstrip()
            + f" ({fault['name']}{until})"
        )
    out.print("\n".join(lines))


async def _reset(lab: Lab) -> dict[str, Any]:
    backend = lab.backend()
    services = backend.status()
    caches = cache_names(services)
    if "db" not in services or not caches:
        raise BackendError("no lab stack is up; run 'chaos up' first")
    done: dict[str, Any] = {"resumed": [], "restored": [], "wire_removed": []}
    for name, info in services.items():
        if info.state == "paused":
            backend.resume(name)
            done["resumed"].append(name)
    for name, info in services.items():
        if info.state == "stopped" and name != "wire":
            backend.restore(name)
            done["restored"].append(name)
    db, cache = (
        start_settings(lab.stack.records())
        if lab.backend_name == "local"
        else (DbSettings(), CacheSettings())
    )
    async with Admin(services["db"].grpc, services[caches[0]].grpc) as admin:
        await admin.set_faults(
            admin_pb2.Faults(
                latency_ms=db.latency_s * 1000,
                spread_ms=db.spread_s * 1000,
                error_rate=db.error_rate,
            )
        )
        await admin.set_capacity(
            admin_pb2.Capacity(
                concurrency=db.concurrency,
                queue=db.queue,
                discipline=db.queue_discipline,
                codel_target_ms=db.codel_target_s * 1000,
                codel_interval_ms=db.codel_interval_s * 1000,
            )
        )
    for name in caches:  # every replica
        async with Admin(services["db"].grpc, services[name].grpc) as admin:
            await admin.set_coalescing(cache.coalescing)
    if lab.backend_name == "local" and "wire" in services:
        async with WireClient(services["wire"].grpc) as client:
            done["wire_removed"] = [f.name for f in await client.clear()]
    return done


@click.command("reset", context_settings=CONTEXT)
@common
@pass_lab
def reset_command(lab: Lab, as_json: bool, dry_run: bool) -> None:
    """Return the stack to its start settings: wire faults removed, the DB's latency, error rate
    and capacity and the cache's coalescing as 'chaos up' set them, paused services resumed,
    killed ones restored."""
    details: dict[str, Any] = {}
    if dry_run:
        start_settings(lab.stack.records())
    else:
        details = loop.run(_reset(lab))
    report(lab, "reset", "stack", as_json, dry_run, **details)


COMMANDS = (partition, wire, heal, faults, reset_command)
