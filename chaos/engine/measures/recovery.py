"""Recovery after the backend came back, against the physical limit (work / capacity per second).

The lab's storm: `recovery_s` runs from the instant the restored DB accepts connections again to
the last key served; it is None unless every key was served. `ideal_recovery_s` is what a DB
serving exactly its capacity would need for every key.

A run against the user's own service (`[target]` with `capacity`, the calls a second it serves at
most): `recovery_s` runs from the heal of the target link to the last request served, and
`ideal_recovery_s` is what the service serving exactly its capacity from the heal on would need for
the requests served after it. A request may end in an error no policy retries (a connection the
blackhole broke mid-call ends INTERNAL), so not every request need be served; `ok`, `errors` and
`lost` say how many were. None without a capacity, or when nothing was served after the heal.
"""

from __future__ import annotations

from chaos.engine.measures.base import measure, rounded
from chaos.engine.observations import Observations
from chaos.wire.proxy import TARGET_LINK


def _served(obs: Observations) -> list[tuple[str, int]]:
    return [(o.key, o.done_ns) for o in obs.herd_result.outcomes if o.code is None]


def _target_heal_ns(obs: Observations) -> int | None:
    """The heal of a `[target]` run's link, when the run had one and knows its capacity."""
    outage = obs.outage(TARGET_LINK)
    if obs.outage("db") is not None or outage is None or obs.db_capacity_per_s <= 0:
        return None
    return outage.up_ns


def _recovery(obs: Observations) -> float | None:
    heal_ns = _target_heal_ns(obs)
    served = _served(obs)
    if heal_ns is not None:
        after = [t for _, t in served if t > heal_ns]
        return (max(after) - heal_ns) / 1e9 if after else None
    outage = obs.outage("db")
    if outage is None or outage.up_ns is None or not served:
        return None
    if len({key for key, _ in served}) != obs.herd.keys:
        return None
    return max(0.0, (max(t for _, t in served) - outage.up_ns) / 1e9)


def _ideal(obs: Observations) -> float | None:
    heal_ns = _target_heal_ns(obs)
    if heal_ns is not None:
        return sum(t > heal_ns for _, t in _served(obs)) / obs.db_capacity_per_s
    if obs.db_capacity_per_s <= 0:
        return None
    return obs.herd.keys / obs.db_capacity_per_s


@measure("recovery_s")
def recovery_s(obs: Observations) -> float | None:
    return rounded(_recovery(obs))


@measure("ideal_recovery_s")
def ideal_recovery_s(obs: Observations) -> float | None:
    ideal = _ideal(obs)
    return None if ideal is None else round(ideal, 3)


@measure("recovery_over_ideal")
def recovery_over_ideal(obs: Observations) -> float | None:
    """recovery_s / ideal_recovery_s: 1 is the physical limit."""
    recovery, ideal = _recovery(obs), _ideal(obs)
    return None if recovery is None or not ideal else round(recovery / ideal, 3)


@measure("keys_pending_at_restore")
def keys_pending_at_restore(obs: Observations) -> int:
    """Keys served only after the DB was back (`ideal_recovery_s` counts every key)."""
    served = _served(obs)
    outage = obs.outage("db")
    keys = {key for key, _ in served}
    if outage is None or outage.up_ns is None:
        return 0
    return len(keys) - len({key for key, t in served if t <= outage.up_ns})
