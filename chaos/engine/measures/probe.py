"""What the `probe` observer's checked reads saw, and wrong values over the herd and the probe."""

from __future__ import annotations

from typing import Any

from chaos.engine.measures.base import measure
from chaos.engine.observations import Observations

NEEDS = ("probe",)


def _probe(obs: Observations) -> dict[str, Any]:
    summary: dict[str, Any] = obs.series["probe"]
    return summary


@measure("probe", needs=NEEDS)
def probe(obs: Observations) -> dict[str, Any]:
    """The probe's reads: sent, ok, errors by code, wrong and stale values."""
    return dict(_probe(obs))


@measure("stale_values", needs=NEEDS)
def stale_values(obs: Observations) -> int:
    """Values older than the freshness oracle allows: a version below the newest DB's although
    the read was sent more than a TTL after that DB came up (at once, for a never-read key)."""
    return int(_probe(obs)["stale_values"])


@measure("wrong_values_all", needs=NEEDS)
def wrong_values_all(obs: Observations) -> int:
    """Values that were not their key's value at their version, from the herd and the probe."""
    return obs.herd_result.wrong_values + int(_probe(obs)["wrong_values"])
