"""A scenario kind: the shape of its result document, how reports show it, and what it says while
it runs.

A built-in scenario is a folder (`chaos/scenarios/NAME/`): its shipped experiment file and, if it
needs one, a module registering its kind: which row fields it has and which measure gives each,
the top-level fields it adds, its table's columns (declared once: field, header, format; every
report writes its tables from them), its plots, and its one-line announcements. Every document
keeps its rows under `rows` (and, for the kinds that had another key, under that key too: the
same list). Experiments without a kind get the plain shape: `rows`, each row its measures by
name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from chaos.engine.model import Experiment

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

Row = dict[str, Any]
# A row's field when its trial failed at run time (a step, the stack or a herd process): why.
ERROR = "error"
C = TypeVar("C", bound="DataclassInstance")
# The units a configuration's field names end in and its options' names do not.
UNITS = ("_per_s", "_pct", "_s")


def _no_line(row: Row) -> list[str]:
    return []


def variant_title(variant: Mapping[str, Any], empty: str = "one run") -> str:
    """`key=value, ...` of a variant; `empty` for the one run of a file without variants."""
    return ", ".join(f"{k}={v}" for k, v in variant.items()) or empty


class ScenarioConfig(Protocol):
    """A built-in scenario's typed parameters: checked, mapped onto its shipped file's params,
    and said as the `chaos scenario` command line that runs them."""

    def problems(self) -> list[str]: ...

    def params(self) -> dict[str, Any]: ...

    def command(self) -> str: ...


def from_options(config: type[C], values: Mapping[str, Any], **given: Any) -> C:
    """The typed configuration `config` from a `chaos scenario NAME`'s options (`values`, by
    param name): each field not `given` from the option of its name, or of its name without its
    unit (`ttl_s` from `ttl`, `rate_per_s` from `rate`, `jitter_pct` from `jitter`); a field
    without an option keeps its default."""
    for f in dataclasses.fields(config):
        names = (f.name, *(f.name.removesuffix(unit) for unit in UNITS))
        option = next((n for n in names if n in values), None)
        if f.name not in given and option is not None:
            given[f.name] = values[option]
    return config(**given)


def fault_window(experiment: Experiment) -> tuple[float | None, float | None]:
    """When a scenario's fault starts (its timeline's first step, `at` after the release) and how
    long it holds (the second step, `after` the first); None for a step the timeline lacks."""
    steps = experiment.timeline
    return (steps[0].at_s if steps else None, steps[1].after_s if len(steps) > 1 else None)


@dataclass(frozen=True)
class Column:
    """One column of a kind's table: the row's field (dotted for a nested one: `latency_s.p99`;
    `default` when a row lacks it, or `value` computing the cell's value from the row and all the
    rows), its header (the field's name by default) and the cell's format, one of the report's
    (`chaos.report.render.FORMATS`: `num` with 2 decimals, `num0`..`num4`, `text`, `auto` (text as
    is, numbers as `num`), `bool`, `yesno`, `mib0`, `mib1`, `sum`, `counts`, `codes`, `drops`,
    `cell`, `causes`)."""

    field: str
    header: str = ""
    format: str = "num"
    default: Any = None
    value: Callable[[Row, Sequence[Row]], Any] | None = None

    @property
    def title(self) -> str:
        return self.header or self.field


@dataclass(frozen=True)
class Plot:
    """A figure of a kind's documents: `draw(doc, png_path)` (writing no file when there is
    nothing to draw), its caption, and the suffix of its PNG's name."""

    draw: Callable[[Mapping[str, Any], Path], object]
    caption: str
    suffix: str = ""


@dataclass(frozen=True)
class Kind:
    name: str
    # A second top-level key holding the same rows as `rows` (the name older documents used).
    rows_key: str = "rows"
    # The row's fields in document order: a measure's name (the field named after it) or a
    # (row field, measure) pair; a measure absent here is a field named after it, after these.
    fields: tuple[str | tuple[str, str], ...] = ()
    # The configuration it ran with, from its experiment: the document's `config`, beside
    # `scenario` (its name). Without one the document has neither.
    config: Callable[[Experiment], dict[str, Any]] | None = None
    announce: Callable[[Experiment, Mapping[str, Any]], str] = field(
        default=lambda experiment, variant: f"{experiment.title}: {variant_title(variant)}"
    )
    describe: Callable[[Row], list[str]] = _no_line
    # One trial whose row's fields stand at the document's top level (the soak's shape).
    flat: bool = False
    # Fields derived from the others once a row is measured (e.g. a display name).
    derive: Callable[[Row], dict[str, Any]] = lambda row: {}
    # Its typed configuration from the `chaos scenario NAME` options (the file's typed params, by
    # param name: durations in seconds, lists as their text, repeatable options as tuples);
    # ValueError naming a bad value. Without one the options are the run's params.
    configure: Callable[[Mapping[str, Any]], ScenarioConfig] | None = None
    # How reports show it: a title, the table's columns, plots and a paragraph on reading them.
    title: str = ""
    columns: tuple[Column, ...] = ()
    plots: tuple[Plot, ...] = ()
    reading: str = ""

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        """(row field, measure) for each of `fields`."""
        return tuple((f, f) if isinstance(f, str) else f for f in self.fields)

    @property
    def measures(self) -> tuple[str, ...]:
        return tuple(m for _, m in self.pairs)

    def header(self, experiment: Experiment) -> dict[str, Any]:
        """The document's top-level fields that say what ran."""
        if self.config is None:
            return {}
        return {"scenario": self.name, "config": self.config(experiment)}

    def row(
        self, values: Mapping[str, Any], measures: tuple[str, ...], error: str | None = None
    ) -> Row:
        """The document's row: the kind's fields first, in order, then any other measure. A row
        whose trial failed (`error`; its values all None) has nothing derived, and its `error`."""
        named = {m: f for f, m in self.pairs}
        row = {named.get(m, m): values[m] for m in measures}
        ordered = {f: row[f] for f, _ in self.pairs if f in row}
        ordered.update({k: v for k, v in row.items() if k not in ordered})
        if error:
            return {**ordered, ERROR: error}
        return {**self.derive(ordered), **ordered}


PLAIN = Kind("experiment", title="Experiment")
