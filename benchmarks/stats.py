"""Small statistics shared by the benchmarks: latency summaries (by `herdlab.stats`' nearest-rank
quantile), ratios and the distribution-free interval of a median.

The interval is the textbook order-statistic one (the count of values below the true median is
Binomial(n, 1/2)); it is a few lines of `math.comb`, so no statistics library is pulled in for it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from herdlab.stats import quantile


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


def median_interval(values: Sequence[float], confidence: float = 0.95) -> list[float] | None:
    """[low, high]: the narrowest pair of order statistics (the k-th lowest and the k-th
    highest) that holds the true median with probability >= `confidence`, whatever the values'
    distribution; None when there are too few values for that confidence (fewer than 6 at 95%)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")
    ordered = sorted(values)
    n = len(ordered)
    best: int | None = None
    below = 0.0  # P(Binomial(n, 1/2) <= k - 1), the chance the median lies below the k-th value
    for k in range(1, n // 2 + 1):
        below += math.comb(n, k - 1) / 2**n
        if 1.0 - 2.0 * below < confidence:
            break
        best = k
    if best is None:
        return None
    return [float(ordered[best - 1]), float(ordered[n - best])]
