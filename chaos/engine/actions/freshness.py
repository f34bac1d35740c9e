"""`freshness --swr D --sie D --beta B --ttl-jitter P`: the cache's freshness policy at runtime
(stale serving, early refresh and TTL jitter); unset options keep their value, each bounded as
the cache's own setting is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import click

from cache_service.settings import CacheSettings
from chaos.engine.actions.base import Action, Arg, Target
from chaos.engine.registry import ACTIONS
from herdlab.config import DURATION
from herdlab.settings import by_key
from protos import admin_pb2


def _bounds(key: str) -> Any:
    return lambda value: by_key(CacheSettings)[key][1].problem(value)


# The admin field each argument sets, and the cache setting whose bounds it has.
_FIELDS = {
    "swr": ("stale_while_revalidate_s", "stale_while_revalidate"),
    "sie": ("stale_if_error_s", "stale_if_error"),
    "beta": ("beta", "beta"),
    "ttl_jitter": ("ttl_jitter_pct", "ttl_jitter"),
}


def _arg(name: str, kind: click.ParamType, help: str) -> Arg:  # type: ignore[type-arg]
    option = "--" + name.replace("_", "-")
    return Arg(name, kind, help, option, required=False, check=_bounds(_FIELDS[name][1]))


@dataclass(frozen=True)
class Freshness(Action):
    swr: float | None
    sie: float | None
    beta: float | None
    ttl_jitter: float | None
    usage = "freshness [--swr D] [--sie D] [--beta B] [--ttl-jitter PCT]"
    summary = (
        "Set the cache's freshness policy at runtime (through its admin service): stale serving, "
        "early refresh and TTL jitter. Unset options keep their value."
    )
    args = (
        _arg(
            "swr",
            DURATION,
            "stale-while-revalidate: serve a value expired less than this long ago while one "
            "background refresh runs; 0 turns it off [default: unchanged].",
        ),
        _arg(
            "sie",
            DURATION,
            "stale-if-error: when a fetch fails, serve a value expired less than this long ago "
            "instead of the error; 0 turns it off [default: unchanged].",
        ),
        _arg(
            "beta",
            click.FLOAT,
            "XFetch's beta (early refresh); 0 turns it off [default: unchanged].",
        ),
        _arg(
            "ttl_jitter",
            click.FLOAT,
            "Shorten each new value's TTL by up to this percentage [default: unchanged].",
        ),
    )

    def validate(self) -> None:
        if not self.described():
            raise ValueError("give at least one of --swr, --sie, --beta, --ttl-jitter")

    def acts_on(self) -> str:
        return "cache"

    def recorded(self, described: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
        return result  # the whole policy in force, the options given or not

    def described(self) -> dict[str, Any]:
        return {
            _FIELDS[name][0]: getattr(self, name)
            for name in _FIELDS
            if getattr(self, name) is not None
        }

    async def run(self, target: Target) -> dict[str, Any]:
        async with target.admin() as admin:
            state = await admin.set_freshness(admin_pb2.Freshness(**self.described()))
        return {
            "stale_while_revalidate_s": state.freshness.stale_while_revalidate_s,
            "stale_if_error_s": state.freshness.stale_if_error_s,
            "beta": state.freshness.beta,
            "ttl_jitter_pct": state.freshness.ttl_jitter_pct,
        }


ACTIONS.register("freshness", Freshness)
