"""Result documents -> tables (rich and markdown), PNG plots and a report folder.

One renderer for every document: its kind (`chaos.engine.kinds`, registered by the scenario's
folder, `chaos/scenarios/NAME/`) declares its table's columns once (field, header, format), its
plots and a line on how to read them; a table is written from those declarations both as a rich
`Table` for the terminal and as markdown for `report.md`. An experiment without a kind shows its
variant and every measure whose values are single numbers or words, and the timeline figure if
its rows measured one. Adding a scenario to reports is declaring its kind's columns.

`write_report(out_dir, docs)` writes `report.md` (each document's table under the command that
made it, then its plots), every document as JSON and every plot as PNG into `out_dir`, and the
same report as one self-contained page, `report.html` (`chaos.report.html`).

A document may carry `command` (the command line that produced it); the report shows it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from chaos.engine.kinds import ERROR, PLAIN, Column, Kind, Plot, variant_title
from chaos.engine.registry import KINDS, load_all
from chaos.engine.runner import ERROR_CAUSES, causes_text
from chaos.lab import extras
from chaos.report.html import write_html
from chaos.report.timelines import plot_experiment

Doc = Mapping[str, Any]

MISSING = "n/a"
PLOTS_SKIPPED = f"matplotlib is not installed ({extras.install_hint(extras.PLOT)})"
EXPERIMENT_PLOT = Plot(plot_experiment, "DB arrivals and cache attempts per 100 ms")


def _num(value: Any, digits: int = 2) -> str:
    """A number for a table: thousands separators, `digits` decimals for floats, n/a for None."""
    if value is None:
        return MISSING
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def _mib(value: Any, digits: int) -> str:
    return _num(value / 2**20, digits) if isinstance(value, int | float) else MISSING


def _counts(counts: Mapping[str, int], *, ordered: bool, none: str) -> str:
    items = sorted(counts.items()) if ordered else list(counts.items())
    return ", ".join(f"{code} {n:,}" for code, n in items) or none


def _drops(drops: Mapping[str, int]) -> str:
    shown = [f"{stage} {count:,}" for stage, count in drops.items() if stage != "rejected"]
    return ", ".join(shown) or "0"


def _cell(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.2f}" if isinstance(value, float) else str(value)


# A column's format: how one value becomes a cell.
FORMATS: dict[str, Callable[[Any], str]] = {
    "num": _num,
    **{f"num{digits}": partial(_num, digits=digits) for digits in range(5)},
    "text": lambda v: MISSING if v is None else str(v),
    "auto": lambda v: v if isinstance(v, str) else _num(v),
    "bool": lambda v: str(v).lower(),
    "yesno": lambda v: "yes" if v else "no",
    "mib0": lambda v: _mib(v, 0),
    "mib1": lambda v: _mib(v, 1),
    "sum": lambda v: MISSING if v is None else _num(sum(v.values())),
    "counts": lambda v: MISSING if v is None else _counts(v, ordered=False, none="0"),
    "codes": lambda v: MISSING if v is None else _counts(v, ordered=True, none="none"),
    "drops": lambda v: MISSING if v is None else _drops(v),
    "cell": _cell,
    "causes": lambda v: "none" if not v else causes_text(v),
}


def _field(row: Mapping[str, Any], column: Column) -> Any:
    value: Any = row
    for part in column.field.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return column.default
        value = value[part]
    return value


def cell_of(column: Column, row: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    if row.get(ERROR) and column.field not in ("variant", ERROR):
        return MISSING  # a failed row measured nothing; its `failed` cell says why
    value = (
        column.value(dict(row), [dict(r) for r in rows]) if column.value else _field(row, column)
    )
    return FORMATS[column.format](value)


# -- any experiment -------------------------------------------------------------------------------


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _variant(row: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    return variant_title(row.get("variant", {}), empty="-")


def _failed(row: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    """A failed row's variant and why its trial failed; empty for a measured row."""
    return f"{_variant(row, rows)}: {row[ERROR]}" if row.get(ERROR) else ""


def experiment_columns(doc: Doc) -> tuple[Column, ...]:
    """The variant, then every measure whose values are single numbers or words."""
    rows = doc.get("rows", [])
    measures = doc.get("experiment", {}).get("measures", [])
    shown = [m for m in measures if rows and all(_scalar(r.get(m)) for r in rows)]
    return (
        Column("variant", format="text", value=_variant),
        *(Column(m, "", "auto") for m in shown),
    )


# -- kinds ----------------------------------------------------------------------------------------


def section_for(doc: Doc) -> Kind:
    """The kind of a result document: the scenario it names, the kind of its experiment, or the
    kind whose rows key it has; the plain experiment's with rows."""
    load_all()
    named = doc.get("scenario") or doc.get("experiment", {}).get("kind")
    if isinstance(named, str) and named in KINDS:
        kind: Kind = KINDS.get(named)
        return kind
    for name in KINDS.names():
        other: Kind = KINDS.get(name)
        if other.rows_key != "rows" and other.rows_key in doc:
            return other
    if "experiment" in doc and "rows" in doc:
        return PLAIN
    raise ValueError(f"not a result document the report knows: keys {sorted(doc)[:8]}")


def rows_of(doc: Doc, kind: Kind) -> list[Mapping[str, Any]]:
    """The document's rows: `rows`, or the kind's older key, or (a flat kind) the document."""
    if "rows" in doc:
        return list(doc["rows"])
    if kind.flat:
        return [doc]
    return list(doc[kind.rows_key])


def columns_of(doc: Doc, kind: Kind) -> tuple[Column, ...]:
    """The kind's columns (any experiment's without one), why requests failed where some row had
    failures, and why a row's trial failed where one did."""
    columns = kind.columns or experiment_columns(doc)
    if any(ERROR_CAUSES in row for row in rows_of(doc, kind)):
        columns = (*columns, Column(ERROR_CAUSES, "errors by code (first message)", "causes"))
    if any(row.get(ERROR) for row in rows_of(doc, kind)):
        columns = (*columns, Column(ERROR, "failed", "text", value=_failed))
    return columns


def headers(name: str) -> tuple[str, ...]:
    """The column headers of kind `name`'s table."""
    load_all()
    return tuple(c.title for c in KINDS.get(name).columns)


def table_rows(doc: Doc, kind: Kind) -> list[list[str]]:
    rows = rows_of(doc, kind)
    columns = columns_of(doc, kind)
    return [[cell_of(c, row, rows) for c in columns] for row in rows]


def doc_title(doc: Doc, kind: Kind) -> str:
    title = doc.get("experiment", {}).get("title") if kind is PLAIN else None
    return str(title or kind.title or kind.name)


def plots_of(kind: Kind) -> tuple[Plot, ...]:
    return kind.plots or ((EXPERIMENT_PLOT,) if kind is PLAIN else ())


def table_for(doc: Doc, expect: str | None = None) -> Table:
    """The rich table of any known result document (of kind `expect`, if given)."""
    kind = section_for(doc)
    if expect is not None and kind.name != expect:
        raise ValueError(f"expected a {expect} result document, got a {kind.name} one")
    table = Table(*(c.title for c in columns_of(doc, kind)), title=doc_title(doc, kind))
    for row in table_rows(doc, kind):
        table.add_row(*(Text(cell) for cell in row))  # as written: a cell is not markup
    return table


def retry_storm_table(doc: Doc) -> Table:
    return table_for(doc, "retry-storm")


def stampede_table(doc: Doc) -> Table:
    return table_for(doc, "stampede")


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
    if not draw and any(plots_of(section_for(doc)) for doc in docs):
        print(f"chaos: report without plots: {PLOTS_SKIPPED}", file=sys.stderr)
    used: dict[str, int] = {}
    parts = [
        "# herdlab report",
        "",
        f"Generated {datetime.now(UTC).strftime('%Y-%m-%d %H:%M:%S')} UTC.",
    ]
    for doc in docs:
        kind = section_for(doc)
        used[kind.name] = used.get(kind.name, 0) + 1
        name = kind.name + (f"-{used[kind.name]}" if used[kind.name] > 1 else "")
        (out_dir / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
        parts += ["", f"## {doc_title(doc, kind)}", ""]
        if doc.get("experiment", {}).get("description"):
            parts += [" ".join(doc["experiment"]["description"].split()), ""]
        if doc.get("command"):
            parts += ["```", str(doc["command"]), "```", ""]
        columns = [c.title for c in columns_of(doc, kind)]
        parts += [markdown_table(columns, table_rows(doc, kind)), ""]
        plots = plots_of(kind)
        if plots and not draw:
            parts += [f"Plots skipped: {PLOTS_SKIPPED}.", ""]
        # A failed row has nothing to draw; the table says why it failed.
        measured = [row for row in rows_of(doc, kind) if not row.get(ERROR)]
        for plot in plots if draw and measured else ():
            png = out_dir / f"{name}{plot.suffix}.png"
            plot.draw({**doc, "rows": measured}, png)
            if png.exists():  # a plot with nothing to draw writes no file
                parts += [f"![{plot.caption}]({png.name})", ""]
        if kind.reading:
            parts += [kind.reading, ""]
        parts += engine_parts(doc)
        parts += [f"Data: [{name}.json]({name}.json)"]
    markdown = "\n".join(parts) + "\n"
    (out_dir / "report.md").write_text(markdown)
    write_html(out_dir, markdown)
    return out_dir
