"""Conditions a timeline step can wait for (`when = "db_arrivals >= 1000"`), by name.

Each reads one number of the running trial; the step fires once `NAME OP NUMBER` holds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chaos.engine.registry import CONDITIONS
from chaos.lab.admin import Admin

if TYPE_CHECKING:
    from chaos.engine.trial import Trial


async def db_arrivals(trial: Trial, admin: Admin) -> float:
    """Requests that reached the DB since the herd's release (the DB's own count). With one user
    per key and no retry yet, every first attempt has reached the DB once it equals the keys."""
    return float((await admin.db_state()).arrivals - trial.db_baseline)


async def cache_attempts(trial: Trial, admin: Admin) -> float:
    """Attempts the cache made towards the DB since the herd's release."""
    return float((await admin.cache_state()).db_attempts - trial.cache_baseline)


CONDITIONS.register("db_arrivals", db_arrivals)
CONDITIONS.register("cache_attempts", cache_attempts)
