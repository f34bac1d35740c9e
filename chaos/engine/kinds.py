"""A scenario kind: the shape of its result document and what it says while it runs.

A built-in scenario is a shipped experiment file plus a kind (`chaos/scenarios/NAME.py`, one
registration): which row fields it has and which measure gives each, where the rows go in the
document, the top-level fields it adds, and its one-line announcements. Experiments without a
kind get the plain shape: `rows`, each row its measures by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chaos.engine.spec import Experiment

Row = dict[str, Any]


def _no_header(experiment: Experiment) -> dict[str, Any]:
    return {}


def _no_line(row: Row) -> list[str]:
    return []


def _variant_title(variant: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in variant.items()) or "one run"


@dataclass(frozen=True)
class Kind:
    name: str
    rows_key: str = "rows"
    # (row field, measure) in document order; a field absent here is named after its measure.
    fields: tuple[tuple[str, str], ...] = ()
    header: Callable[[Experiment], dict[str, Any]] = _no_header
    announce: Callable[[Experiment, Mapping[str, Any]], str] = field(
        default=lambda experiment, variant: f"{experiment.title}: {_variant_title(variant)}"
    )
    describe: Callable[[Row], list[str]] = _no_line
    # One trial whose row's fields stand at the document's top level (the soak's shape).
    flat: bool = False
    # Fields derived from the others once a row is measured (e.g. a display name).
    derive: Callable[[Row], dict[str, Any]] = lambda row: {}

    @property
    def measures(self) -> tuple[str, ...]:
        return tuple(m for _, m in self.fields)

    def row(self, values: Mapping[str, Any], measures: tuple[str, ...]) -> Row:
        """The document's row: the kind's fields first, in order, then any other measure."""
        named = {m: f for f, m in self.fields}
        row = {named.get(m, m): values[m] for m in measures}
        ordered = {f: row[f] for f, _ in self.fields if f in row}
        ordered.update({k: v for k, v in row.items() if k not in ordered})
        return {**self.derive(ordered), **ordered}


PLAIN = Kind("experiment")
