"""Recovery after the DB came back, against the physical limit (keys / capacity per second).

`recovery_s` runs from the instant the restored DB accepts connections again to the last key
served; it is None unless every key was served. `ideal_recovery_s` is what a DB serving exactly
its capacity would need for every key.
"""

from __future__ import annotations

from chaos.engine.measures.base import measure, rounded
from chaos.engine.observations import Observations


def _served(obs: Observations) -> list[tuple[str, int]]:
    return [(o.key, o.done_ns) for o in obs.herd_result.outcomes if o.code is None]


def _recovery(obs: Observations) -> float | None:
    outage = obs.outage("db")
    served = _served(obs)
    if outage is None or outage.up_ns is None or not served:
        return None
    if len({key for key, _ in served}) != obs.herd.keys:
        return None
    return max(0.0, (max(t for _, t in served) - outage.up_ns) / 1e9)


def _ideal(obs: Observations) -> float:
    return obs.herd.keys / obs.db_capacity_per_s


@measure("recovery_s")
def recovery_s(obs: Observations) -> float | None:
    return rounded(_recovery(obs))


@measure("ideal_recovery_s")
def ideal_recovery_s(obs: Observations) -> float:
    return round(_ideal(obs), 3)


@measure("recovery_over_ideal")
def recovery_over_ideal(obs: Observations) -> float | None:
    """recovery_s / ideal_recovery_s: 1 is the physical limit."""
    recovery = _recovery(obs)
    return None if recovery is None else round(recovery / _ideal(obs), 3)


@measure("keys_pending_at_restore")
def keys_pending_at_restore(obs: Observations) -> int:
    """Keys served only after the DB was back (`ideal_recovery_s` counts every key)."""
    served = _served(obs)
    outage = obs.outage("db")
    keys = {key for key, _ in served}
    if outage is None or outage.up_ns is None:
        return 0
    return len(keys) - len({key for key, t in served if t <= outage.up_ns})
