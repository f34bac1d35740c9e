"""Result documents -> tables (rich and markdown), PNG plots and a report folder.

Every scenario's JSON document has one `Section` here: how to recognise it, its table (one list
of columns, rendered both as a rich `Table` for the terminal and as markdown for `report.md`), its
plots and a line on how to read them. Adding a scenario to reports is one more `Section` in
`SECTIONS` (and its plot function).

`write_report(out_dir, docs)` writes `report.md` (each section's table under the command that made
it, then its plots), every document as JSON and every plot as PNG into `out_dir`, and the same
report as one self-contained page, `report.html` (`chaos.report.html`).

A document may carry `command` (the command line that produced it); the report shows it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from chaos.engine.timeline import BIN_S
from chaos.lab import extras
from chaos.report.html import write_html
from chaos.report.plotting import new_figure, save
from chaos.scenarios import replicas_report
from chaos.scenarios.partition_plot import plot_partition
from chaos.scenarios.reconnect_storm_plot import plot_reconnect_storm
from chaos.scenarios.warm_keys_plot import plot_expiry_herd, plot_stale_outage

Doc = Mapping[str, Any]
PlotFn = Callable[[Doc, Path], object]

MISSING = "n/a"
PLOTS_SKIPPED = f"matplotlib is not installed ({extras.install_hint(extras.PLOT)})"


def _num(value: Any, digits: int = 2) -> str:
    """A number for a table: thousands separators, `digits` decimals for floats, n/a for None."""
    if value is None:
        return MISSING
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


# -- retry storm ----------------------------------------------------------------------------------

RETRY_STORM_COLUMNS = (
    "policy",
    "guards",
    "queue",
    "keys",
    "db_capacity_per_s",
    "db_attempts",
    "amplification",
    "post_restore_peak_per_100ms",
    "post_restore_peak_over_capacity",
    "recovery_s",
    "ideal_recovery_s",
    "slot_time_amplification",
    "client_errors",
    "lost",
)


def retry_storm_rows(doc: Doc) -> list[list[str]]:
    return [
        [
            row["policy"],
            row.get("guards", "none"),
            row.get("queue", "fifo"),
            _num(row["keys"]),
            _num(row["db_capacity_per_s"], 0),
            _num(row["db_attempts"]),
            _num(row["amplification"]),
            _num(row["post_restore_peak_per_100ms"]),
            _num(row["post_restore_peak_over_capacity"]),
            _num(row["recovery_s"]),
            _num(row["ideal_recovery_s"]),
            _num(row.get("slot_time_amplification")),
            _num(row["client_errors"]),
            _num(row["lost"]),
        ]
        for row in doc["policies"]
    ]


def _retry_storm_row_title(row: Mapping[str, Any]) -> str:
    recovery = row["recovery_s"]
    extra = [f"guards {row['guards']}"] if row.get("guards", "none") != "none" else []
    extra += [f"queue {row['queue']}"] if row.get("queue", "fifo") != "fifo" else []
    name = " ".join([row["policy"], *(f"({e})" for e in extra)])
    return (
        f"{name}: peak after restore {row['post_restore_peak_per_100ms']:,} per 100 ms "
        f"= {row['post_restore_peak_over_capacity']:g}x capacity; recovery "
        + ("incomplete" if recovery is None else f"{recovery:.1f} s")
        + f" (ideal {row['ideal_recovery_s']:.1f} s); amplification {row['amplification']:.1f}; "
        f"lost {row['lost']}"
    )


def plot_retry_storm(doc: Doc, path: Path) -> Path:
    """One row per policy on shared axes: DB arrivals per 100 ms (bars, the DB's own record),
    the cache's attempts towards the DB (line: during the outage they fail fast, so the backoff
    instants show there), the outage shaded and the DB's capacity per 100 ms as a line."""
    rows = doc["policies"]
    keys = rows[0]["keys"] if rows else 0
    outage = doc.get("config", {}).get("outage_s")
    down = f", DB killed for {outage:g} s" if outage is not None else ""
    return plot_timelines(
        rows,
        path,
        bars=("db_arrivals", "DB arrivals"),
        line=("cache_attempts", "cache->DB attempts"),
        ylabel="per 100 ms",
        title=f"Retry storm, {keys:,} keys{down}: what reached the DB, per configuration",
        row_title=_retry_storm_row_title,
        served=True,
    )


# The guards' state drawn on a row's second axis, by `guard_timeline` key, with its label.
GUARD_SERIES = (
    ("limit_limit", "concurrency limit"),
    ("limit_in_flight", "calls in flight (limit)"),
    ("breaker_state", "breaker (0 closed, 1 half-open, 2 open)"),
    ("budget_tokens", "retry budget tokens"),
    ("throttle_rejection_probability", "throttle rejection probability"),
)


def plot_timelines(
    rows: Sequence[Mapping[str, Any]],
    path: Path,
    *,
    bars: tuple[str, str],
    ylabel: str,
    title: str,
    row_title: Callable[[Mapping[str, Any]], str],
    line: tuple[str, str] | None = None,
    served: bool = False,
) -> Path:
    """One row per result on shared axes, from each `row["timeline"]`: the series `bars[0]`
    as bars (labelled `bars[1]`), optionally `line[0]` as a step line and (`served`) the values
    users got per bin as a second line, the `outage` ([start_s, end_s]) shaded,
    `db_capacity_per_bin`, if present, as a horizontal line, and the guards' state from
    `row["guard_timeline"]`, if any, on a second axis."""
    count = max(1, len(rows))
    fig = new_figure(12, 2.4 * count + 0.9)
    axes = fig.subplots(count, 1, sharex=True, sharey=True, squeeze=False)
    for ax, row in zip(axes[:, 0], rows, strict=False):
        timeline = row["timeline"]
        bin_s = timeline["bin_s"]
        values = timeline[bars[0]]
        xs = [i * bin_s for i in range(len(values))]
        ax.bar(xs, values, width=bin_s, align="edge", color="#3a6ea5", label=bars[1])
        if line is not None:
            ax.step(
                xs,
                timeline[line[0]],
                where="post",
                color="#e08a1e",
                lw=0.8,
                alpha=0.8,
                label=line[1],
            )
        if served and "served" in timeline:
            ax.step(xs, timeline["served"], where="post", color="#2ca02c", lw=0.9, label="goodput")
        if timeline.get("outage"):
            start, end = timeline["outage"]
            ax.axvspan(start, end, color="#d62728", alpha=0.1, label="DB down")
        capacity = timeline.get("db_capacity_per_bin")
        if capacity:
            ax.axhline(
                capacity,
                color="#d62728",
                lw=1.2,
                ls="--",
                label=f"DB capacity ({capacity:g} per bin)",
            )
        handles, labels = ax.get_legend_handles_labels()
        guards = row.get("guard_timeline") or {}
        drawn = [(k, label) for k, label in GUARD_SERIES if guards.get(k)]
        if drawn:
            twin = ax.twinx()
            for (key, label), color in zip(
                drawn, ("#6a3d9a", "#b15928", "#17becf", "#7f7f7f", "#bcbd22"), strict=False
            ):
                twin.step(
                    guards["t_s"], guards[key], where="post", color=color, lw=1.0, label=label
                )
            twin.set_ylabel("guard state", fontsize=8)
            more_handles, more_labels = twin.get_legend_handles_labels()
            handles, labels = handles + more_handles, labels + more_labels
        order = sorted(range(len(labels)), key=lambda i: labels[i] != bars[1])
        ax.legend(
            [handles[i] for i in order],
            [labels[i] for i in order],
            loc="upper right",
            fontsize=7,
            ncol=4,
        )
        ax.set_title(row_title(row), fontsize=9, loc="left")
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes[-1, 0].set_xlabel("seconds since the herd's release")
    fig.suptitle(title, fontsize=11)
    return save(fig, path)


# -- metastable -----------------------------------------------------------------------------------

METASTABLE_COLUMNS = (
    "configuration",
    "policy",
    "collapsed_s",
    "back_to_90pct_s",
    "herd_attempts",
    "cache_db_attempts",
    "db_drops",
    "db_rejected",
    "errors",
    "lost",
)


def _drops(drops: Mapping[str, int]) -> str:
    shown = [f"{stage} {count:,}" for stage, count in drops.items() if stage != "rejected"]
    return ", ".join(shown) or "0"


def metastable_rows(doc: Doc) -> list[list[str]]:
    return [
        [
            row["configuration"],
            row["policy"],
            _num(row["collapsed_s"], 1),
            _num(row["back_to_90pct_s"], 1),
            _num(row["attempts"]["herd"]),
            _num(row["attempts"]["cache_to_db"]),
            _drops(row["drops_by_stage"]),
            _num(row["drops_by_stage"].get("rejected", 0)),
            _num(sum(row["errors"].values())),
            _num(row["lost"]),
        ]
        for row in doc["rows"]
    ]


def _metastable_row_title(row: Mapping[str, Any]) -> str:
    back = row["back_to_90pct_s"]
    return (
        f"{row['configuration']}: below half capacity for {row['collapsed_s']:g} s after the "
        "trigger; back to 90% "
        + ("never" if back is None else f"after {back:g} s")
        + f"; lost {row['lost']}"
    )


def plot_metastable(doc: Doc, path: Path) -> Path:
    """One row per configuration on shared axes: goodput per 100 ms as a rate (bars), what
    reached the DB (a step line), the DB's capacity (dashed) and the trigger (shaded)."""
    rows = doc["rows"]
    config = doc.get("config", {})
    count = max(1, len(rows))
    fig = new_figure(12, 2.2 * count + 0.9)
    axes = fig.subplots(count, 1, sharex=True, sharey=True, squeeze=False)
    for ax, row in zip(axes[:, 0], rows, strict=False):
        goodput = row["goodput_per_s"]
        xs = [i * BIN_S for i in range(len(goodput))]
        ax.bar(xs, goodput, width=BIN_S, align="edge", color="#3a6ea5", label="goodput")
        arrivals = row["db_arrivals_per_s"]
        ax.step(
            [i * BIN_S for i in range(len(arrivals))],
            arrivals,
            where="post",
            color="#e08a1e",
            lw=0.7,
            alpha=0.8,
            label="DB arrivals",
        )
        if len(row["trigger_s"]) == 2:
            ax.axvspan(*row["trigger_s"], color="#d62728", alpha=0.1, label="trigger")
        capacity = row["db_capacity_per_s"]
        ax.axhline(
            capacity, color="#d62728", lw=1.2, ls="--", label=f"DB capacity ({capacity:g}/s)"
        )
        ax.legend(loc="upper right", fontsize=7, ncol=4)
        ax.set_title(_metastable_row_title(row), fontsize=9, loc="left")
        ax.set_ylabel("per second", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes[-1, 0].set_xlabel("seconds since the open loop started (100 ms bins)")
    rate = config.get("rate_per_s")
    trigger = " then ".join(config.get("trigger", []))
    fig.suptitle(
        f"Metastable failure: {rate:g} arrivals/s, trigger: {trigger}; goodput per configuration",
        fontsize=11,
    )
    return save(fig, path)


# -- warm keys: expiry herd and stale outage ---------------------------------------------------

EXPIRY_HERD_COLUMNS = (
    "freshness",
    "expiry_peak_per_100ms",
    "peak_of_ttl",
    "max_concurrent_db_queries_per_key",
    "db_queries",
    "stale",
    "latency_p99_s",
    "errors",
    "lost",
)


def expiry_herd_rows(doc: Doc) -> list[list[str]]:
    """One row per freshness policy; `peak_of_ttl` is its peak over the plain TTL row's."""
    base = next((r for r in doc["rows"] if r["freshness"] == "ttl"), None)
    return [
        [
            row["freshness"],
            _num(row["expiry_peak_per_100ms"]),
            _num(row["expiry_peak_per_100ms"] / base["expiry_peak_per_100ms"], 3)
            if base and base["expiry_peak_per_100ms"]
            else MISSING,
            _num(row["max_concurrent_db_queries_per_key"]),
            _num(row["db_queries"]),
            _num(row["sources"].get("STALE", 0)),
            _num(row["latency_s"]["p99"], 3),
            _num(sum(row["errors"].values())),
            _num(row["lost"]),
        ]
        for row in doc["rows"]
    ]


STALE_OUTAGE_COLUMNS = (
    "stale_if_error_s",
    "availability",
    "stale_served",
    "max_stale_age_s",
    "stale_age_within_bound",
    "requests",
    "errors",
    "lost",
)


def stale_outage_rows(doc: Doc) -> list[list[str]]:
    return [
        [
            _num(row["stale_if_error_s"], 1),
            _num(row["availability"], 4),
            _num(row["stale_served"]),
            _num(row["max_stale_age_s"], 3),
            str(row["stale_age_within_bound"]).lower(),
            _num(row["requests"]),
            ", ".join(f"{code} {n:,}" for code, n in row["errors"].items()) or "0",
            _num(row["lost"]),
        ]
        for row in doc["rows"]
    ]


# -- reconnect storm ------------------------------------------------------------------------------

RECONNECT_STORM_COLUMNS = (
    "reconnect",
    "policy",
    "users",
    "channels",
    "time_to_first_success_s",
    "time_to_all_channels_ready_s",
    "reconnect_attempts",
    "herd_attempts",
    "failed_after_restore",
    "client_errors",
    "lost",
)


def reconnect_storm_rows(doc: Doc) -> list[list[str]]:
    return [
        [
            row["reconnect"],
            row["policy"],
            _num(row["users"]),
            _num(row["channels"]),
            _num(row["time_to_first_success_s"]),
            _num(row["time_to_all_channels_ready_s"]),
            _num(row["reconnect_attempts"]),
            _num(row["herd_attempts"]),
            _num(row["failed_after_restore"]),
            _num(sum(row["client_errors"].values())),
            _num(row["lost"]),
        ]
        for row in doc["variants"]
    ]


# -- partition ------------------------------------------------------------------------------------

PARTITION_COLUMNS = (
    "fault",
    "keepalive",
    "noticed_s",
    "stayed_ready",
    "reconnect_attempts",
    "all_ready_after_heal_s",
    "client_errors",
    "lost",
)


def partition_rows(doc: Doc) -> list[list[str]]:
    return [
        [
            row["fault"],
            "yes" if row["keepalive"] else "no",
            _num(row["noticed_s"]),
            f"{row['stayed_ready']} of {row['channels']}",
            _num(row["reconnect_attempts"]),
            _num(row["all_ready_after_heal_s"]),
            ", ".join(f"{code} {n:,}" for code, n in sorted(row["client_errors"].items()))
            or "none",
            _num(row["lost"]),
        ]
        for row in doc["rows"]
    ]


# -- soak -----------------------------------------------------------------------------------------

SOAK_COLUMNS = (
    "cycles",
    "sent",
    "ok",
    "lost",
    "wrong_values",
    "stale_values",
    "inflight_after",
    "fds_before",
    "fds_after",
    "rss_before_mib",
    "rss_after_mib",
    "db_dropped",
)


def soak_rows(doc: Doc) -> list[list[str]]:
    def mib(value: Any) -> str:
        return _num(value / 2**20, 1) if isinstance(value, int | float) else MISSING

    return [
        [
            _num(doc.get("cycles")),
            _num(doc.get("sent")),
            _num(doc.get("ok")),
            _num(doc.get("lost")),
            _num(doc.get("wrong_values")),
            _num(doc.get("stale_values")),
            _num(doc.get("inflight_after")),
            _num(doc.get("fds_before")),
            _num(doc.get("fds_after")),
            mib(doc.get("rss_before")),
            mib(doc.get("rss_after")),
            _num(doc.get("db_dropped")),
        ]
    ]


# -- stampede -------------------------------------------------------------------------------------

STAMPEDE_COLUMNS = (
    "scenario",
    "clients",
    "db_queries",
    "errors",
    "lost",
    "seconds",
    "cache_peak_rss_mib",
)


def stampede_rows(doc: Doc) -> list[list[str]]:
    return [
        [
            row["name"],
            _num(row["clients"]),
            _num(row["db_queries"]),
            _num(row["errors"]),
            _num(row["lost"]),
            _num(row["seconds"]),
            _num(row["cache_peak_rss_bytes"] / 2**20, 0),
        ]
        for row in doc["scenarios"]
    ]


# -- any experiment -------------------------------------------------------------------------------


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def experiment_columns(doc: Doc) -> tuple[str, ...]:
    """The variant, then every measure whose values are single numbers or words."""
    rows = doc.get("rows", [])
    measures = doc.get("experiment", {}).get("measures", [])
    shown = [m for m in measures if rows and all(_scalar(r.get(m)) for r in rows)]
    return ("variant", *shown)


def experiment_rows(doc: Doc) -> list[list[str]]:
    columns = experiment_columns(doc)[1:]
    return [
        [
            ", ".join(f"{k}={v}" for k, v in row.get("variant", {}).items()) or "-",
            *(_num(row.get(c)) if not isinstance(row.get(c), str) else row[c] for c in columns),
        ]
        for row in doc.get("rows", [])
    ]


def plot_experiment(doc: Doc, path: Path) -> Path | None:
    """The retry-storm timeline plot for any experiment whose rows measured `timeline`."""
    rows = [r for r in doc.get("rows", []) if "db_arrivals" in r.get("timeline", {})]
    if not rows:
        return None
    return plot_timelines(
        rows,
        path,
        bars=("db_arrivals", "DB arrivals"),
        line=("cache_attempts", "cache->DB attempts"),
        ylabel="per 100 ms",
        title=doc.get("experiment", {}).get("title", "experiment"),
        row_title=lambda r: ", ".join(f"{k}={v}" for k, v in r.get("variant", {}).items()),
    )


def engine_parts(doc: Doc) -> list[str]:
    """The hypothesis, what was done when, and where the result came from (documents written
    by the scenario engine)."""
    parts: list[str] = []
    checks = doc.get("hypothesis", {}).get("checks", [])
    if checks:
        verdict = {True: "held", False: "**DEVIATED**", None: "not checked"}
        parts += [
            "### Hypothesis",
            "",
            markdown_table(
                ("verdict", "tolerance", "variant", "measured", "reference"),
                [
                    [
                        verdict[c["held"]],
                        c["tolerance"],
                        ", ".join(f"{k}={v}" for k, v in c["variant"].items()) or "all",
                        json.dumps(c["measured"]),
                        "" if c["reference"] is None else json.dumps(c["reference"]),
                    ]
                    for c in checks
                ],
            ),
            "",
        ]
    journal = doc.get("journal", [])
    if journal:
        rows = []
        for e in journal:
            details = {
                k: v
                for k, v in e.items()
                if k not in ("trial", "variant", "t_s", "time_ns", "phase", "do")
            }
            rows.append(
                [
                    ", ".join(str(v) for v in e["variant"].values()) or "-",
                    e["phase"],
                    "" if e["t_s"] is None else f"{e['t_s']:+.2f} s",
                    e["do"],
                    json.dumps(details) if details else "",
                ]
            )
        parts += [
            "### What was done when",
            "",
            "Times are from the herd's release; setup runs before it.",
            "",
            markdown_table(("variant", "phase", "at", "action", "details"), rows),
            "",
        ]
    p = doc.get("provenance")
    if p:
        parts += [
            f"Run with herdlab {p.get('herdlab')} ({p.get('git_commit') or 'not a checkout'}), "
            f"Python {p.get('python')}, grpcio {p.get('grpcio')}, {p.get('os')}, "
            f"{p.get('cpu_count')} CPUs, load {p.get('load_average_start')} -> "
            f"{p.get('load_average_end')}, {p.get('started_at')} to {p.get('ended_at')}, "
            f"seeds {p.get('seeds')}; experiment sha256 "
            f"{doc.get('experiment', {}).get('sha256', '')[:12]}.",
            "",
        ]
    return parts


def doc_title(doc: Doc, section: Section) -> str:
    title = doc.get("experiment", {}).get("title") if section.name == "experiment" else None
    return str(title or section.title)


# -- sections -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plot:
    suffix: str  # the PNG is `<section name><suffix>.png`
    draw: PlotFn
    caption: str


@dataclass(frozen=True)
class Section:
    name: str
    title: str
    matches: Callable[[Doc], bool]
    columns: tuple[str, ...] | Callable[[Doc], tuple[str, ...]]
    rows: Callable[[Doc], list[list[str]]]
    plots: tuple[Plot, ...] = ()
    reading: str = ""

    def columns_of(self, doc: Doc) -> tuple[str, ...]:
        return self.columns(doc) if callable(self.columns) else self.columns


SECTIONS: tuple[Section, ...] = (
    Section(
        name="stampede",
        title="Stampede: N clients, one cold key, coalescing off then on",
        matches=lambda doc: "scenarios" in doc,
        columns=STAMPEDE_COLUMNS,
        rows=stampede_rows,
        reading="`db_queries` is what the DB itself counted: one per client without coalescing, "
        "one in all with it.",
    ),
    Section(
        name="retry-storm",
        title="Retry storm: the DB dies under a herd's fetches and comes back",
        matches=lambda doc: doc.get("scenario") == "retry-storm",
        columns=RETRY_STORM_COLUMNS,
        rows=retry_storm_rows,
        plots=(Plot("", plot_retry_storm, "DB arrivals and cache attempts per 100 ms"),),
        reading="Each row is one policy on its own fresh stack, 100 ms per bar. The shaded band is "
        "the outage (SIGKILL until the DB listens again); the dashed line is what the DB can "
        "serve in 100 ms; the thin line is every attempt the cache made, including those that "
        "failed fast while the DB was down. Without jitter the fetches that failed together at "
        "the kill retry together at every backoff instant (base, 2 x base, 4 x base ... up to "
        "the cap): the DB meets them as a spike far above capacity, the attempts that wait past "
        "their deadline fail together and come back together once more. With full jitter the "
        "same fetches arrive spread out, near capacity, and recovery comes close to the ideal.",
    ),
    Section(
        name="reconnect-storm",
        title="Reconnect storm: the cache dies under a herd holding M channels and comes back",
        matches=lambda doc: doc.get("scenario") == "reconnect-storm",
        columns=RECONNECT_STORM_COLUMNS,
        rows=reconnect_storm_rows,
        plots=(
            Plot("", plot_reconnect_storm, "Herd attempts, responses and reconnects per 100 ms"),
        ),
        reading="Each row is one (reconnect backoff, herd retry policy) pair on its own fresh "
        "stack, 100 ms per bar. The shaded band is the outage (SIGKILL until the cache listens "
        "again); grey bars are herd attempts, the blue line the responses served, red stems the "
        "channels' connection attempts (from gRPC's channelz). Times in the table are from the "
        "moment the cache listens again. With gRPC's default backoff (1 s, x1.6, up to 120 s) the "
        "channels try again at ~1, 2.6, 5.2, 9.3, 15.8 s after the kill: the cache is back but "
        "every channel still in backoff fails its calls fast with UNAVAILABLE (grey bars with no "
        "blue) until its next attempt, seconds later. Tuned (100 ms, at most 1 s) every channel "
        "is READY within about a second.",
    ),
    Section(
        name="partition",
        title="Partition vs kill: how soon the herd notices, how it comes back",
        matches=lambda doc: doc.get("scenario") == "partition",
        columns=PARTITION_COLUMNS,
        rows=partition_rows,
        plots=(Plot("", plot_partition, "Herd attempts, responses and reconnects per 100 ms"),),
        reading="Each row is one (fault, keepalive) pair on its own fresh stack with the wire "
        "proxy in front of the cache, on the reconnect storm's axes. A kill resets every "
        "connection: the herd sees UNAVAILABLE at once and reconnects at once. A partition "
        "leaves the connections open and silent: without keepalive every call waits out its "
        "deadline and the channels stay READY on dead connections; with keepalive pings the "
        "loss is noticed within the ping interval plus its timeout, the channels reconnect "
        "(each attempt into the partition hangs until the connect timeout) and are all READY "
        "again soon after the heal. `noticed_s` counts from the fault's start, "
        "`all_ready_after_heal_s` from the heal.",
    ),
    Section(
        name="metastable",
        title="Metastable failure: the trigger gone, the overload kept by retries",
        matches=lambda doc: doc.get("scenario") == "metastable",
        columns=METASTABLE_COLUMNS,
        rows=metastable_rows,
        plots=(Plot("", plot_metastable, "Goodput and DB arrivals per 100 ms, per configuration"),),
        reading="Each row is one configuration on its own fresh stack, 100 ms per bar, as a rate "
        "per second. Bars are goodput: answers that reached a user still waiting. The step line "
        "is every query that reached the DB, the dashed line what the DB can serve, the shaded "
        "band the trigger. Under FIFO the DB stays busy after the trigger is gone, at several "
        "times its capacity in arrivals, while goodput stays near zero: the queue stands at the "
        "cache's attempt deadline, the queries served are cut by it mid-service, and their "
        "retries keep the queue standing. `collapsed_s` is the time after the trigger's end that "
        "goodput spent below half the DB's capacity (1 s windows, up to the run's end), "
        "`back_to_90pct_s` the time to the first window at 90% of the arrival rate. DB drops "
        "are by stage: deadline (too little time "
        "left at dequeue), work (cut mid-service), queue (caller gone while waiting), codel "
        "(shed).",
    ),
    Section(
        name="replicas",
        title="Replicas: one cold key over R replicas, local single-flight against leases",
        matches=lambda doc: doc.get("scenario") == "replicas",
        columns=replicas_report.COLUMNS,
        rows=replicas_report.rows,
        plots=(Plot("", replicas_report.plot_replicas, "Values, errors and DB queries per row"),),
        reading="Each row is one stack of R replicas under one herd on one cold key. `db_queries` "
        "is what the DB counted: with only local single-flight each replica that got a user "
        "fetched (up to R); with leases the replica that took the key's lease fetched and the "
        "others waited for its publication (1). With the holder SIGKILLed once its query "
        "reached the DB, its users got UNAVAILABLE, the lease ran out (only a live holder renews "
        "it), another replica took it over (`takeovers`) and fetched: `served_after_s` is from "
        "the kill to the next value served, the lease's remaining time plus one DB query.",
    ),
    Section(
        name="expiry-herd",
        title="Expiry herd: warm keys written together, refreshed by TTL, jitter, XFetch or SWR",
        matches=lambda doc: doc.get("scenario") == "expiry-herd",
        columns=EXPIRY_HERD_COLUMNS,
        rows=expiry_herd_rows,
        plots=(Plot("", plot_expiry_herd, "DB arrivals per 100 ms, per freshness policy"),),
        reading="Each row is one freshness policy on its own fresh stack, 100 ms per bar. The "
        "keys were warmed at one moment, so after the release every query that reaches the DB "
        "is a refresh. Plain TTL: one wall of refreshes at the common expiry, as fast as the "
        "load reaches the keys. Jitter spreads the wall over its share of the TTL. XFetch "
        "refreshes each key at a random moment a few recompute times before its expiry (the "
        "users keep getting HITs meanwhile). Stale-while-revalidate meets the same wall as TTL "
        "but users get the old value at once instead of waiting for the fetch (`stale`, p99). "
        "`max_concurrent_db_queries_per_key` is the DB's exact count: single-flight keeps it at "
        "1 in one process.",
    ),
    Section(
        name="stale-outage",
        title="Stale outage: warm keys through a DB outage, with and without stale-if-error",
        matches=lambda doc: doc.get("scenario") == "stale-outage",
        columns=STALE_OUTAGE_COLUMNS,
        rows=stale_outage_rows,
        plots=(Plot("", plot_stale_outage, "Fresh, stale and failed answers per 100 ms"),),
        reading="Each row runs on its own fresh stack, 100 ms per bar: fresh values (blue), stale "
        "values (yellow), errors (red), the DB's outage shaded. Keys expire during the outage "
        "(the TTL is shorter): without stale-if-error their requests fail until the DB is back "
        "and reconnected; with it the cache answers them with the value it kept, as STALE with "
        "its age, never past the bound.",
    ),
    Section(
        name="soak",
        title="Soak: the DB and the cache killed, paused and restored, cycle after cycle",
        matches=lambda doc: doc.get("scenario") == "soak",
        columns=SOAK_COLUMNS,
        rows=soak_rows,
        reading="Nothing may be lost, wrong or stale; nothing left in flight; the long-lived "
        "cache's file descriptors and memory are read at the same quiet point before and after.",
    ),
    Section(
        name="experiment",
        title="Experiment",
        matches=lambda doc: "experiment" in doc and "rows" in doc,
        columns=experiment_columns,
        rows=experiment_rows,
        plots=(Plot("", plot_experiment, "DB arrivals and cache attempts per 100 ms"),),
    ),
)


def section_for(doc: Doc) -> Section:
    for section in SECTIONS:
        if section.matches(doc):
            return section
    raise ValueError(f"not a result document the report knows: keys {sorted(doc)[:8]}")


def table_for(doc: Doc, expect: str | None = None) -> Table:
    """The rich table of any known result document (of kind `expect`, if given)."""
    section = section_for(doc)
    if expect is not None and section.name != expect:
        raise ValueError(f"expected a {expect} result document, got a {section.name} one")
    table = Table(*section.columns_of(doc), title=doc_title(doc, section))
    for row in section.rows(doc):
        table.add_row(*row)
    return table


def retry_storm_table(doc: Doc) -> Table:
    return table_for(doc, "retry-storm")


def stampede_table(doc: Doc) -> Table:
    return table_for(doc, "stampede")


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(columns), line(["---"] * len(columns)), *(line(r) for r in rows)])


def write_report(out_dir: Path, docs: Sequence[Doc]) -> Path:
    """Writes report.md, report.html, one JSON file per document and its PNGs into `out_dir`;
    returns it.

    Without matplotlib (the `plot` extra) the PNGs are skipped: report.md says so under each
    table that has figures, and one line on stderr says so once."""
    out_dir.mkdir(parents=True, exist_ok=True)
    draw = extras.installed(extras.PLOT)
    if not draw and any(section_for(doc).plots for doc in docs):
        print(f"chaos: report without plots: {PLOTS_SKIPPED}", file=sys.stderr)
    used: dict[str, int] = {}
    parts = [
        "# herdlab report",
        "",
        f"Generated {datetime.now(UTC).strftime('%Y-%m-%d %H:%M:%S')} UTC.",
    ]
    for doc in docs:
        section = section_for(doc)
        used[section.name] = used.get(section.name, 0) + 1
        name = section.name + (f"-{used[section.name]}" if used[section.name] > 1 else "")
        (out_dir / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
        parts += ["", f"## {doc_title(doc, section)}", ""]
        if doc.get("experiment", {}).get("description"):
            parts += [" ".join(doc["experiment"]["description"].split()), ""]
        if doc.get("command"):
            parts += ["```", str(doc["command"]), "```", ""]
        parts += [markdown_table(section.columns_of(doc), section.rows(doc)), ""]
        if section.plots and not draw:
            parts += [f"Plots skipped: {PLOTS_SKIPPED}.", ""]
        for plot in section.plots if draw else ():
            png = out_dir / f"{name}{plot.suffix}.png"
            plot.draw(doc, png)
            if png.exists():  # a plot with nothing to draw writes no file
                parts += [f"![{plot.caption}]({png.name})", ""]
        if section.reading:
            parts += [section.reading, ""]
        parts += engine_parts(doc)
        parts += [f"Data: [{name}.json]({name}.json)"]
    markdown = "\n".join(parts) + "\n"
    (out_dir / "report.md").write_text(markdown)
    write_html(out_dir, markdown)
    return out_dir
