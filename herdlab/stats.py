"""The nearest-rank quantile, the one the herd's summary and the benchmarks' latency summaries
report: the smallest value with at least a `q` share of the values at or below it."""

from __future__ import annotations

import math
from collections.abc import Sequence


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank `q` quantile of already sorted values; 0.0 for none."""
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1)
    return float(sorted_values[max(0, index)])
