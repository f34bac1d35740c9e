"""`chaos herd --workers N` (or `--engine locust`): the herd on a Locust master and N local
workers (`chaos.engine.herd_workers.run_locust`), its result document merged over the workers
with a row per worker. Where the workers are other machines, the Locust command itself is the way
in (`chaos.engine.locustfile`'s docstring, README "The herd on Locust")."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from chaos.cli.context import emit_json, err, out
from chaos.engine.herd import HerdConfig
from chaos.engine.herd_settings import HerdSettings
from chaos.engine.herd_workers import WorkersError, hosts_problem, run_locust
from chaos.lab import extras
from chaos.lab.ports import free_port


def check(processes: int | None, metrics_port: int) -> None:
    """What cannot go with Locust workers: bad input, exit 2, nothing started."""
    try:
        extras.require(extras.LOCUST, "--workers")
    except extras.MissingExtra as exc:
        raise click.UsageError(str(exc)) from None
    if processes is not None:
        raise click.UsageError(
            "--processes is for the asyncio engine; Locust shares the herd over --workers"
        )
    if metrics_port:
        raise click.UsageError(
            "--metrics-port is for the asyncio engine; Locust has its own web UI"
        )


def _db_text(db: dict[str, Any] | None) -> str:
    if db is None:
        return "- (the DB is not the local stack's, or did not answer)"
    spread = db["arrival_spread_s"]
    return f"{db['arrivals']:,} / " + ("-" if spread is None else f"{spread * 1e3:.1f} ms")


def _say(line: str) -> None:
    err.print(line, markup=False, highlight=False)


def herd_on_workers(
    herd: HerdSettings, config: HerdConfig, as_json: bool, db_target: str | None = None
) -> None:
    problem = hosts_problem(herd, config.target, config.tls_ca)
    if problem:
        raise click.UsageError(problem)
    try:
        doc, _ = run_locust(
            herd,
            config.target,
            config.tls_ca,
            herd.worker_count,
            free_port(),
            say=_say,
            db_target=db_target,
        )
    except WorkersError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        emit_json(doc)
        return
    lat, release = doc["latency_s"], doc["release"]
    totals = Table("herd on Locust workers", "", show_header=False)
    for label, value in (
        ("target", doc["target"]),
        ("users / policy", f"{doc['users']:,} / {doc['policy']}"),
        ("sent / ok / lost", f"{doc['sent']:,} / {doc['ok']:,} / {doc['lost']}"),
        ("errors", ", ".join(f"{k} {v:,}" for k, v in doc["errors"].items()) or "none"),
        ("unreported", f"{doc['unreported']:,}"),
        ("wrong values", str(doc["wrong_values"])),
        (
            "latency p50 / p99 / max",
            f"{lat['p50'] * 1e3:.1f} / {lat['p99'] * 1e3:.1f} / {lat['max'] * 1e3:.1f} ms",
        ),
        (
            "release spread across workers",
            "-" if release["spread_s"] is None else f"{release['spread_s'] * 1e3:.1f} ms",
        ),
        ("DB arrivals / their spread", _db_text(doc["db"])),
        (
            "herd RSS per user",
            "-" if doc["rss_per_user_bytes"] is None else f"{doc['rss_per_user_bytes']:,} B",
        ),
    ):
        totals.add_row(label, value)
    out.print(totals)
    rows = Table(
        "worker",
        "address",
        "state",
        "users",
        "ok",
        "errors",
        "unreported",
        "clock offset",
        "spread",
    )
    for row in doc["workers"]:
        spread = row["release_spread_s"]
        rows.add_row(
            str(row["worker"]),
            row["address"] or "-",
            row["state"],
            f"{row['users']:,}",
            f"{row['ok']:,}",
            f"{sum(row['errors'].values()):,}",
            f"{row['unreported']:,}",
            f"{row['clock_offset_s'] * 1e3:.2f} ms",
            "-" if spread is None else f"{spread * 1e3:.1f} ms",
        )
    out.print(rows)
