"""Runs an experiment: one trial per variant, side by side, then the hypothesis and one result
document (with provenance) that `chaos report` reads. Every document has its rows under `rows`
(a kind's older key, e.g. `policies`, holds the same list; a flat kind's one row also stands at
the top level). A row with failed requests also carries `error_causes` (per gRPC code: how
many, and the first one's message), measured or not.

A trial that fails at run time (a step, the stack, a herd process, the OS) does not take the
rows around it down: its row keeps the variant, every measure None (so every tolerance on it
deviates) and `error`, the message; the next variant runs. The commands write the document and
report as usual, then exit 3 naming the failed rows (`failures`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.markup import escape

from chaos.engine import provenance, spec
from chaos.engine.herd import ProgressFactory
from chaos.engine.hypothesis import Check, RowView, check, held
from chaos.engine.kinds import ERROR, PLAIN, Kind, ScenarioConfig, variant_title
from chaos.engine.model import Experiment
from chaos.engine.observations import JournalEntry
from chaos.engine.registry import KINDS, MEASURES
from chaos.engine.shipped import path_of
from chaos.engine.target_trial import TargetTrial
from chaos.engine.timeline import seconds_since
from chaos.engine.trial import Trial
from chaos.lab.backends.base import BackendError
from herdlab.auth import AdminError

Doc = dict[str, Any]
ERROR_CAUSES = "error_causes"
# What a trial raises when it fails at run time: TrialError and what a step or a herd process
# raised (RuntimeError), the stack (BackendError: a service that did not start or come back), a
# service's admin plane (AdminError), the OS (OSError). Anything else is a bug, as are the
# RuntimeErrors that are (`BUGS`), and an interrupt ends the run: none is kept as a row.
RUN_FAILURES = (RuntimeError, BackendError, AdminError, OSError)
BUGS = (NotImplementedError, RecursionError)


class RowsFailed(RuntimeError):
    """Rows of a run failed at run time; their documents are written."""


def failures(docs: Sequence[Doc]) -> list[str]:
    """`variant: error` for every row of `docs` whose trial failed at run time."""
    return [
        f"{variant_title(row.get('variant', {}), empty='the run')}: {row[ERROR]}"
        for doc in docs
        for row in doc.get("rows", [])
        if row.get(ERROR)
    ]


def raise_on_failures(docs: Sequence[Doc]) -> None:
    """RowsFailed (exit 3) naming the failed rows of `docs`, if any; their documents written."""
    failed = failures(docs)
    if failed:
        rows = sum(len(doc.get("rows", [])) for doc in docs)
        raise RowsFailed(f"{len(failed)} of {rows} rows failed; {'; '.join(failed)}")


def causes_text(causes: Mapping[str, Mapping[str, Any]]) -> str:
    """`DEADLINE_EXCEEDED 1,000 (first: Deadline Exceeded); UNAVAILABLE 3 (...)`."""
    return "; ".join(
        f"{code} {c['count']:,}" + (f" (first: {c['first']})" if c["first"] else "")
        for code, c in causes.items()
    )


@dataclass(frozen=True)
class TrialResult:
    """One variant's measured values and what was done when, typed until written."""

    name: str
    variant: Mapping[str, Any]
    values: Mapping[str, Any]
    journal: tuple[JournalEntry, ...]
    t0_ns: int  # 0: the trial failed before its release
    error: str | None = None  # why the trial failed at run time

    def journal_json(self) -> list[dict[str, Any]]:
        return [
            {
                "trial": self.name,
                "variant": dict(self.variant),
                "t_s": seconds_since(e.t_ns, self.t0_ns)
                if e.phase == "timeline" and self.t0_ns
                else None,
                "time_ns": e.t_ns,
                "phase": e.phase,
                "do": e.do,
                **e.details,
            }
            for e in self.journal
        ]


def kind_of(experiment: Experiment) -> Kind:
    kind: Kind = KINDS.get(experiment.kind) if experiment.kind else PLAIN
    return kind


def _trial_name(kind: Kind, variant: Mapping[str, Any], index: int) -> str:
    label = "-".join(str(v) for v in variant.values()) or "run"
    return f"{kind.name}:{index}:{label}"


async def run_experiment(
    experiment: Experiment,
    emit: Callable[[str], None],
    progress: ProgressFactory | None = None,
    command: str | None = None,
) -> Doc:
    kind = kind_of(experiment)
    started = provenance.start(command)
    queried = {q.name for q in experiment.queries}
    registered = [m for m in experiment.measures if m not in queried]
    needs = tuple(sorted({n for m in registered for n in MEASURES.get(m).needs}))
    run_as = Trial if experiment.target is None else TargetTrial
    results = []
    for index, variant in enumerate(experiment.combinations()):
        emit(kind.announce(experiment, variant))
        name = _trial_name(kind, variant, index)
        bar = progress(kind.announce(experiment, variant)) if progress else None
        trial = run_as(experiment, variant, name=name, emit=emit, on_progress=bar, observers=needs)
        try:
            observations = await trial.run()
        except RUN_FAILURES as exc:
            if isinstance(exc, BUGS):
                raise
            error = str(exc) or type(exc).__name__
            emit(f"  failed: {escape(error)}")
            if bar is not None:
                bar(0, 0)  # ended: its clock stops
            values: dict[str, Any] = dict.fromkeys(experiment.measures)
            journal = tuple(trial.journal)
            results.append(TrialResult(name, variant, values, journal, trial.t0_ns, error))
            continue
        values = {
            m: observations.queried.get(m)
            if m in queried
            else MEASURES.get(m).compute(observations)
            for m in experiment.measures
        }
        # Why requests failed goes with every row that had failures, measured or not.
        causes = MEASURES.get(ERROR_CAUSES).compute(observations)
        if causes:
            values = {**values, ERROR_CAUSES: causes}
        result = TrialResult(name, variant, values, tuple(observations.journal), observations.t0_ns)
        for line in kind.describe(kind.row(values, experiment.measures)):
            emit(line)
        if causes:
            emit(f"  errors by code: {causes_text(causes)}")
        results.append(result)
    views = [RowView(r.variant, r.values, failed=r.error is not None) for r in results]
    checks = check(experiment.expect, views)
    for c in checks:
        emit(f"  hypothesis {c.line()}")
    return document(experiment, kind, results, checks, started)


async def run_shipped(
    name: str,
    params: Mapping[str, Any],
    emit: Callable[[str], None],
    progress: ProgressFactory | None = None,
    command: str | None = None,
) -> Doc:
    """Runs the shipped experiment `name` with `params` (how `chaos scenario NAME` runs)."""
    return await run_experiment(spec.load(path_of(name), params), emit, progress, command)


async def run_scenario(
    name: str,
    config: ScenarioConfig,
    emit: Callable[[str], None],
    progress: ProgressFactory | None = None,
    command: str | None = None,
) -> Doc:
    """Runs the shipped experiment `name` with `config`'s params; ValueError naming every
    problem of `config` before anything starts. A row whose trial failed is in the document
    with its `error` (`raise_on_failures` raises for it)."""
    problems = config.problems()
    if problems:
        raise ValueError("; ".join(problems))
    return await run_shipped(name, config.params(), emit, progress, command or config.command())


def document(
    experiment: Experiment,
    kind: Kind,
    results: list[TrialResult],
    checks: list[Check],
    started: dict[str, Any],
) -> Doc:
    seeds = sorted(
        {
            s
            for r in results
            for s in (
                experiment.settings_for(r.variant)[0].seed,
                experiment.settings_for(r.variant)[1].seed,
                experiment.settings_for(r.variant)[2].seed,
            )
            if s is not None
        }
    )
    rows = []
    for r in results:
        row = kind.row(r.values, experiment.measures, r.error)
        if ERROR_CAUSES in r.values:
            row = {**row, ERROR_CAUSES: r.values[ERROR_CAUSES]}
        rows.append({**row, "variant": dict(r.variant)})
    return {
        **kind.header(experiment),
        "command": started["command"],
        "experiment": {
            "title": experiment.title,
            "description": experiment.description,
            "file": experiment.source,
            "sha256": experiment.sha256,
            "kind": experiment.kind,
            "params": dict(experiment.params),
            "variants": [dict(r.variant) for r in results],
            "measures": list(experiment.measures),
        },
        **(
            {k: v for k, v in rows[0].items() if k != "variant"}
            if kind.flat and len(rows) == 1
            else {}
        ),
        "rows": rows,
        **({kind.rows_key: rows} if kind.rows_key != "rows" else {}),
        "hypothesis": {"held": held(checks), "checks": [c.to_json() for c in checks]},
        "journal": [entry for r in results for entry in r.journal_json()],
        "provenance": provenance.finish(started, seeds=seeds),
    }
