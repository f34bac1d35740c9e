"""An experiment as the engine runs it: its settings, setup and timeline steps, end, measures,
variants and hypothesis, checked and typed (`chaos.engine.spec` reads one from a TOML file).

An experiment with a `TargetSpec` runs against the user's own service instead of a lab stack:
the herd calls its method through a wire proxy of the run's own, and `PromQuery` measures read
the user's Prometheus over the run's window."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cache_service.settings import CacheSettings
from chaos.engine.herd_call import Call
from chaos.engine.herd_settings import HerdSettings
from chaos.engine.params import Param
from chaos.engine.stack_settings import StackSettings
from chaos.wire.settings import WireSettings
from db_service.settings import DbSettings
from herdlab.settings import Settings, with_values

SECTIONS = ("db", "cache", "herd", "wire", "stack")
# `row.NAME` in `configurations` or `[variants]`: a label telling rows apart (e.g. the trigger and
# the cure of a row) that changes no setting; steps' and expectations' `variant` can name it.
LABELS = "row"


def sections_of(
    db: DbSettings,
    cache: CacheSettings,
    herd: HerdSettings,
    wire: WireSettings,
    stack: StackSettings,
) -> dict[str, Settings]:
    """{section of SECTIONS: its settings}."""
    return dict(zip(SECTIONS, (db, cache, herd, wire, stack), strict=True))


@dataclass(frozen=True)
class Condition:
    name: str
    op: str
    value: float

    def holds(self, measured: float) -> bool:
        return {
            ">=": measured >= self.value,
            "<=": measured <= self.value,
            "==": measured == self.value,
            ">": measured > self.value,
            "<": measured < self.value,
        }[self.op]

    def __str__(self) -> str:
        return f"{self.name} {self.op} {self.value:g}"


@dataclass(frozen=True)
class Step:
    """One timeline entry: an action and when it runs (`at` after the release, `after` the
    previous step, or `when` a condition holds, at the latest `within` after the release)."""

    do: str
    action: Any  # the parsed action (chaos.engine.actions.base.Action)
    at_s: float | None = None
    after_s: float | None = None
    when: Condition | None = None
    within_s: float | None = None
    variant: Mapping[str, Any] = field(default_factory=dict)  # the rows it runs in (all: {})

    def runs_in(self, variant: Mapping[str, Any]) -> bool:
        return all(variant.get(k) == v for k, v in self.variant.items())


@dataclass(frozen=True)
class Tolerance:
    measure: str
    op: str
    value: Any
    of: Mapping[str, Any] | None = None  # the variant a ratio is taken to

    def __str__(self) -> str:
        symbol = {"eq": "==", "min": ">=", "max": "<=", "max_times": "<=", "min_times": ">="}
        if self.of is not None:
            of = ", ".join(f"{k}={v}" for k, v in self.of.items())
            return f"{self.measure} {symbol[self.op]} {self.value:g} x ({of})"
        return f"{self.measure} {symbol[self.op]} {self.value}"


@dataclass(frozen=True)
class Expectation:
    variant: Mapping[str, Any]  # selector: every key must equal the row's variant value
    tolerances: tuple[Tolerance, ...]


PROM_REDUCERS = ("max", "min", "mean", "last")


@dataclass(frozen=True)
class PromQuery:
    """`[[measure]] name = "..." query = "..."`: a PromQL expression read over the run's window
    (from the release to the end, every `step_s`), its points reduced to one number by `over`."""

    name: str
    query: str
    over: str = "max"
    step_s: float = 1.0


@dataclass(frozen=True)
class TargetSpec:
    """`[target]`: the user's service the herd calls (through the run's own wire proxy)."""

    upstream: str  # HOST:PORT
    method: str  # pkg.Service/Method
    data: str = "{}"  # the request template (JSON)
    proto: str | None = None  # the method's .proto, where the service serves no reflection
    import_paths: tuple[str, ...] = ()
    metadata: tuple[str, ...] = ()  # k=v
    expect_fields: tuple[str, ...] = ()  # path=template
    tls_ca: str | None = None
    prometheus: str | None = None  # base URL, for `PromQuery` measures
    # The calls a second the service serves at most (its physical limit), for `recovery_over_ideal`
    capacity_per_s: float | None = None
    call: Call | None = None  # the method resolved (`spec.resolve_target`), before a run


@dataclass(frozen=True)
class Experiment:
    source: str  # the file's path as given, or a name
    text: str
    title: str
    description: str
    kind: str | None
    params: Mapping[str, Any]
    db: DbSettings
    cache: CacheSettings
    herd: HerdSettings
    setup: tuple[Step, ...]
    timeline: tuple[Step, ...]
    end_when: str
    end_limit_s: float
    measures: tuple[str, ...]
    variants: tuple[tuple[str, tuple[Any, ...]], ...]
    expect: tuple[Expectation, ...]
    smoke: Mapping[str, Any] = field(default_factory=dict)  # params for a CI-sized run
    # Rows named whole ({dotted setting: value}), combined with `variants` by product.
    configurations: tuple[Mapping[str, Any], ...] = ()
    wire: WireSettings = field(default_factory=WireSettings)
    stack: StackSettings = field(default_factory=StackSettings)
    # The typed params (`chaos.engine.params`): bounds, help, and `chaos scenario` options.
    typed_params: tuple[Param, ...] = ()
    target: TargetSpec | None = None  # set: against the user's service, not a lab stack
    queries: tuple[PromQuery, ...] = ()  # `[[measure]]`: PromQL measures (with a target)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def commands(self) -> list[str]:
        """The commands the file's `exec` steps would run, as written."""
        return [
            shlex.join(step.action.command)
            for step in (*self.setup, *self.timeline)
            if step.do.split()[0] == "exec"
        ]

    @property
    def swept_keys(self) -> set[str]:
        """The settings that tell rows apart: those of `variants` and of `configurations`."""
        return {k for k, _ in self.variants} | {k for c in self.configurations for k in c}

    def combinations(self) -> list[dict[str, Any]]:
        """Every variant: one {dotted key: value} per trial, in file order; each configuration
        (if any) with each combination of `variants`."""
        keys = [k for k, _ in self.variants]
        swept = [
            dict(zip(keys, values, strict=True))
            for values in itertools.product(*(v for _, v in self.variants))
        ]
        return [{**c, **v} for c in (self.configurations or ({},)) for v in swept]

    def with_seed(self, seed: int) -> Experiment:
        """The same experiment with every service and the herd seeded by `seed`."""
        return dataclasses.replace(
            self,
            db=dataclasses.replace(self.db, seed=seed),
            cache=dataclasses.replace(self.cache, seed=seed),
            herd=dataclasses.replace(self.herd, seed=seed),
        )

    def settings_for(
        self, variant: Mapping[str, Any]
    ) -> tuple[DbSettings, CacheSettings, HerdSettings]:
        """The stack's and the herd's settings of one variant (its wire settings: `wire_for`)."""
        sections = sections_of(self.db, self.cache, self.herd, self.wire, self.stack)
        for dotted, value in variant.items():
            section, key = dotted.split(".", 1)
            if section != LABELS:
                sections[section] = with_values(sections[section], {key: value}, where=section)
        db, cache, herd = sections["db"], sections["cache"], sections["herd"]
        assert isinstance(db, DbSettings)
        assert isinstance(cache, CacheSettings)
        assert isinstance(herd, HerdSettings)
        return db, cache, herd

    def wire_for(self, variant: Mapping[str, Any]) -> WireSettings:
        """The wire settings of one variant."""
        values = {k.split(".", 1)[1]: v for k, v in variant.items() if k.startswith("wire.")}
        return with_values(self.wire, values, where="wire") if values else self.wire

    def stack_for(self, variant: Mapping[str, Any]) -> StackSettings:
        """The stack of one variant: replicas, store, tls."""
        values = {k.split(".", 1)[1]: v for k, v in variant.items() if k.startswith("stack.")}
        return with_values(self.stack, values, where="stack")
