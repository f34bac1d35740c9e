"""The DB's and the herd's settings that make a configuration, echoed in each row: the DB's
queue discipline, the open loop's rate and the users' deadline."""

from __future__ import annotations

from chaos.engine.measures.base import measure
from chaos.engine.observations import Observations


@measure("queue_discipline")
def queue_discipline(obs: Observations) -> str:
    """fifo, codel or lifo (`db_service.queueing`)."""
    return obs.db.queue_discipline


@measure("arrival_rate_per_s")
def arrival_rate_per_s(obs: Observations) -> float | None:
    """The open loop's arrivals per second (None: the burst)."""
    return obs.herd.rate_per_s


@measure("herd_deadline_s")
def herd_deadline_s(obs: Observations) -> float:
    """How long each user waits for an answer."""
    return obs.herd.deadline_s
