"""The cache's freshness policy: when a value is fresh, when an expired one may still be served,
when to refresh before expiry, and how long a new value lives. Store-agnostic: any store that
keeps, per entry, its expiry and the recompute time of the fetch that made it (`delta`), and
keeps an expired entry for `stale_window_s`, can be served by it.

- **TTL jitter** (`ttl_jitter_pct` = p): each value lives `ttl x (1 - u x p/100)`, u uniform in
  [0, 1): keys written together no longer expire together, and no value outlives its TTL.
- **stale-while-revalidate** (RFC 5861, nginx `proxy_cache_use_stale updating` with
  `proxy_cache_background_update`, Varnish's grace): a value expired less than D ago is served
  as STALE at once while one background refresh per key runs.
- **stale-if-error** (RFC 5861): when a fetch fails, a value expired less than D ago is served
  as STALE instead of the error; past D the error goes to the caller.
- **XFetch** (Vattani, Chierichetti, Lowenstein, PVLDB 8(8) 2015): a read of a fresh value
  starts a refresh early when `now - delta x beta x ln(u) >= expiry`, u uniform in (0, 1],
  delta the last recompute time. Since -ln(u) is exponential with mean 1, a read at x seconds
  before expiry refreshes with probability exp(-x / (delta x beta)): the refreshes of keys that
  expire together spread over a few delta x beta before their expiry. beta 1 is the paper's
  default; beta 0 turns it off.

Written here rather than taken from a library: the lab needs each rule as a pure function of an
injected clock reading and random source, so that its arithmetic is tested exactly, and the same
rules must serve the local store and a shared one.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

MAX_STALE_S = 86_400.0
MAX_BETA = 100.0
MAX_JITTER_PCT = 90.0


@dataclass(frozen=True)
class Freshness:
    """The policy's four numbers; all zero is a plain TTL."""

    stale_while_revalidate_s: float = 0.0
    stale_if_error_s: float = 0.0
    beta: float = 0.0
    ttl_jitter_pct: float = 0.0

    def problems(self) -> list[str]:
        """Each value out of bounds, named as the admin plane's fields are."""
        found = []
        for name, value, hi in (
            ("stale_while_revalidate_s", self.stale_while_revalidate_s, MAX_STALE_S),
            ("stale_if_error_s", self.stale_if_error_s, MAX_STALE_S),
            ("beta", self.beta, MAX_BETA),
            ("ttl_jitter_pct", self.ttl_jitter_pct, MAX_JITTER_PCT),
        ):
            if not (math.isfinite(value) and 0 <= value <= hi):
                found.append(f"{name} must be in [0, {hi:g}], got {value:g}")
        return found

    @property
    def stale_window_s(self) -> float:
        """How long a store keeps an expired entry: the longer of the two stale bounds."""
        return max(self.stale_while_revalidate_s, self.stale_if_error_s)

    @property
    def name(self) -> str:
        """A short name of what is on: `ttl`, or e.g. `xfetch`, `jitter+swr`."""
        parts = [
            name
            for name, on in (
                ("jitter", self.ttl_jitter_pct > 0),
                ("xfetch", self.beta > 0),
                ("swr", self.stale_while_revalidate_s > 0),
                ("sie", self.stale_if_error_s > 0),
            )
            if on
        ]
        return "+".join(parts) or "ttl"

    def ttl_s(self, base_s: float, rng: random.Random) -> float:
        """The TTL of one new value: `base_s` shortened by up to `ttl_jitter_pct` percent."""
        if self.ttl_jitter_pct <= 0:
            return base_s
        return base_s * (1.0 - rng.random() * self.ttl_jitter_pct / 100.0)

    def early(self, now: float, expires_at: float, delta_s: float, rng: random.Random) -> bool:
        """XFetch's draw for one read of a fresh value: refresh it now? (No rng draw when off.)"""
        if self.beta <= 0 or delta_s <= 0:
            return False
        u = 1.0 - rng.random()  # in (0, 1]: ln(u) is finite and <= 0
        return now - delta_s * self.beta * math.log(u) >= expires_at

    def while_revalidating(self, age_s: float) -> bool:
        """May a value expired `age_s` ago be served while one refresh runs?"""
        return 0 <= age_s < self.stale_while_revalidate_s

    def if_error(self, age_s: float) -> bool:
        """May a value expired `age_s` ago be served instead of a failed fetch's error?"""
        return 0 <= age_s < self.stale_if_error_s
