"""`expire all` / `expire KEY...` (`chaos expire --all`): drop cached keys on every replica of
the cache (each has its own local store), so the next reads miss: the start of a stampede."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import click

from chaos.engine.actions.base import Action, Arg, Target
from chaos.engine.registry import ACTIONS
from herdlab.values import key_error


@dataclass(frozen=True)
class Expire(Action):
    keys: tuple[str, ...]
    all_keys: bool | None
    usage = "expire all | expire KEY..."
    summary = (
        "Drop keys from the cache (or --all), so the next reads miss: the start of a stampede."
    )
    args = (
        Arg("keys", click.STRING, required=False, many=True),
        Arg("all_keys", click.BOOL, "Expire every key.", "--all", required=False, flag=True),
    )

    @classmethod
    def parse(cls, args: list[str]) -> Action:
        return super().parse(["--all"] if args == ["all"] else args)

    def validate(self) -> None:
        if bool(self.all_keys) == bool(self.keys):
            raise ValueError("give either KEY... or --all")
        for key in self.keys:
            problem = key_error(key)
            if problem:
                raise ValueError(f"{problem}: {key[:64]!r}")

    def acts_on(self) -> str:
        return "all" if self.all_keys else ",".join(self.keys)

    def counted_as(self) -> str:
        return "cache"

    async def run(self, target: Target) -> dict[str, Any]:
        expired = 0
        async for admin in target.cache_admins():
            expired += await admin.expire(None if self.all_keys else list(self.keys))
        return {"expired": expired}


ACTIONS.register("expire", Expire)
