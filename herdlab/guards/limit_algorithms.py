"""Limit algorithms for the `limit` guard, after Netflix concurrency-limits: each is one small
class behind one interface (`LimitAlgorithm`), separate from the limiter that enforces it.

`on_sample(rtt_s, in_flight, dropped)` is called once per finished call that was admitted:
`rtt_s` its round-trip time, `in_flight` the calls in flight when it was admitted (itself
included, as Netflix's SimpleLimiter reports it), `dropped` whether it ended in OVERLOAD. Calls
that ended IGNORE are not sampled. `limit` is read before every admission.
"""

from __future__ import annotations

import abc
import math
import random

from herdlab.guards.base import Range, check
from herdlab.units import format_number

LIMIT = Range(1, 100_000)
BACKOFF = Range(0.5, 1, high_open=True)

VEGAS_PROBE_MULTIPLIER = 30
"""Vegas forgets its no-load rtt after about 30 x limit samples (Netflix's probeMultiplier)."""


class LimitAlgorithm(abc.ABC):
    """Moves the concurrency limit from samples. Single-threaded (the event loop's thread)."""

    name: str

    @property
    @abc.abstractmethod
    def limit(self) -> int: ...

    @abc.abstractmethod
    def on_sample(self, rtt_s: float, in_flight: int, dropped: bool) -> None: ...

    @abc.abstractmethod
    def spec_items(self) -> list[tuple[str, str | None]]:
        """The algorithm's part of the canonical `limit` spec."""


class StaticLimit(LimitAlgorithm):
    """`limit:n=20`: a fixed limit. By Little's law 20 slots x 100 ms = 200/s, so n = 20 is the
    lab DB's real concurrency; use it when the backend's capacity is known."""

    name = "static"

    def __init__(self, n: int = 20, *, allowed: Range = LIMIT) -> None:
        check("limit", "n", n, allowed)
        self.n = n

    @property
    def limit(self) -> int:
        return self.n

    def on_sample(self, rtt_s: float, in_flight: int, dropped: bool) -> None:
        """A static limit learns nothing."""

    def spec_items(self) -> list[tuple[str, str | None]]:
        return [("n", format_number(self.n))]


class AIMDLimit(LimitAlgorithm):
    """`limit:aimd`, Netflix's AIMDLimit (loss-based, like TCP Reno):

        drop (OVERLOAD):               limit = max(min, floor(limit * backoff))
        success, in_flight*2 >= limit:  limit = min(max, limit + 1)
        success, in_flight*2 <  limit:  unchanged (an idle client does not inflate its limit)

    Netflix also counts an rtt above a timeout (5 s) as a drop; here DEADLINE_EXCEEDED already
    arrives as OVERLOAD. Defaults: initial 20, min 1, max 200, backoff 0.9. It finds the
    backend's capacity without being told, but only by overshooting it until calls fail.
    """

    name = "aimd"

    def __init__(
        self, initial: int = 20, min_limit: int = 1, max_limit: int = 200, backoff: float = 0.9
    ) -> None:
        for param, value in (("initial", initial), ("min", min_limit), ("max", max_limit)):
            check("limit", param, value, LIMIT)
        check("limit", "backoff", backoff, BACKOFF)
        check("limit", "max", max_limit, Range(min_limit, LIMIT.high))
        check("limit", "initial", initial, Range(min_limit, max_limit))
        self.initial = initial
        self.min_limit = min_limit
        self.max_limit = max_limit
        self.backoff = backoff
        self._limit = initial

    @property
    def limit(self) -> int:
        return self._limit

    def on_sample(self, rtt_s: float, in_flight: int, dropped: bool) -> None:
        if dropped:
            self._limit = max(self.min_limit, math.floor(self._limit * self.backoff))
        elif in_flight * 2 >= self._limit:
            self._limit = min(self.max_limit, self._limit + 1)

    def spec_items(self) -> list[tuple[str, str | None]]:
        return [
            ("aimd", None),
            ("initial", format_number(self.initial)),
            ("min", format_number(self.min_limit)),
            ("max", format_number(self.max_limit)),
            ("backoff", format_number(self.backoff)),
        ]


def vegas_log10(limit: int) -> int:
    """Netflix's Log10RootFunction: `max(1, floor(log10(limit)))` below 1000, `floor(sqrt)`
    from there."""
    if limit < 1000:
        return max(1, int(math.log10(max(limit, 1))))
    return math.isqrt(limit)


class VegasLimit(LimitAlgorithm):
    """`limit:vegas`, Netflix's VegasLimit (latency-based, after TCP Vegas). With `L` the
    estimated limit, `rtt_noload` the smallest rtt seen and `lg = vegas_log10(int(L))`:

        queue = ceil(L * (1 - rtt_noload / rtt))        calls queued beyond the no-load pace
        drop (OVERLOAD):          L = L - lg
        in_flight * 2 < L:        unchanged (no upward drift while the client is idle)
        queue <= lg:              L = L + 6 * lg       (no queueing: grow fast, by beta)
        queue <  3 * lg:          L = L + lg           (below alpha: grow)
        queue >  6 * lg:          L = L - lg           (above beta: shrink)
        otherwise:                unchanged
        then L = max(1, min(max, L)); the limit is int(L)

    A success's sample with an rtt below `rtt_noload` only lowers `rtt_noload`. Every
    `uniform(0.5, 1) * 30 * L` successful samples, `rtt_noload` is re-learnt from the current
    sample (Netflix's probe), so a backend that became slower for good is not mistaken for a
    queue forever. One deviation: Netflix lets a drop's rtt set `rtt_noload` too; here only
    successes do, because a refused connection fails in a millisecond and would make every
    later 100 ms success look like a deep queue. A sample without a positive rtt carries no
    latency and only counts as a drop or nothing. Defaults: initial 20, max 1000.
    """

    name = "vegas"

    def __init__(self, initial: int = 20, max_limit: int = 1000, *, rng: random.Random) -> None:
        check("limit", "initial", initial, LIMIT)
        check("limit", "max", max_limit, LIMIT)
        check("limit", "initial", initial, Range(1, max_limit))
        self.initial = initial
        self.max_limit = max_limit
        self._estimate = float(initial)
        self._rtt_noload = 0.0
        self._rng = rng
        self._samples = 0
        self._probe_jitter = rng.uniform(0.5, 1.0)

    @property
    def limit(self) -> int:
        return int(self._estimate)

    @property
    def rtt_noload(self) -> float:
        return self._rtt_noload

    def on_sample(self, rtt_s: float, in_flight: int, dropped: bool) -> None:
        lg = vegas_log10(int(self._estimate))
        if dropped:
            self._set(self._estimate - lg)
            return
        if rtt_s <= 0:
            return
        self._samples += 1
        if self._samples >= self._probe_jitter * VEGAS_PROBE_MULTIPLIER * self._estimate:
            self._samples = 0
            self._probe_jitter = self._rng.uniform(0.5, 1.0)
            self._rtt_noload = rtt_s
            return
        if self._rtt_noload == 0 or rtt_s < self._rtt_noload:
            self._rtt_noload = rtt_s
            return
        if in_flight * 2 < self._estimate:
            return
        queue = math.ceil(self._estimate * (1 - self._rtt_noload / rtt_s))
        if queue <= lg:
            self._set(self._estimate + 6 * lg)
        elif queue < 3 * lg:
            self._set(self._estimate + lg)
        elif queue > 6 * lg:
            self._set(self._estimate - lg)

    def _set(self, estimate: float) -> None:
        self._estimate = max(1.0, min(float(self.max_limit), estimate))

    def spec_items(self) -> list[tuple[str, str | None]]:
        return [
            ("vegas", None),
            ("initial", format_number(self.initial)),
            ("max", format_number(self.max_limit)),
        ]
