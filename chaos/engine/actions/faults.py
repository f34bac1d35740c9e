"""What `latency` and `errors` share: the DB's runtime faults set through its admin plane,
optionally `--for D`: the DB is told to put the old values back itself after D (so the revert
holds even if the controller is killed), and the target holds the fault that long."""

from __future__ import annotations

from typing import Any

from chaos.engine.actions.base import Arg, Target, positive_duration
from herdlab.config import DURATION
from protos import admin_pb2

FOR = Arg(
    "for_s",
    DURATION,
    "Put the old value back after this long (the DB does it itself; Ctrl-C does it now).",
    "--for",
    required=False,
    check=positive_duration,
)


async def set_faults(
    target: Target, faults: admin_pb2.Faults, for_s: float | None
) -> admin_pb2.DbState:
    """Sets `faults`; with `for_s`, for that long. Returns the DB's state after the change."""
    async with target.admin() as admin:
        if for_s is None:
            return await admin.set_faults(faults)
        before = (await admin.db_state()).faults
        previous = admin_pb2.Faults()
        for name in ("latency_ms", "spread_ms", "error_rate"):
            if faults.HasField(name):
                setattr(previous, name, getattr(before, name))
        faults.for_ms = for_s * 1000
        state = await admin.set_faults(faults)
        await target.hold(for_s, lambda: admin.set_faults(previous))
        return state


def for_detail(for_s: float | None) -> dict[str, Any]:
    return {} if for_s is None else {"for_s": for_s}
