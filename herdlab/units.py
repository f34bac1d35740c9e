"""Durations and numbers as the lab writes and reads them: `500ms`, `1m30s`, `20`, `0.1`. No
dependency beyond the standard library, so the library (`herdlab.guards`, `herdlab.client`)
imports without the command lines' (`herdlab.config` adds click's parameter types on top)."""

from __future__ import annotations

import math
import re

_PART = r"(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h)"
_DURATION = re.compile(rf"^(?:\s*{_PART})+\s*$")
_PARTS = re.compile(_PART)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """`500ms`, `10s`, `1.5m`, `1h`, and sums of them as Go and systemd write them (`1m30s`,
    `1h2m3s`, `2s500ms`) -> seconds. A bare number, a negative or an unknown unit is rejected:
    a duration always says its unit."""
    if not _DURATION.match(text):
        raise ValueError(
            f"invalid duration {text!r}: use a non-negative number with a unit, e.g. 500ms, 10s, "
            "1m30s"
        )
    seconds = sum(float(n) * _UNITS[unit] for n, unit in _PARTS.findall(text))
    if not math.isfinite(seconds):
        raise ValueError(f"invalid duration {text!r}: too large")
    return seconds


def format_number(value: float) -> str:
    """`20.0` -> `20`, `0.1` -> `0.1`: the shortest text that parses back to the same value."""
    if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def format_value(value: object) -> str:
    """A value as the CLI prints it in `k=v` text: a number in the shortest text that reads back
    (`50`, not `50.0`), anything else as it is."""
    return format_number(value) if isinstance(value, float) else str(value)


def format_duration(seconds: float, *, short: bool = False) -> str:
    """The one way the lab writes a duration, in either of two forms that read back the same:
    a command line's (the default), milliseconds with a unit to the nanosecond and never in
    exponent notation (which no duration parser reads): `90.0` -> `90000ms`; or, `short`, as
    guard specs show durations: whole minutes in `m`, else from a second up in `s`, else in
    `ms`: `120.0` -> `2m`, `90.0` -> `90s`, `0.5` -> `500ms`."""
    if not short:
        return f"{seconds * 1000:.6f}".rstrip("0").rstrip(".") + "ms"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{format_number(seconds / 60)}m"
    if seconds >= 1 or seconds == 0:
        return f"{format_number(seconds)}s"
    return f"{format_number(round(seconds * 1000, 9))}ms"
