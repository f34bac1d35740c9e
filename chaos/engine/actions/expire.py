"""`expire all` / `expire KEY...`: drop cached keys, so the next reads miss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chaos.engine.actions.base import Action
from chaos.engine.registry import ACTIONS
from herdlab.values import key_error

if TYPE_CHECKING:
    from chaos.engine.trial import Trial


@dataclass(frozen=True)
class Expire(Action):
    keys: tuple[str, ...] | None  # None: every key
    usage = "expire all | expire KEY..."

    @classmethod
    def parse(cls, args: list[str]) -> Action:
        if not args:
            raise ValueError(f"usage: {cls.usage}")
        for key in args:
            problem = key_error(key)
            if problem:
                raise ValueError(f"{problem}: {key[:64]!r}")
        return cls(None if args == ["all"] else tuple(args))

    async def run(self, trial: Trial) -> dict[str, Any]:
        async with trial.admin() as admin:
            expired = await admin.expire(None if self.keys is None else list(self.keys))
        return {"expired": expired}


ACTIONS.register("expire", Expire)
