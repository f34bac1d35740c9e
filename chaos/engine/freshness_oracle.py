"""The freshness oracle: was a value served too old, given the data versions the DB has served?"""

from __future__ import annotations


class Freshness:
    """Decides whether a value was served too old: the versions the DB has served, from when.

    A value read from the store is at most a TTL old (the soak runs without stale serving, which
    would add its bound to that age), so for a request sent more than `ttl_s` after a DB of
    version v came up, any version below v is stale. A key never read before has no stored value:
    its first read must come from the DB that was up when it was sent. Times are seconds on any
    one clock (the soak uses `time.monotonic()`).
    """

    def __init__(self, ttl_s: float, first_version: int = 1) -> None:
        self.ttl_s = ttl_s
        self.versions: list[tuple[float, int]] = [(float("-inf"), first_version)]

    @property
    def current(self) -> int:
        return self.versions[-1][1]

    def serving(self, version: int, since: float) -> None:
        """A DB of `version` has been up since `since`."""
        self.versions.append((since, version))

    def floor(self, sent_at: float, never_read: bool = False) -> int:
        """The oldest version a reply to a request sent at `sent_at` may carry."""
        age = 0.0 if never_read else self.ttl_s
        return max(v for since, v in self.versions if since + age <= sent_at)

    def is_stale(self, version: int, sent_at: float, never_read: bool = False) -> bool:
        return version < self.floor(sent_at, never_read)
