"""The herd's own settings, echoed in each row: its retry policy, its channels and how they
reconnect, the open loop's rate, the users' deadline (the stack's settings are echoed by
`setup.py`)."""

from __future__ import annotations

from chaos.engine.herd_settings import backoff_of
from chaos.engine.measures.base import echo, measure
from chaos.engine.observations import Observations

echo("herd_policy", "herd.policy")  # the users' retry policy towards the cache
echo("reconnect", "herd.reconnect")  # the channels' reconnect backoff: gRPC's `default`, `tuned`
echo("arrival_rate_per_s", "herd.rate_per_s")  # the open loop's arrivals/s (None: the burst)
echo("herd_deadline_s", "herd.deadline_s")  # how long each user waits for an answer


@measure("reconnect_backoff")
def reconnect_backoff(obs: Observations) -> dict[str, float]:
    """That backoff in gRPC's terms: initial, multiplier, jitter, max, minimum connect timeout."""
    return backoff_of(obs.herd.reconnect)


@measure("channels")
def channels(obs: Observations) -> int:
    """The herd's channels, each its own TCP connection."""
    return min(obs.herd.channel_count, obs.herd.users)
