"""What the `soak-cycles` action reported (its journal entry): the cycles run, the restarts, each
fault's recovery, the long-lived cache's memory and file descriptors at rest, and every lab
process's drift from its first reading at rest. None when the experiment ran no soak cycles."""

from __future__ import annotations

from typing import Any

from chaos.engine.actions.soak_cycles import NAME
from chaos.engine.measures.base import measure
from chaos.engine.observations import Observations


def report(obs: Observations) -> dict[str, Any] | None:
    return next((e.details for e in obs.journal if e.do.split()[0] == NAME), None)


def _cache(obs: Observations, moment: str, figure: str) -> int | None:
    """`figure` (rss, fds) of the long-lived cache at `moment` (before, after)."""
    found = report(obs)
    return None if found is None else int(found["cache"][moment][figure])


def _count(name: str) -> None:
    """Registers the measure `name`: the report's count of that name."""

    def count(obs: Observations) -> int | None:
        found = report(obs)
        return None if found is None else int(found[name])

    measure(name)(count)


_count("cycles")
_count("db_restarts")
_count("db_version_last")  # the data version the last DB served (each restore serves the next)
_count("cache_restarts")
_count("redis_restarts")


@measure("fault_recovery_s")
def fault_recovery_s(obs: Observations) -> dict[str, Any] | None:
    """By fault: how many, and the longest time from the service's return to a never-seen key
    served through the cache from the DB."""
    found = report(obs)
    return None if found is None else dict(found["recovery_s"])


def _reading(name: str, moment: str, figure: str) -> None:
    """Registers the measure `name`: `_cache(obs, moment, figure)`."""
    measure(name)(lambda obs: _cache(obs, moment, figure))


# The long-lived cache at rest: before, at the end of its warm-up; after, at the end of the last
# cycle. RSS in bytes.
_reading("rss_before", "before", "rss")
_reading("rss_after", "after", "rss")
_reading("fds_before", "before", "fds")
_reading("fds_after", "after", "fds")


@measure("rss_growth")
def rss_growth(obs: Observations) -> float | None:
    """rss_after / rss_before - 1."""
    before, after = _cache(obs, "before", "rss"), _cache(obs, "after", "rss")
    return None if before is None or after is None else round(after / before - 1.0, 4)


@measure("cache_measured")
def cache_measured(obs: Observations) -> dict[str, Any] | None:
    """Which cache process the figures are of, whether both readings were of that one process
    at rest, from which cycle's end to which, and its RSS at the end of each of its cycles."""
    found = report(obs)
    if found is None:
        return None
    cache = found["cache"]
    before, after = cache["before"], cache["after"]
    return {
        "pid": after["pid"],
        "same_process": before["pid"] == after["pid"],
        "connections_settled": before["settled"] and after["settled"],
        "from_end_of_cycle": cache["from_end_of_cycle"],
        "to_end_of_cycle": cache["to_end_of_cycle"],
        "rss_by_cycle": cache["rss_by_cycle"],
    }


@measure("resource_drift")
def resource_drift(obs: Observations) -> float | None:
    """The largest change, as a fraction, of any lab process's RSS or fds at rest at the end of a
    cycle from its service's first reading (at the end of the warm-up): 0.1 is 10%."""
    found = report(obs)
    if found is None:
        return None
    drifts = [
        p[f"{figure}_drift"] for p in found["processes"].values() for figure in ("rss", "fds")
    ]
    return max(drifts, default=0.0)


@measure("process_resources")
def process_resources(obs: Observations) -> dict[str, Any] | None:
    """By lab process (db, redis, wire, each cache replica): its first and last readings at rest,
    how many processes it was over the readings (a killed one comes back as a new one), and its
    largest RSS and fds drift with the cycle at whose end each was seen."""
    found = report(obs)
    return None if found is None else dict(found["processes"])
