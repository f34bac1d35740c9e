"""Range checks for typed configurations, each written once as the range its error shows.

`out_of_range("ttl", 0.5, "[1s, 10m]")` checks 1 <= 0.5 <= 600 and says what is wrong in the
same words: `["ttl must be in [1s, 10m], got 0.5s"]`. A range is one of

- `LOW..HIGH`: whole numbers, both ends allowed: `keys must be in 1..10000, got 0`;
- `[LOW, HIGH]`, with `(` or `)` for an end not allowed, then an optional unit (`/s`, `%`)
  shown after the range only: `rate must be in (0, 5000]/s, got 0`. An end is a number or a
  duration (`100ms`, `600s`, `10m`, `1h`); with a duration at either end, the value is in
  seconds and shown so: `outage must be in [100ms, 10m], got 0.01s`.
"""

from __future__ import annotations

import re

from herdlab.config import parse_duration

_WHOLE = re.compile(r"^(\d+)\.\.(\d+)$")
_INTERVAL = re.compile(r"^([\[(])([^,]+), ([^\])]+)([\])])(.*)$")
_NUMBER = re.compile(r"^\d+(?:\.\d+)?$")


def _end(text: str) -> float:
    return float(text) if _NUMBER.match(text) else parse_duration(text)


def out_of_range(name: str, value: float, allowed: str, *, must: str = "must be in") -> list[str]:
    """The one problem with `value` outside `allowed` (none inside it), as `NAME MUST ALLOWED,
    got VALUE`; `must` for another verb (`the partition must last (0, 600s]`)."""
    whole = _WHOLE.match(allowed)
    if whole:
        if int(whole[1]) <= value <= int(whole[2]):
            return []
        return [f"{name} {must} {allowed}, got {value}"]
    interval = _INTERVAL.match(allowed)
    if interval is None:
        raise ValueError(f"not a range: {allowed!r}")
    left, low, high, right, _ = interval.groups()
    lo, hi = _end(low), _end(high)
    above = lo < value if left == "(" else lo <= value
    below = value < hi if right == ")" else value <= hi
    if above and below:
        return []
    seconds = not (_NUMBER.match(low) and _NUMBER.match(high))
    return [f"{name} {must} {allowed}, got {value:g}{'s' if seconds else ''}"]
