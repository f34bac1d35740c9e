"""`budget`: a retry budget. First attempts are never refused; a retry needs budget.

Two families, chosen by the parameters given (mixing them is an error; none given = gRFC A6):

    budget:max_tokens=10,token_ratio=0.1      gRFC A6 retry throttling      (A6Budget)
    budget:ratio=0.2,min_per_s=10,ttl=10s     Finagle's RetryBudget         (FinagleBudget)

Both bound retries to a share of the traffic, so a storm of failures cannot multiply the load:
with A6 the retries stop while half the bucket is gone, with Finagle they are capped per ttl at
a reserve plus a fraction of the requests.
"""

from __future__ import annotations

from herdlab.guards.base import (
    CallbackPermit,
    Clock,
    Guard,
    Outcome,
    Permit,
    Range,
    check,
    noop_permit,
)
from herdlab.guards.registry import GuardArgs, register
from herdlab.guards.window import SlidingCount
from herdlab.units import format_duration, format_number

A6_PARAMS = ("max_tokens", "token_ratio")
FINAGLE_PARAMS = ("ratio", "min_per_s", "ttl")

MAX_TOKENS = Range(1, 1000)
TOKEN_RATIO = Range(0.001, 1000)
RATIO = Range(0, 1000)
MIN_PER_S = Range(0, 100_000)
TTL = Range(1, 60, duration=True)


class A6Budget(Guard):
    """gRFC A6 `retryThrottling` (grpc/proposal A6-client-retries.md; grpc core's
    retry_throttle.cc), per client rather than per channel:

        tokens start at max_tokens
        OVERLOAD outcome:   tokens = max(0, tokens - 1)
        OK outcome:         tokens = min(max_tokens, tokens + token_ratio)
        a retry is refused while tokens <= max_tokens / 2

    Tokens are counted in thousandths, as grpc core does, so token_ratio keeps three decimals
    and ten OKs at 0.1 add exactly one token. Outcomes of first attempts and retries both count.
    Defaults are A6's example: 10 tokens, 0.1 per success. Use it to stop retries outright while
    the backend fails; it does not bound first attempts (pair it with `limit` for that).
    """

    name = "budget"

    def __init__(self, max_tokens: int = 10, token_ratio: float = 0.1) -> None:
        super().__init__()
        check(self.name, "max_tokens", max_tokens, MAX_TOKENS)
        check(self.name, "token_ratio", token_ratio, TOKEN_RATIO)
        self._max_milli = max_tokens * 1000
        self._ratio_milli = round(token_ratio * 1000)
        self._milli = self._max_milli

    def spec_items(self) -> list[tuple[str, str | None]]:
        return [
            ("max_tokens", format_number(self._max_milli // 1000)),
            ("token_ratio", format_number(self._ratio_milli / 1000)),
        ]

    async def acquire(self, *, retry: bool, timeout_s: float) -> Permit:
        if retry and self._milli * 2 <= self._max_milli:
            self._reject(
                f"retry budget spent ({self._milli / 1000:g} tokens, retries need more than "
                f"{self._max_milli / 2000:g})"
            )
        return CallbackPermit(self._on_done)

    def _on_done(self, outcome: Outcome, rtt_s: float) -> None:
        if outcome is Outcome.OVERLOAD:
            self._milli = max(0, self._milli - 1000)
        elif outcome is Outcome.OK:
            self._milli = min(self._max_milli, self._milli + self._ratio_milli)

    def state(self) -> dict[str, float]:
        return {"tokens": self._milli / 1000}


class FinagleBudget(Guard):
    """Finagle's `RetryBudget` (twitter/finagle RetryBudget.scala; Linkerd's defaults are the
    same): every first attempt deposits `ratio` of a token, every retry withdraws one, and both
    expire after `ttl`; on top sits a fixed reserve of `min_per_s * ttl` tokens:

        balance = min_per_s * ttl + ratio * first_attempts(last ttl) - retries(last ttl)
        a retry is allowed while balance >= 1, and then withdraws 1

    So in any ttl window retries <= min_per_s * ttl + ratio * first attempts: with the defaults
    (20%, 10/s, 10 s) a herd of 10,000 first attempts earns 2,000 retries plus 100. The window
    is kept in per-second buckets (`herdlab.guards.window`), so memory stays bounded. Outcomes
    do not matter: the budget counts attempts, not failures.
    """

    name = "budget"

    def __init__(
        self, ratio: float = 0.2, min_per_s: float = 10, ttl_s: float = 10.0, *, clock: Clock
    ) -> None:
        super().__init__()
        check(self.name, "ratio", ratio, RATIO)
        check(self.name, "min_per_s", min_per_s, MIN_PER_S)
        check(self.name, "ttl", ttl_s, TTL)
        self.ratio = ratio
        self.min_per_s = min_per_s
        self.ttl_s = ttl_s
        self._first_attempts = SlidingCount(ttl_s, clock)
        self._retries = SlidingCount(ttl_s, clock)

    def spec_items(self) -> list[tuple[str, str | None]]:
        return [
            ("ratio", format_number(self.ratio)),
            ("min_per_s", format_number(self.min_per_s)),
            ("ttl", format_duration(self.ttl_s, short=True)),
        ]

    def balance(self) -> float:
        return (
            self.min_per_s * self.ttl_s
            + self.ratio * self._first_attempts.total()
            - self._retries.total()
        )

    async def acquire(self, *, retry: bool, timeout_s: float) -> Permit:
        if not retry:
            self._first_attempts.add()
        elif self.balance() >= 1:
            self._retries.add()
        else:
            self._reject(f"retry budget spent ({self.balance():g} tokens left in the last ttl)")
        return noop_permit()

    def state(self) -> dict[str, float]:
        return {"tokens": self.balance()}


def _build(args: GuardArgs) -> Guard:
    args.allow((*A6_PARAMS, *FINAGLE_PARAMS))
    a6 = [p for p in A6_PARAMS if p in args.params]
    finagle = [p for p in FINAGLE_PARAMS if p in args.params]
    if a6 and finagle:
        raise ValueError(
            f"guard 'budget': {a6[0]} is a gRFC A6 parameter ({', '.join(A6_PARAMS)}) and "
            f"{finagle[0]} a Finagle one ({', '.join(FINAGLE_PARAMS)}); give one family's"
        )
    if finagle:
        return FinagleBudget(
            ratio=args.number("ratio", 0.2, RATIO),
            min_per_s=args.number("min_per_s", 10, MIN_PER_S),
            ttl_s=args.duration("ttl", 10.0, TTL),
            clock=args.clock,
        )
    return A6Budget(
        max_tokens=args.integer("max_tokens", 10, MAX_TOKENS),
        token_ratio=args.number("token_ratio", 0.1, TOKEN_RATIO),
    )


register("budget", _build)
