"""`chaos faults [--json]`: the faults in force as a whole (wire faults, the DB's latency, error
rate and capacity, the cache's coalescing, paused or killed services), each marked where it
differs from the stack's start settings.

`chaos proxy --listen 127.0.0.1:P --upstream HOST:PORT`: the wire proxy alone, in the foreground,
in front of the user's own service (its link is `target`); while it runs its record is in the
state dir (`LocalStack.proxy_file`), so the wire verbs reach it by that name.

The faults themselves (`partition`, `wire`, `heal`, `reset` back to the start settings) are
actions, `chaos.engine.actions`, made verbs by `chaos.cli.verbs`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import click
import psutil

from cache_service.settings import CacheSettings
from chaos.cli.context import CONTEXT, Lab, emit_json, out, pass_lab
from chaos.cli.live import start_settings
from chaos.lab.admin import Admin
from chaos.lab.backends.base import BackendError
from chaos.lab.backends.local import cache_names
from chaos.lab.ports import free_port
from chaos.lab.state import ServiceRecord, save_records
from chaos.wire.__main__ import serve_links
from chaos.wire.admin import WireClient, fault_doc
from chaos.wire.proxy import TARGET_LINK, Link
from db_service.settings import DbSettings
from herdlab import loop
from herdlab.config import PORT, format_value

LOOPBACK = ("127.0.0.1", "localhost", "::1")

# -- what is in force -------------------------------------------------------------------------


async def in_force(lab: Lab, records: Mapping[str, ServiceRecord] | None = None) -> dict[str, Any]:
    """What is in force now (`chaos faults --json`; `chaos status` shows it too). A local
    stack's state file is read once (or `records`, read by the caller, is used)."""
    alone = lab.stack.standalone_proxy() if lab.backend_name == "local" else None
    if alone is not None and not (lab.stack.records() if records is None else records):
        # `chaos proxy` in front of the user's service, no lab stack: its faults are all there is.
        async with WireClient(alone.grpc) as client:
            wire = [fault_doc(f) for f in await client.faults()]
        return {"services": {}, "db": None, "cache": None, "wire": wire}
    db_start: DbSettings | None = None
    cache_start: CacheSettings | None = None
    known: Mapping[str, ServiceRecord] | None = None
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
    async with Admin(
        services["db"].grpc, services[caches[0]].grpc, tls_ca=lab.tls_ca(known)
    ) as admin:
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
        counts = ", ".join(f"{k} {v}" for k, v in fault.get("counts", {}).items())
        lines.append(
            f"wire {fault['link']}: {fault['kind']} {fault['stream']} {attrs}".rstrip()
            + f" ({fault['name']}{until})"
            + (f": {counts}" if counts else "")
        )
    out.print("\n".join(lines))


def _address(text: str, flag: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise click.BadParameter(f"must read HOST:PORT, got {text!r}", param_hint=flag)
    return host.strip("[]"), int(port)


@click.command(context_settings=CONTEXT)
@click.option(
    "--listen", required=True, metavar="127.0.0.1:PORT", help="Where clients connect (loopback)."
)
@click.option(
    "--upstream", required=True, metavar="HOST:PORT", help="Your service, which it forwards to."
)
@click.option(
    "--admin-port",
    type=PORT,
    default=0,
    help="The proxy's admin plane (gRPC) on the listen host [default: a free port].",
)
@click.option("--seed", type=int, default=None, help="Seed of jitter and toxicity draws.")
@pass_lab
def proxy(lab: Lab, listen: str, upstream: str, admin_port: int, seed: int | None) -> None:
    """Run the lab's wire proxy alone in front of your own service until Ctrl-C; every wire
    fault works on its link, named target: 'chaos partition target --for 10s', 'chaos wire
    target --latency 200ms', 'chaos heal target', 'chaos faults'."""
    host, port = _address(listen, "--listen")
    upstream_host, upstream_port = _address(upstream, "--upstream")
    if host not in LOOPBACK:
        raise click.BadParameter(f"listens on loopback only, got {host!r}", param_hint="--listen")
    if upstream_port == 0:
        raise click.BadParameter("the upstream's port must not be 0", param_hint="--upstream")
    stack = lab.stack
    running = stack.standalone_proxy()
    if running is not None:
        raise BackendError(f"a proxy already runs (pid {running.pid}, admin {running.grpc})")
    admin = admin_port or free_port()

    def listening(links: dict[str, Link]) -> None:
        record = ServiceRecord(
            name="proxy",
            argv=[],
            grpc=f"{host}:{admin}",
            metrics="",
            log="",
            pid=os.getpid(),
            started_at=psutil.Process().create_time(),
            state="running",
            links={TARGET_LINK: links[TARGET_LINK].listen},
        )
        save_records(stack.proxy_file, {"proxy": record})
        out.print(f"proxy admin {host}:{admin}; faults: chaos wire|partition|heal target ...")

    try:
        loop.run(
            serve_links(
                host,
                admin,
                [(TARGET_LINK, port, upstream_host, upstream_port)],
                seed,
                1.0,
                None,
                listening,
            )
        )
    finally:
        stack.proxy_file.unlink(missing_ok=True)


COMMANDS = (faults, proxy)
