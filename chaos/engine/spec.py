"""Experiment files: TOML, read with the standard library, checked before anything runs.

```toml
title = "..."                      # shown in the report
description = "..."
scenario = "retry-storm"           # optional: the kind whose document shape rows take
setup = ["warm", "expire all"]     # actions before the herd's release
configurations = [                 # optional: rows named whole, one trial each (not a product)
  { "cache.guards" = "none", "db.queue_discipline" = "fifo" },
  { "cache.guards" = "recommended", "db.queue_discipline" = "fifo" },
]
[params]                           # named values; "${name}" elsewhere is replaced by them
keys = 1000                        # (a whole "${name}" keeps the value's type)
outage = { default = "10s", min = "1s", max = "10m", help = "How long the DB is down." }
                                   # typed (`chaos.engine.params`): bounds, a scenario option
[stack]                            # optional: replicas = R, store = "local" | "redis", tls = true
replicas = 1                       # (every link over verified TLS), and the wire-fault proxy's
                                   # keys (`chaos.wire.settings`)
proxy = "cache"                    # (or, the same keys, in [stack.wire])
[stack.db]                         # any db-service setting, as on its command line
latency = "100ms"
[stack.cache]                      # any cache-service setting
policy = "full"
[herd]                             # users, keys, distribution, policy, deadline, channels, ...
users = "${keys}"
[[timeline]]                       # in order; each has `do` and one of at / after / when
when = "db_arrivals >= ${keys}"    # a registered condition, an operator, a number
within = "1.6s"                    # ... or this long after the release, whichever is first
do = "kill db"
variant = { "cache.policy" = "full" }   # optional: only in these rows
[[timeline]]
after = "10s"                      # after the previous step
do = "restore db"
[end]
when = "herd_done"                 # every request has a value or an error; bounded by `limit`
limit = "180s"
measures = ["amplification", "lost"]        # optional: the kind's fields by default
[variants]                                  # a sweep: one trial per combination, side by side
"cache.policy" = ["exponential", "full"]
[[expect]]                                  # the hypothesis: tolerances, as data
variant = { "cache.policy" = "full" }       # optional: which rows (all when absent)
lost = { eq = 0 }
post_restore_peak_over_capacity = { max_times = 0.5, of = { "cache.policy" = "exponential" } }
```

`configurations` and `[variants]` combine by product: each configuration with each combination
of the variants, the configuration's settings first (without `[variants]`, one trial per
configuration). Every configuration names the same settings, each as `[variants]` would
(`db.KEY`, `cache.KEY`, `herd.KEY`, `wire.KEY`, `stack.KEY`, also written as nested tables:
`{ cache = { guards = "none" } }`), no setting both in `configurations` and in `[variants]`, no
configuration twice; at most MAX_VARIANTS trials in all. A row label, `row.NAME` (NAME in
[a-z0-9_]) with text, a number or a boolean, changes no setting but tells rows apart (a trigger
and a cure, say). `[[expect]]` selects rows by any of those settings and labels (a label's value
must be one some row has), and so does a timeline step's `variant` (the step runs in those rows
only).

Against the user's own service instead of a lab stack (no `[stack]`; variants name `herd.KEY`):

```toml
[target]
upstream = "127.0.0.1:50051"       # HOST:PORT of the service; the run puts a wire proxy before it
method = "pkg.Service/Method"      # unary or server-streaming; types by reflection, or:
proto = "api.proto"                # optional, with import_paths = ["protos"]
data = '{"id": "{{key}}"}'         # the request template, as `chaos herd --data`
metadata = ["team=lab"]            # optional, and expect_fields = ["id={{key}}"], tls_ca = "..."
prometheus = "http://127.0.0.1:9090"   # optional: where [[measure]] queries are read
capacity = "400/s"                 # optional: calls a second it serves at most (for recovery)
[[measure]]                        # a PromQL measure, read from the release to the end
name = "p99"
query = "histogram_quantile(0.99, sum(rate(rpc_seconds_bucket[5s])) by (le))"
over = "max"                       # max | min | mean | last of its points (every `step`)
[[timeline]]
at = "1s"
do = "partition target"            # wire faults on the link `target`, and
[[timeline]]
after = "10s"
do = "exec --timeout 30s ./restart-api.sh"   # the user's command (needs --allow-exec)
```

Its steps are wire faults on `target` (`wire`, `partition`, `heal`) and `exec`; `measures`
defaults to `lost` and the `[[measure]]` names.

Nothing in a file is evaluated as Python. Every problem is one `ExperimentError` line naming the
file, the field and what is allowed (TOML syntax errors carry the parser's line and column).
"""

from __future__ import annotations

import dataclasses
import math
import re
import shlex
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cache_service.settings import CacheSettings
from chaos.engine.herd import parse_rate
from chaos.engine.herd_call import CallError, resolve
from chaos.engine.herd_settings import HerdSettings
from chaos.engine.kinds import ERROR
from chaos.engine.model import (
    LABELS,
    PROM_REDUCERS,
    Condition,
    Expectation,
    Experiment,
    PromQuery,
    Step,
    TargetSpec,
    Tolerance,
    sections_of,
)
from chaos.engine.params import ParamError
from chaos.engine.params import read as read_params
from chaos.engine.registry import ACTIONS, CONDITIONS, KINDS, MEASURES, load_all
from chaos.engine.stack_settings import StackSettings
from chaos.wire.settings import WireSettings
from db_service.settings import DbSettings
from herdlab.config import format_duration, parse_duration
from herdlab.settings import Settings, by_key, with_values

TOP_KEYS = (
    "title",
    "description",
    "scenario",
    "params",
    "stack",
    "herd",
    "setup",
    "timeline",
    "end",
    "measures",
    "variants",
    "configurations",
    "expect",
    "smoke",
    "target",
    "measure",
)
TARGET_KEYS = (
    "upstream",
    "method",
    "data",
    "proto",
    "import_paths",
    "metadata",
    "expect_fields",
    "tls_ca",
    "prometheus",
    "capacity",
)
MEASURE_KEYS = ("name", "query", "over", "step")
# A row's fields that are not measures: a query may not take their names.
RESERVED_FIELDS = (ERROR, "variant")
# What a [target] file's steps may do: wire faults on its proxy, and the user's own commands.
TARGET_ACTIONS = ("wire", "partition", "heal", "exec")
TARGET_MEASURES_DEFAULT = ("lost",)
# The settings a variant names (`db.KEY`, ...), in the order `sections_of` takes them.
# `[stack]`: the services' tables, the stack's own keys and the wire proxy's (also accepted,
# as before, in a `[stack.wire]` table).
WIRE_KEYS = tuple(by_key(WireSettings))
STACK_KEYS = ("db", "cache", "wire", *by_key(StackSettings), *WIRE_KEYS)
END_CONDITIONS = ("herd_done",)
MAX_LIMIT_S = 86_400.0
MAX_VARIANTS = 64
MAX_STEPS = 1000
OPERATORS = (">=", "<=", "==", ">", "<")
TOLERANCE_OPS = ("eq", "min", "max", "max_times", "min_times")
_SETTING_NAMES = (
    "must name a setting as db.KEY, cache.KEY, herd.KEY, wire.KEY or stack.KEY, or a row label "
    "as row.NAME"
)
_LABEL = re.compile(r"^[a-z0-9_]+$")
_PARAM = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_CONDITION = re.compile(r"^\s*([a-z_]+)\s*(>=|<=|==|>|<)\s*(-?\d+(?:\.\d+)?)\s*$")


class ExperimentError(ValueError):
    """One line: the file, the field and what is wrong with it."""

    def __init__(self, source: str, where: str, message: str) -> None:
        if not where.isprintable():  # a quoted TOML key may hold a newline or a control character
            where = repr(where)
        super().__init__(f"{source}: {where}: {message}" if where else f"{source}: {message}")


# -- loading --------------------------------------------------------------------------------------


def load(path: Path, params: Mapping[str, Any] | None = None) -> Experiment:
    """Reads and checks the experiment at `path`; `params` override its `[params]`."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ExperimentError(source, "", f"cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ExperimentError(
            source, "", f"not a TOML text file (byte {exc.start} is not UTF-8)"
        ) from None
    return parse(text, source, params)


def parse(text: str, source: str, params: Mapping[str, Any] | None = None) -> Experiment:
    load_all()
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ExperimentError(source, "", f"not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise ExperimentError(source, "", "arrays or tables nested too deeply") from None
    return _Parser(source, text).experiment(raw, dict(params or {}))


def resolve_target(experiment: Experiment) -> Experiment:
    """The experiment with its `[target]` method resolved against the upstream (reflection or
    its proto): ExperimentError naming the file and the field when it cannot be. Asks the
    service, so it runs before a run, not at `--check`."""
    target = experiment.target
    if target is None:
        return experiment
    try:
        call = resolve(
            target.upstream,
            target.method,
            target.data,
            proto=target.proto,
            import_paths=target.import_paths,
            tls_ca=target.tls_ca,
            metadata=target.metadata,
            expect=target.expect_fields,
        )
    except CallError as exc:
        raise ExperimentError(experiment.source, "target", str(exc)) from None
    return dataclasses.replace(experiment, target=dataclasses.replace(target, call=call))


def _type_name(value: Any) -> str:
    return {str: "text", bool: "a boolean", int: "an integer", float: "a number"}.get(
        type(value), type(value).__name__
    )


def _flatten(table: Mapping[str, Any]) -> dict[str, Any]:
    """`{ cache = { guards = "none" } }` as `{ "cache.guards" = "none" }` (one level)."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{inner}": v for inner, v in value.items()})
        else:
            flat[key] = value
    return flat


class _Parser:
    def __init__(self, source: str, text: str) -> None:
        self.source = source
        self.text = text
        self.wire = WireSettings()  # read with the other settings (`settings`)

    def error(self, where: str, message: str) -> ExperimentError:
        return ExperimentError(self.source, where, message)

    def table(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(where, f"must be a table, got {_type_name(value)}")
        return value

    def only(self, table: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
        for key in table:
            if key not in allowed:
                prefix = f"{where}." if where else ""
                raise self.error(f"{prefix}{key}", f"unknown key; allowed: {', '.join(allowed)}")

    def text_field(self, raw: Mapping[str, Any], key: str, *, required: bool) -> str:
        value = raw.get(key)
        if value is None:
            if required:
                raise self.error(key, "missing; give a short text")
            return ""
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"must be non-empty text, got {_type_name(value)}")
        return value

    def duration(self, value: Any, where: str, lo: float = 0.0, hi: float = MAX_LIMIT_S) -> float:
        if not isinstance(value, str):
            raise self.error(where, f'must be a duration with a unit such as "10s", got {value!r}')
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise self.error(where, str(exc)) from None
        if not lo <= seconds <= hi:
            raise self.error(where, f"must be in [{lo:g}s, {hi:g}s], got {value}")
        return seconds

    # -- params --------------------------------------------------------------------------------

    def substitute(self, value: Any, params: Mapping[str, Any], where: str) -> Any:
        """`value` with every `${name}` replaced; a whole `"${name}"` keeps the param's type."""
        if isinstance(value, dict):
            return {k: self.substitute(v, params, f"{where}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [self.substitute(v, params, f"{where}[{i}]") for i, v in enumerate(value)]
        if not isinstance(value, str):
            return value
        for name in _PARAM.findall(value):
            if name not in params:
                raise self.error(
                    where,
                    f"names ${{{name}}}, which [params] does not define; "
                    f"defined: {', '.join(sorted(params)) or 'none'}",
                )
        whole = _PARAM.fullmatch(value.strip())
        if whole:
            return params[whole.group(1)]
        return _PARAM.sub(lambda m: str(params[m.group(1)]), value)

    # -- the experiment ------------------------------------------------------------------------

    def experiment(self, raw: dict[str, Any], overrides: dict[str, Any]) -> Experiment:
        self.only(raw, TOP_KEYS, "")
        try:
            params, typed = read_params(self.table(raw.get("params", {}), "params"))
        except ParamError as exc:
            raise self.error(exc.where, exc.message) from None
        smoke = self.table(raw.get("smoke", {}), "smoke")
        for name in smoke:
            if name not in params:
                raise self.error(f"smoke.{name}", "not a param of this file")
        for name in overrides:
            if name not in params:
                raise self.error(
                    f"params.{name}",
                    "no such param to set; the file defines: "
                    + (", ".join(sorted(params)) or "none"),
                )
        for where, given in (("smoke", smoke), ("params", overrides)):
            for name, value in given.items():
                problem = typed[name].problem(value) if name in typed else None
                if problem:
                    raise self.error(f"{where}.{name}", problem)
        params.update(overrides)
        body = {
            k: self.substitute(v, params, k) for k, v in raw.items() if k not in ("params", "smoke")
        }
        kind = body.get("scenario")
        if kind is not None and (not isinstance(kind, str) or kind not in KINDS):
            raise self.error(
                "scenario", f"unknown scenario kind {kind!r}; known: {', '.join(KINDS.names())}"
            )
        db, cache, herd, stack = self.settings(body)
        target = self.target(body["target"]) if "target" in body else None
        if target is not None and "stack" in body:
            raise self.error("stack", "a [target] file runs against your service; drop [stack]")
        queries = self.queries(body.get("measure", []), target)
        measures = self.measures(body.get("measures"), kind, queries, target)
        variants = self.variants(body.get("variants", {}), db, cache, herd, stack)
        configurations = self.configurations(
            body.get("configurations", []), db, cache, herd, variants, stack
        )
        end_raw = self.table(body.get("end", {}), "end")
        self.only(end_raw, ("when", "limit"), "end")
        end_when = end_raw.get("when", "herd_done")
        if end_when not in END_CONDITIONS:
            raise self.error(
                "end.when", f"must be one of {', '.join(END_CONDITIONS)}, got {end_when!r}"
            )
        if "limit" not in end_raw:
            raise self.error("end.limit", 'missing; every run is bounded in time, e.g. "180s"')
        end_limit_s = self.duration(end_raw["limit"], "end.limit", lo=0.001)
        timeline = self.timeline(body.get("timeline", []))
        self.within_limit(timeline, end_limit_s)
        experiment = Experiment(
            source=self.source,
            text=self.text,
            title=self.text_field(body, "title", required=True),
            description=self.text_field(body, "description", required=False),
            kind=kind,
            params=params,
            typed_params=tuple(typed.values()),
            db=db,
            cache=cache,
            herd=herd,
            setup=self.setup(body.get("setup", [])),
            timeline=timeline,
            end_when=end_when,
            end_limit_s=end_limit_s,
            measures=measures,
            variants=variants,
            expect=(),
            smoke=smoke,
            configurations=configurations,
            wire=self.wire,
            stack=stack,
            target=target,
            queries=queries,
        )
        if target is not None:
            for key in experiment.swept_keys:
                if not key.startswith(("herd.", f"{LABELS}.")):
                    raise self.error(
                        f'variants."{key}"',
                        "a [target] file sweeps herd.KEY settings (and row labels) only",
                    )
        self.combinations(experiment)
        self.steps(experiment)
        expect = self.expect(body.get("expect", []), experiment)
        return dataclasses.replace(experiment, expect=expect)

    def combinations(self, experiment: Experiment) -> None:
        """Every variant's settings together (a cap below a base is caught here, not in a run)."""
        for variant in experiment.combinations():
            named = ", ".join(f"{k}={v}" for k, v in variant.items())
            for where, settings in zip(
                ("stack.db", "stack.cache", "herd"), experiment.settings_for(variant), strict=True
            ):
                problems = settings.problems()
                if problems:
                    raise self.error(f"variant ({named})", f"{where}: {problems[0]}")
            problems = experiment.wire_for(variant).problems()
            if problems:
                raise self.error(f"variant ({named})", f"stack.wire: {problems[0]}")
            try:
                experiment.stack_for(variant)
            except ValueError as exc:
                raise self.error(f"variant ({named})", str(exc)) from None

    def steps(self, experiment: Experiment) -> None:
        """What each action asks of the experiment as a whole (e.g. `restore` after a `kill`),
        in each row with the steps that run in it."""
        phases = (("setup", experiment.setup), ("timeline", experiment.timeline))
        for phase, steps in phases:
            for index, step in enumerate(steps):
                if experiment.target is not None:
                    self.target_step(step, f"{phase}[{index}]")
                if step.variant:
                    self.selector(step.variant, f"{phase}[{index}].variant", experiment)
        for row in experiment.combinations():
            down: set[str] = set()
            for phase, steps in phases:
                for index, step in enumerate(steps):
                    if not step.runs_in(row):
                        continue
                    problem = step.action.problem(experiment, down)
                    if problem:
                        raise self.error(f"{phase}[{index}].do", problem)

    def target_step(self, step: Step, where: str) -> None:
        """A [target] file's step: a wire fault on its proxy or the user's command, at a time."""
        if step.do.split()[0] not in TARGET_ACTIONS:
            raise self.error(
                f"{where}.do", f"a [target] file's steps are {', '.join(TARGET_ACTIONS)}"
            )
        if step.when is not None:
            raise self.error(f"{where}.when", "a [target] file's steps run at or after a time")

    def settings(
        self, body: Mapping[str, Any]
    ) -> tuple[DbSettings, CacheSettings, HerdSettings, StackSettings]:
        stack = self.table(body.get("stack", {}), "stack")
        self.only(stack, STACK_KEYS, "stack")
        nested_wire = self.table(stack.get("wire", {}), "stack.wire")
        for key in nested_wire:
            if key in stack:
                raise self.error(
                    f"stack.{key}", "given in [stack] and in [stack.wire]; name it in one place"
                )
        try:
            shape = with_values(
                StackSettings(),
                {k: v for k, v in stack.items() if k not in ("db", "cache", "wire", *WIRE_KEYS)},
                where="stack",
            )
            db = with_values(
                DbSettings(), self.table(stack.get("db", {}), "stack.db"), where="stack.db"
            )
            cache = with_values(
                CacheSettings(),
                self.table(stack.get("cache", {}), "stack.cache"),
                where="stack.cache",
            )
            herd = with_values(
                HerdSettings(), self.table(body.get("herd", {}), "herd"), where="herd"
            )
            self.wire = with_values(
                with_values(
                    WireSettings(),
                    {k: v for k, v in stack.items() if k in WIRE_KEYS},
                    where="stack",
                ),
                nested_wire,
                where="stack.wire",
            )
        except ExperimentError:
            raise
        except ValueError as exc:
            raise ExperimentError(self.source, "", str(exc)) from None
        checked: tuple[tuple[str, Settings], ...] = (
            ("stack.db", db),
            ("stack.cache", cache),
            ("herd", herd),
            ("stack.wire", self.wire),
        )
        for where, settings in checked:
            problems = settings.problems()
            if problems:
                raise self.error(where, problems[0])
        return db, cache, herd, shape

    def target(self, raw: Any) -> TargetSpec:
        table = self.table(raw, "target")
        self.only(table, TARGET_KEYS, "target")
        found: dict[str, Any] = {}
        for key in ("upstream", "method"):
            value = table.get(key)
            if not isinstance(value, str) or not value.strip():
                raise self.error(f"target.{key}", "missing; give it as text")
            found[key] = value.strip()
        for key in ("data", "proto", "tls_ca", "prometheus"):
            if key in table:
                if not isinstance(table[key], str):
                    raise self.error(f"target.{key}", f"must be text, got {_type_name(table[key])}")
                found[key] = table[key]
        for key in ("import_paths", "metadata", "expect_fields"):
            value = table.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise self.error(f"target.{key}", "must be a list of texts")
            found[key] = tuple(value)
        if "capacity" in table:
            found["capacity_per_s"] = self.capacity(table["capacity"])
        prometheus = found.get("prometheus")
        if prometheus is not None and not re.match(r"^https?://[^/\s]+", prometheus):
            raise self.error("target.prometheus", f"must be an http(s) URL, got {prometheus!r}")
        host, sep, port = found["upstream"].rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
            raise self.error("target.upstream", f"must read HOST:PORT, got {found['upstream']!r}")
        base = Path(self.source).parent
        for key in ("proto", "tls_ca"):
            if key in found:
                found[key] = str(base / found[key])
        found["import_paths"] = tuple(str(base / p) for p in found["import_paths"])
        return TargetSpec(**found)

    def capacity(self, raw: Any) -> float:
        """`[target] capacity`: calls a second, a number or text like "160/s"."""
        if isinstance(raw, bool) or not isinstance(raw, int | float | str):
            raise self.error("target.capacity", f"must be calls a second, got {_type_name(raw)}")
        try:
            return parse_rate(str(raw))
        except ValueError as exc:
            raise self.error("target.capacity", str(exc)) from None

    def queries(self, raw: Any, target: TargetSpec | None) -> tuple[PromQuery, ...]:
        if not isinstance(raw, list):
            raise self.error("measure", "must be a list of tables ([[measure]])")
        found: list[PromQuery] = []
        for index, entry in enumerate(raw):
            where = f"measure[{index}]"
            table = self.table(entry, where)
            self.only(table, MEASURE_KEYS, where)
            if target is None or target.prometheus is None:
                raise self.error(where, 'needs [target] with prometheus = "http://..."')
            name, query = table.get("name"), table.get("query")
            if not isinstance(name, str) or not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
                raise self.error(f"{where}.name", "must be a name of a-z, 0-9 and _")
            if name in MEASURES or any(q.name == name for q in found):
                raise self.error(f"{where}.name", f"{name!r} is already a measure")
            if name in RESERVED_FIELDS:
                raise self.error(f"{where}.name", f"{name!r} is a row's own field; choose another")
            if not isinstance(query, str) or not query.strip():
                raise self.error(f"{where}.query", "missing; give a PromQL expression")
            over = table.get("over", "max")
            if over not in PROM_REDUCERS:
                raise self.error(f"{where}.over", f"must be one of {', '.join(PROM_REDUCERS)}")
            step = self.duration(table.get("step", "1s"), f"{where}.step", lo=0.001, hi=3600)
            found.append(PromQuery(name, query, over, step))
        return tuple(found)

    def measures(
        self,
        raw: Any,
        kind: str | None,
        queries: tuple[PromQuery, ...] = (),
        target: TargetSpec | None = None,
    ) -> tuple[str, ...]:
        named = {q.name for q in queries}
        if raw is None and target is not None:
            return (*TARGET_MEASURES_DEFAULT, *(q.name for q in queries))
        if raw is None:
            if kind is None:
                raise self.error(
                    "measures",
                    f"missing; name the measures to compute (known: {', '.join(MEASURES.names())})",
                )
            return tuple(KINDS.get(kind).measures)
        if not isinstance(raw, list) or not raw or not all(isinstance(m, str) for m in raw):
            raise self.error("measures", "must be a non-empty list of measure names")
        for index, name in enumerate(raw):
            if name not in MEASURES and name not in named:
                raise self.error(
                    f"measures[{index}]",
                    f"unknown measure {name!r}; known: {', '.join(MEASURES.names())}",
                )
        return tuple(raw)

    def variants(
        self,
        raw: Any,
        db: DbSettings,
        cache: CacheSettings,
        herd: HerdSettings,
        stack: StackSettings,
    ) -> tuple[tuple[str, tuple[Any, ...]], ...]:
        table = self.table(raw, "variants")
        sections = sections_of(db, cache, herd, self.wire, stack)
        found = []
        count = 1
        for dotted, values in table.items():
            where = f'variants."{dotted}"'
            if not isinstance(values, list) or not values:
                raise self.error(where, "must be a non-empty list of values")
            for value in values:
                self.swept_value(sections, dotted, value, where)
            if len(set(map(repr, values))) != len(values):
                raise self.error(where, "lists a value twice")
            count *= len(values)
            found.append((dotted, tuple(values)))
        if count > MAX_VARIANTS:
            raise self.error("variants", f"{count} combinations; at most {MAX_VARIANTS}")
        return tuple(found)

    def swept_value(
        self, sections: Mapping[str, Settings], dotted: str, value: Any, where: str
    ) -> None:
        """Checks one row's value of `dotted`: a setting's value it allows, or a row label's
        (`row.NAME`: text, a number or a boolean, changing no setting)."""
        section, _, key = dotted.partition(".")
        if section == LABELS:
            if not _LABEL.match(key):
                raise self.error(
                    where, f"a row label is row.NAME with NAME in [a-z0-9_], got {key!r}"
                )
            if not isinstance(value, bool | int | float | str):
                raise self.error(where, "a row label's value is text, a number or a boolean")
            return
        if section not in sections or not key:
            raise self.error(where, _SETTING_NAMES)
        try:
            with_values(sections[section], {key: value}, where=section)
        except ValueError as exc:
            raise self.error(where, str(exc)) from None

    def configurations(
        self,
        raw: Any,
        db: DbSettings,
        cache: CacheSettings,
        herd: HerdSettings,
        variants: tuple[tuple[str, tuple[Any, ...]], ...],
        stack: StackSettings,
    ) -> tuple[dict[str, Any], ...]:
        if not isinstance(raw, list):
            raise self.error(
                "configurations", 'must be a list of tables, e.g. [ { "cache.guards" = "none" } ]'
            )
        sections = sections_of(db, cache, herd, self.wire, stack)
        swept = {k for k, _ in variants}
        trials = len(raw) * math.prod(len(v) for _, v in variants)
        if trials > MAX_VARIANTS:
            raise self.error("configurations", f"{trials} trials in all; at most {MAX_VARIANTS}")
        found: list[dict[str, Any]] = []
        for index, entry in enumerate(raw):
            where = f"configurations[{index}]"
            table = _flatten(self.table(entry, where))
            if not table:
                raise self.error(where, "names no setting")
            for dotted, value in table.items():
                at = f'{where}."{dotted}"'
                self.swept_value(sections, dotted, value, at)
                if dotted in swept:
                    raise self.error(at, "also swept in [variants]; name it in one place")
            if found and table.keys() != found[0].keys():
                raise self.error(
                    where,
                    f"names {', '.join(table)}; every configuration names the same settings as "
                    f"the first ({', '.join(found[0])})",
                )
            if table in found:
                raise self.error(where, f"the same as configurations[{found.index(table)}]")
            found.append(table)
        return tuple(found)

    def step(self, raw: Any, where: str, *, timed: bool) -> Step:
        if isinstance(raw, str) and not timed:
            raw = {"do": raw}
        entry = self.table(raw, where)
        allowed = ("do", "at", "after", "when", "within", "variant") if timed else ("do",)
        self.only(entry, allowed, where)
        do = entry.get("do")
        if not isinstance(do, str) or not do.split():
            raise self.error(
                f"{where}.do", f"must name an action; known: {', '.join(ACTIONS.names())}"
            )
        name, *args = do.split()
        if name == "exec":  # the user's command: its words split as a shell would
            try:
                args = shlex.split(do)[1:]
            except ValueError as exc:
                raise self.error(f"{where}.do", f"exec: {exc}") from None
        try:
            action = ACTIONS.get(name).parse(args)
        except ValueError as exc:
            raise self.error(f"{where}.do", str(exc)) from None
        if not timed:
            return Step(do=do, action=action)
        triggers = [k for k in ("at", "after", "when") if k in entry]
        if len(triggers) != 1:
            raise self.error(where, "give exactly one of at, after, when")
        at = self.duration(entry["at"], f"{where}.at") if "at" in entry else None
        after = self.duration(entry["after"], f"{where}.after") if "after" in entry else None
        when = self.condition(entry["when"], f"{where}.when") if "when" in entry else None
        if "within" in entry and when is None:
            raise self.error(f"{where}.within", "goes with when")
        within = self.duration(entry["within"], f"{where}.within") if "within" in entry else None
        variant = self.table(entry.get("variant", {}), f"{where}.variant")
        return Step(
            do=do,
            action=action,
            at_s=at,
            after_s=after,
            when=when,
            within_s=within,
            variant=variant,
        )

    def condition(self, raw: Any, where: str) -> Condition:
        match = _CONDITION.match(raw) if isinstance(raw, str) else None
        if match is None:
            raise self.error(
                where,
                f"must read CONDITION OP NUMBER (OP one of {' '.join(OPERATORS)}), got {raw!r}",
            )
        name = match.group(1)
        if name not in CONDITIONS:
            raise self.error(
                where, f"unknown condition {name!r}; known: {', '.join(CONDITIONS.names())}"
            )
        return Condition(name, match.group(2), float(match.group(3)))

    def setup(self, raw: Any) -> tuple[Step, ...]:
        if not isinstance(raw, list):
            raise self.error("setup", "must be a list of actions")
        return tuple(self.step(entry, f"setup[{i}]", timed=False) for i, entry in enumerate(raw))

    def timeline(self, raw: Any) -> tuple[Step, ...]:
        if not isinstance(raw, list) or len(raw) > MAX_STEPS:
            raise self.error(
                "timeline", f"must be a list of at most {MAX_STEPS} steps ([[timeline]])"
            )
        steps = tuple(self.step(entry, f"timeline[{i}]", timed=True) for i, entry in enumerate(raw))
        last_at = 0.0
        for index, step in enumerate(steps):
            if step.at_s is not None:
                if step.at_s < last_at:
                    raise self.error(
                        f"timeline[{index}].at",
                        f"actions out of order: {step.at_s:g}s comes before an earlier "
                        f"step's {last_at:g}s",
                    )
                last_at = step.at_s
        return steps

    def within_limit(self, timeline: tuple[Step, ...], limit_s: float) -> None:
        """Refuses a step that cannot run before the run's limit: steps run in order, so one
        runs no sooner than its `at`, the previous step plus its `after`, or (`when`) the
        previous step."""
        earliest = 0.0
        for index, step in enumerate(timeline):
            if step.at_s is not None:
                earliest = max(earliest, step.at_s)
            elif step.after_s is not None:
                earliest += step.after_s
            if earliest >= limit_s:
                raise self.error(
                    f"timeline[{index}]",
                    f"runs {format_duration(earliest, short=True)} after the release at the "
                    f"earliest, past end.limit ({format_duration(limit_s, short=True)}): the run "
                    "would end before it",
                )

    def expect(self, raw: Any, experiment: Experiment) -> tuple[Expectation, ...]:
        if not isinstance(raw, list):
            raise self.error("expect", "must be a list of tables ([[expect]])")
        found = []
        for index, entry in enumerate(raw):
            where = f"expect[{index}]"
            table = self.table(entry, where)
            selector = self.selector(table.get("variant", {}), f"{where}.variant", experiment)
            tolerances = []
            for measure, rule in table.items():
                if measure == "variant":
                    continue
                if measure not in experiment.measures:
                    raise self.error(
                        f"{where}.{measure}",
                        "a tolerance on a field that this experiment does not measure; "
                        f"measured: {', '.join(experiment.measures)}",
                    )
                tolerances.append(self.tolerance(measure, rule, f"{where}.{measure}", experiment))
            if not tolerances:
                raise self.error(where, "names no tolerance")
            found.append(Expectation(selector, tuple(tolerances)))
        return tuple(found)

    def selector(self, raw: Any, where: str, experiment: Experiment) -> dict[str, Any]:
        """Which rows: swept settings and values each setting allows, or row labels and values
        some row has (a typo in a value is an error here, not a tolerance that silently selects
        nothing)."""
        table = self.table(raw, where)
        defaults = sections_of(
            DbSettings(), CacheSettings(), HerdSettings(), WireSettings(), StackSettings()
        )
        variant_keys = experiment.swept_keys
        for key, value in table.items():
            if key not in variant_keys:
                raise self.error(
                    f'{where}."{key}"',
                    f"not a swept setting; swept: {', '.join(sorted(variant_keys)) or 'none'}",
                )
            section, _, name = key.partition(".")
            if section == LABELS:
                given = {repr(row[key]) for row in experiment.combinations()}
                if repr(value) not in given:
                    raise self.error(
                        f'{where}."{key}"',
                        f"no row has {value!r}; rows have {', '.join(sorted(given))}",
                    )
                continue
            try:
                with_values(defaults[section], {name: value}, where=section)
            except ValueError as exc:
                raise self.error(f'{where}."{key}"', str(exc)) from None
        return table

    def tolerance(self, measure: str, raw: Any, where: str, experiment: Experiment) -> Tolerance:
        table = self.table(raw, where)
        self.only(table, (*TOLERANCE_OPS, "of"), where)
        ops = [op for op in TOLERANCE_OPS if op in table]
        if len(ops) != 1:
            raise self.error(where, f"give exactly one of {', '.join(TOLERANCE_OPS)}")
        op = ops[0]
        value = table[op]
        if op == "eq":
            if not isinstance(value, bool | int | float | str):
                raise self.error(
                    f"{where}.eq", f"must be a number, boolean or text, got {_type_name(value)}"
                )
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(f"{where}.{op}", f"must be a number, got {_type_name(value)}")
        of = None
        if op.endswith("_times"):
            if "of" not in table:
                raise self.error(where, f"{op} needs of = {{ ... }}, the variant to compare with")
            of = self.selector(table["of"], f"{where}.of", experiment)
        elif "of" in table:
            raise self.error(f"{where}.of", "goes with max_times or min_times")
        return Tolerance(measure, op, value, of)
