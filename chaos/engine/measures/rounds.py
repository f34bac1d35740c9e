"""How the herd ran: the rounds of a herd in rounds (1 for a herd released once), and what
requests were lost to, by cause (an exception's type, or running past deadline + margin)."""

from __future__ import annotations

from chaos.engine.herd_rounds import RoundsResult
from chaos.engine.measures.base import measure
from chaos.engine.observations import Observations


@measure("herd_rounds")
def herd_rounds(obs: Observations) -> int:
    result = obs.herd_result
    return result.rounds if isinstance(result, RoundsResult) else 1


@measure("lost_by_cause")
def lost_by_cause(obs: Observations) -> dict[str, int]:
    return dict(obs.herd_result.lost)
