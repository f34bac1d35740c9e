"""The herd's own settings, echoed in each row: its retry policy, its channels and how they
reconnect, the open loop's rate, the users' deadline (the stack's settings are echoed by
`setup.py`)."""

from __future__ import annotations

from chaos.engine.herd_settings import backoff_of
from chaos.engine.measures.base import measure
from chaos.engine.observations import Observations


@measure("herd_policy")
def herd_policy(obs: Observations) -> str:
    """The users' retry policy towards the cache."""
    return obs.herd.policy


@measure("reconnect")
def reconnect(obs: Observations) -> str:
    """The herd channels' reconnect backoff by name: gRPC's `default` or `tuned`."""
    return obs.herd.reconnect


@measure("reconnect_backoff")
def reconnect_backoff(obs: Observations) -> dict[str, float]:
    """That backoff in gRPC's terms: initial, multiplier, jitter, max, minimum connect timeout."""
    return backoff_of(obs.herd.reconnect)


@measure("channels")
def channels(obs: Observations) -> int:
    """The herd's channels, each its own TCP connection."""
    return min(obs.herd.channels, obs.herd.users)


@measure("arrival_rate_per_s")
def arrival_rate_per_s(obs: Observations) -> float | None:
    """The open loop's arrivals per second (None: the burst)."""
    return obs.herd.rate_per_s


@measure("herd_deadline_s")
def herd_deadline_s(obs: Observations) -> float:
    """How long each user waits for an answer."""
    return obs.herd.deadline_s
