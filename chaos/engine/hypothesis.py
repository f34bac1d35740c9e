"""The hypothesis: an experiment's tolerances checked against its rows.

Each `[[expect]]` entry selects rows by variant (all rows when it names none) and holds each of
its tolerances against every selected row: `eq`, `min`, `max`, or a ratio to another variant's
row (`max_times = 0.5, of = { "cache.policy" = "exponential" }`: at most half of the row that
differs from this one only in those settings). A tolerance whose reference row was not run (a
sweep narrowed on the command line) or failed at run time, or that selects no row at all, is
reported as not checked, never as held.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chaos.engine.model import Expectation, Tolerance


@dataclass(frozen=True)
class RowView:
    """What the hypothesis reads of a row: its variant and its measured values."""

    variant: Mapping[str, Any]
    values: Mapping[str, Any]
    failed: bool = False  # its trial failed at run time: nothing measured


@dataclass(frozen=True)
class Check:
    tolerance: str
    variant: Mapping[str, Any]
    measured: Any
    reference: Any
    held: bool | None  # None: could not be checked (no reference row)

    def line(self) -> str:
        where = ", ".join(f"{k}={v}" for k, v in self.variant.items()) or "all"
        verdict = {True: "held", False: "DEVIATED", None: "not checked"}[self.held]
        ref = f" (reference {self.reference})" if self.reference is not None else ""
        return f"{verdict}: {self.tolerance} [{where}]: measured {self.measured}{ref}"

    def to_json(self) -> dict[str, Any]:
        return {
            "tolerance": self.tolerance,
            "variant": dict(self.variant),
            "measured": self.measured,
            "reference": self.reference,
            "held": self.held,
        }


def _selected(row: RowView, selector: Mapping[str, Any]) -> bool:
    return all(row.variant.get(k) == v for k, v in selector.items())


def _holds(tolerance: Tolerance, measured: Any, reference: Any) -> bool:
    if tolerance.op == "eq":
        return bool(measured == tolerance.value)
    if not isinstance(measured, int | float) or isinstance(measured, bool):
        return False  # not measured (None) cannot hold a bound
    bound = tolerance.value
    if tolerance.op.endswith("_times"):
        if not isinstance(reference, int | float) or isinstance(reference, bool):
            return False
        bound = tolerance.value * reference
    if tolerance.op in ("min", "min_times"):
        return bool(measured >= bound)
    return bool(measured <= bound)


def check(expectations: Sequence[Expectation], rows: Sequence[RowView]) -> list[Check]:
    checks = []
    for expectation in expectations:
        if not any(_selected(row, expectation.variant) for row in rows):
            # A sweep narrowed on the command line ran none of these rows: said, not held.
            checks += [
                Check(str(t), expectation.variant, None, None, None) for t in expectation.tolerances
            ]
        for row in rows:
            if not _selected(row, expectation.variant):
                continue
            for tolerance in expectation.tolerances:
                measured = row.values.get(tolerance.measure)
                reference = None
                if tolerance.of is not None:
                    wanted = {**row.variant, **tolerance.of}
                    match = next((r for r in rows if dict(r.variant) == wanted), None)
                    if match is None or match.failed:
                        checks.append(Check(str(tolerance), row.variant, measured, None, None))
                        continue
                    reference = match.values.get(tolerance.measure)
                held = _holds(tolerance, measured, reference)
                checks.append(Check(str(tolerance), row.variant, measured, reference, held))
    return checks


def held(checks: Sequence[Check]) -> bool:
    """True when no checked tolerance deviated."""
    return all(c.held is not False for c in checks)
