"""How the herd fared once the killed (or stopped) cache was back: times from the instant the
restarted cache accepts TCP connections again (the trial's outage of the cache, `up_ns`) to the
first value served and to every herd channel READY again, and the requests that still failed
after it.

None (or 0) when the trial did not kill or stop the cache, or (for times) when it never happened.
"""

from __future__ import annotations

from chaos.engine.measures.base import measure
from chaos.engine.observations import Observations
from chaos.engine.timeline import seconds_since


def cache_outage_ns(obs: Observations) -> tuple[int, int] | None:
    """(just before the SIGKILL or SIGTERM, the restarted cache listening) of the cache's first
    outage."""
    outage = obs.outage("cache")
    if outage is None or outage.up_ns is None:
        return None
    return outage.down_ns, outage.up_ns


def first_success_ns(obs: Observations) -> int | None:
    outage = cache_outage_ns(obs)
    if outage is None:
        return None
    served = (o.done_ns for o in obs.herd_result.outcomes if o.code is None)
    return min((t for t in served if t >= outage[1]), default=None)


def ready_again_ns(obs: Observations) -> dict[int, int]:
    """Each herd channel's first READY after the kill, by channel index."""
    outage = cache_outage_ns(obs)
    ready: dict[int, int] = {}
    if outage is None:
        return ready
    for t, channel, state in sorted(obs.herd_result.channel_events):
        if state == "READY" and t >= outage[0] and channel not in ready:
            ready[channel] = t
    return ready


def all_ready_ns(obs: Observations) -> int | None:
    """When the last herd channel was READY again (None unless every one was)."""
    ready = ready_again_ns(obs)
    if len(ready) != min(obs.herd.channel_count, obs.herd.users):
        return None
    return max(ready.values())


def _since_back(obs: Observations, t_ns: int | None) -> float | None:
    outage = cache_outage_ns(obs)
    return None if outage is None else seconds_since(t_ns, outage[1])


@measure("time_to_first_success_s")
def time_to_first_success_s(obs: Observations) -> float | None:
    return _since_back(obs, first_success_ns(obs))


@measure("time_to_all_channels_ready_s")
def time_to_all_channels_ready_s(obs: Observations) -> float | None:
    return _since_back(obs, all_ready_ns(obs))


@measure("channel_ready_s")
def channel_ready_s(obs: Observations) -> list[float | None]:
    """Each herd channel's first READY after the kill, from the cache's return."""
    ready = ready_again_ns(obs)
    count = min(obs.herd.channel_count, obs.herd.users)
    return [_since_back(obs, ready.get(channel)) for channel in range(count)]


@measure("failed_after_restore")
def failed_after_restore(obs: Observations) -> int:
    """Requests that ended with an error after the cache was back."""
    outage = cache_outage_ns(obs)
    if outage is None:
        return 0
    return sum(1 for o in obs.herd_result.outcomes if o.code is not None and o.done_ns >= outage[1])
