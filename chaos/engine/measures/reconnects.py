"""Reconnect attempts of the herd's channels (the `channelz` observer) since the cache was
killed, and how well the reader saw them (`probe_*`; `probe_gaps` is 0 in a sound run)."""

from __future__ import annotations

from chaos.engine.measures.base import measure
from chaos.engine.measures.cache_return import cache_outage_ns
from chaos.engine.observations import Observations
from chaos.engine.observers.channelz import Reconnects

NEEDS = ("channelz",)


def reconnects_of(obs: Observations) -> Reconnects:
    seen = obs.series["channelz"]
    assert isinstance(seen, Reconnects)
    return seen


def attempts_since_kill(obs: Observations) -> list[int]:
    """Reconnect attempt times (ns) from the cache's SIGKILL on; none if it was not killed."""
    outage = cache_outage_ns(obs)
    if outage is None:
        return []
    return [t for t in reconnects_of(obs).attempt_times_ns if t >= outage[0]]


@measure("reconnect_attempts", needs=NEEDS)
def reconnect_attempts(obs: Observations) -> int:
    return len(attempts_since_kill(obs))


@measure("reconnect_attempts_in_outage", needs=NEEDS)
def reconnect_attempts_in_outage(obs: Observations) -> int:
    """Attempts before the restarted cache was listening: what the backoff schedule spent."""
    outage = cache_outage_ns(obs)
    return 0 if outage is None else sum(1 for t in attempts_since_kill(obs) if t < outage[1])


@measure("probe_channels", needs=NEEDS)
def probe_channels(obs: Observations) -> int:
    """The herd's channels the reader found at the release (the herd's channel count)."""
    return reconnects_of(obs).channels


@measure("probe_subchannels", needs=NEEDS)
def probe_subchannels(obs: Observations) -> int:
    return reconnects_of(obs).subchannels


@measure("probe_gaps", needs=NEEDS)
def probe_gaps(obs: Observations) -> int:
    """Reads after which events may have been evicted from a trace unread (0 in a sound run)."""
    return reconnects_of(obs).gaps
