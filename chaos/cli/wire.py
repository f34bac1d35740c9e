"""`chaos faults [--json]`: the faults in force as a whole (wire faults, the DB's latency, error
rate and capacity, the cache's coalescing, paused or killed services), each marked where it
differs from the stack's start settings.

The faults themselves (`partition`, `wire`, `heal`, `reset` back to the start settings) are
actions, `chaos.engine.actions`, made verbs by `chaos.cli.verbs`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import click

from cache_service.settings import CacheSettings
from chaos.cli.context import CONTEXT, Lab, emit_json, out, pass_lab
from chaos.cli.live import start_settings
from chaos.lab.admin import Admin
from chaos.lab.backends.base import BackendError
from chaos.lab.backends.local import cache_names
from chaos.lab.state import ServiceRecord
from chaos.wire.admin import WireClient, fault_doc
from db_service.settings import DbSettings
from herdlab import loop
from herdlab.config import format_value

# -- what is in force -------------------------------------------------------------------------


async def in_force(lab: Lab, records: Mapping[str, ServiceRecord] | None = None) -> dict[str, Any]:
    """What is in force now (`chaos faults --json`; `chaos status` shows it too). A local
    stack's state file is read once (or `records`, read by the caller, is used)."""
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


COMMANDS = (faults,)
