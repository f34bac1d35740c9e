"""Small statistics shared by the benchmarks: nearest-rank quantiles and latency summaries."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank `q` quantile of already sorted values; 0.0 for none."""
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1)
    return float(sorted_values[max(0, index)])


def latency_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50, p99 and max of latencies given in seconds, in milliseconds (3 decimals)."""
    ordered = sorted(seconds)
    return {
        "p50": round(quantile(ordered, 0.50) * 1000, 3),
        "p99": round(quantile(ordered, 0.99) * 1000, 3),
        "max": round((ordered[-1] if ordered else 0.0) * 1000, 3),
    }


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 3) if denominator else None
