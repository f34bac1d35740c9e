"""`queue db codel [--target D] [--interval D]`: how the DB serves its queue, at runtime."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import click

from chaos.engine.actions.base import SERVICE, Action, Arg, ArgError, Target
from chaos.engine.registry import ACTIONS
from db_service.settings import DbSettings
from herdlab.config import DURATION
from herdlab.queueing import NAMES as DISCIPLINES
from herdlab.settings import by_key


def _bounds(key: str) -> Any:
    return lambda value: by_key(DbSettings)[key][1].problem(value)


@dataclass(frozen=True)
class Queue(Action):
    service: str
    discipline: str
    target: float | None
    interval: float | None
    usage = "queue db fifo|codel|lifo [TARGET] [INTERVAL]"
    summary = (
        "Set how the DB serves its queue: fifo, codel (sheds waiters past their limit) or lifo "
        "(newest first while the queue stands)."
    )
    args = (
        Arg("service", SERVICE),
        Arg("discipline", click.Choice(DISCIPLINES)),
        Arg(
            "target",
            DURATION,
            "CoDel: how long a query joining a standing queue may wait [default: unchanged].",
            "--target",
            required=False,
            check=_bounds("codel_target"),
        ),
        Arg(
            "interval",
            DURATION,
            "How long the queue must stay non-empty to stand [default: unchanged].",
            "--interval",
            required=False,
            check=_bounds("codel_interval"),
        ),
    )

    def validate(self) -> None:
        if self.service != "db":
            raise ArgError(
                self.args[0], f"queue is injected into the db only, not {self.service!r}"
            )
        if self.target is not None and self.interval is not None:
            # Either alone is checked against the DB's current value by the DB itself.
            pair = DbSettings(codel_target_s=self.target, codel_interval_s=self.interval).problems()
            if pair:
                raise ValueError(pair[0])

    def described(self) -> dict[str, Any]:
        details: dict[str, Any] = {"discipline": self.discipline}
        for key, value in (("codel_target", self.target), ("codel_interval", self.interval)):
            if value is not None:
                details[f"{key}_ms"] = value * 1000
        return details

    async def run(self, target: Target) -> dict[str, Any]:
        async with target.admin() as admin:
            state = await admin.set_queue_discipline(self.discipline, self.target, self.interval)
        return {
            "codel_target_ms": state.capacity.codel_target_ms,
            "codel_interval_ms": state.capacity.codel_interval_ms,
        }


ACTIONS.register("queue", Queue)
