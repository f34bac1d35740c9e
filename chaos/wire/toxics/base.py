"""What every wire fault ("toxic") is: a small typed value with one job on a connection's bytes.

A toxic sees the chunks one direction of one connection carries (`pipe`: pass them on, changed
or delayed, or drop them), may act on the connection as a whole while it is in force (`hold`:
e.g. reset it after a while), or may decide which new connections reach the service at all
(`gate`: an admission cure, `chaos.wire.gate`). What is common to every toxic (which
direction it applies to, the share of connections it touches, its expiry) is applied once, by
the proxy's link (`chaos.wire.proxy`), never inside a toxic.

Attributes are dataclass fields declared with `attribute(...)`: their bounds are checked once,
in `parse`, so a bad value is refused when the fault is added, naming the attribute and its range.
An attribute named `*_ms` is a duration (written 200ms, 1s where people write it: the `wire`
action, in a timeline and on the command line, `chaos.engine.actions.wire`); a `whole` one takes
whole numbers only. `option` names the attribute `--KIND` sets (None: `--KIND` is a switch).
Each subclass is made a frozen dataclass and registered under its `kind` in `TOXICS` as it is
defined.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Self, dataclass_transform

from herdlab.registry import Registry

if TYPE_CHECKING:
    from chaos.wire.connection import Connection
    from chaos.wire.gate import Clock, Gate

# A day: every sleep a toxic draws is finite and bounded.
MAX_MS = 86_400_000.0


def attribute(default: float, lo: float, hi: float, help: str, *, whole: bool = False) -> Any:
    """Declares one attribute of a toxic: its default, its bounds (inclusive), what it means,
    whether it takes whole numbers only."""
    return dataclasses.field(
        default=default, metadata={"lo": lo, "hi": hi, "help": help, "whole": whole}
    )


@dataclass_transform(frozen_default=True)
@dataclass(frozen=True)
class Toxic:
    """A subclass is a frozen dataclass, registered in `TOXICS` under its `kind`."""

    kind: ClassVar[str]
    summary: ClassVar[str]  # what it does, one line (the `--KIND` option's help)
    option: ClassVar[str | None] = None  # the attribute `--KIND` sets; None: a switch
    # True: without a time of its own it acts once, on the connections open now, and is not kept.
    momentary: ClassVar[bool] = False
    # True: the toxic acts on whole connections (`hold`), so it can be applied `once`.
    holds: ClassVar[bool] = False

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        TOXICS.register(cls.kind, dataclass(frozen=True)(cls))

    @classmethod
    def parse(cls, attributes: Mapping[str, float]) -> Self:
        """The toxic with these attributes (missing ones at their defaults); ValueError naming
        an unknown attribute or a value out of its bounds."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, float] = {}
        for key, value in attributes.items():
            spec = fields.get(key)
            if spec is None:
                known = ", ".join(fields) or "none"
                raise ValueError(f"{cls.kind} has no attribute {key!r}; it has: {known}")
            lo, hi = spec.metadata["lo"], spec.metadata["hi"]
            if not (math.isfinite(value) and lo <= value <= hi):
                raise ValueError(f"{cls.kind} {key} must be in [{lo:g}, {hi:g}], got {value:g}")
            values[key] = float(value)
        return cls(**values)

    @classmethod
    def described(cls) -> dict[str, str]:
        """Each attribute's meaning and bounds, for help texts."""
        return {
            f.name: f"{f.metadata['help']} [{f.metadata['lo']:g}, {f.metadata['hi']:g}]"
            for f in dataclasses.fields(cls)
        }

    def attributes(self) -> dict[str, float]:
        return {f.name: float(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def read_size(self) -> int | None:
        """The most bytes the pipe should read at once while this toxic is in force (None: no
        limit of its own)."""
        return None

    async def pipe(self, chunk: bytes, conn: Connection, rng: random.Random) -> bytes | None:
        """What is passed on for `chunk` (None: nothing). May sleep: the direction waits."""
        return chunk

    async def hold(self, conn: Connection, rng: random.Random) -> None:
        """Acts on `conn` as a whole; runs from when the toxic meets the connection until it
        is removed or the connection ends (only for toxics with `holds`)."""

    def longest_hold_s(self) -> float:
        """The longest `hold` takes to act on a connection (its times added up)."""
        return sum(self.attributes().values()) / 1000

    def gate(self, clock: Clock, changed: Callable[[], None]) -> Gate | None:
        """The admission state this toxic keeps while in force (None: it admits everything);
        `changed` is called whenever its counts change."""
        return None


TOXICS: Registry[type[Toxic]] = Registry("wire fault kind")
