"""The markdown of BENCHMARKS.md that every section's write-up shares: tables and the units its
figures are shown in ("n/a" for a figure a run did not produce)."""

from __future__ import annotations


def mib(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:,.1f} MiB"


def kib(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 1024:,.1f} KiB"


def times(value: float | None, digits: int = 2) -> str:
    """A ratio as a multiple: `1.50x`."""
    return "n/a" if value is None else f"{value:.{digits}f}x"


def ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f} ms"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]
