"""The metastable scenario without a stack: `configurations` in experiment files (and what a
malformed one is told), the open loop in `[herd]`, the goodput measures' arithmetic on hand-made
observations, the shipped file with its smoke and CLI params, and the command's bad input.

A real run belongs in `chaos run --smoke` (CI), not here."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from cache_service.settings import CacheSettings
from chaos.cli.main import main
from chaos.engine import spec
from chaos.engine.herd import HerdResult, OpenLoop, Outcome
from chaos.engine.herd_settings import HerdSettings
from chaos.engine.measures.attempts import attempts
from chaos.engine.measures.drops import drops_by_stage
from chaos.engine.measures.goodput import goodput_per_s
from chaos.engine.measures.goodput_recovery import back_to_90pct_s, collapsed_s
from chaos.engine.measures.trigger import trigger_s
from chaos.engine.model import Experiment
from chaos.engine.observations import DbCounters, JournalEntry, Observations, Outage
from chaos.engine.shipped import path_of
from chaos.scenarios.metastable import MetastableConfig, parse_configuration
from db_service.settings import DbSettings

S = 1_000_000_000
MS = 1_000_000

BASE = """\
title = "configurations"
measures = ["lost"]
{top}
[herd]
users = 2
[end]
limit = "30s"
"""

TWO = """configurations = [
  { "cache.guards" = "none", "db.queue_discipline" = "fifo" },
  { "cache.guards" = "recommended", "db.queue_discipline" = "codel" },
]"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.toml"
    path.write_text(text)
    return path


def test_configurations_are_rows_named_whole_in_file_order(tmp_path: Path) -> None:
    experiment = spec.load(_write(tmp_path, BASE.format(top=TWO)))
    assert experiment.combinations() == [
        {"cache.guards": "none", "db.queue_discipline": "fifo"},
        {"cache.guards": "recommended", "db.queue_discipline": "codel"},
    ]
    db, cache, _ = experiment.settings_for(experiment.combinations()[1])
    assert (cache.guards, db.queue_discipline) == ("recommended", "codel")


def test_nested_tables_read_as_dotted_settings(tmp_path: Path) -> None:
    top = 'configurations = [ { db = { queue_discipline = "lifo" } } ]'
    experiment = spec.load(_write(tmp_path, BASE.format(top=top)))
    assert experiment.combinations() == [{"db.queue_discipline": "lifo"}]


def test_configurations_combine_with_variants_by_product(tmp_path: Path) -> None:
    text = BASE.format(top=TWO) + '[variants]\n"herd.users" = [1, 3]\n'
    experiment = spec.load(_write(tmp_path, text))
    assert [(v["db.queue_discipline"], v["herd.users"]) for v in experiment.combinations()] == [
        ("fifo", 1),
        ("fifo", 3),
        ("codel", 1),
        ("codel", 3),
    ]


def test_expectations_select_rows_by_a_configuration_setting(tmp_path: Path) -> None:
    text = BASE.format(top=TWO) + (
        '[[expect]]\nvariant = { "db.queue_discipline" = "codel" }\nlost = { eq = 0 }\n'
    )
    (expectation,) = spec.load(_write(tmp_path, text)).expect
    assert expectation.variant == {"db.queue_discipline": "codel"}


MALFORMED = [
    pytest.param('configurations = "fifo"', "must be a list of tables", id="not-a-list"),
    pytest.param("configurations = [1]", "configurations[0]: must be a table", id="not-a-table"),
    pytest.param("configurations = [{}]", "configurations[0]: names no setting", id="empty"),
    pytest.param(
        'configurations = [ { "queue_discipline" = "fifo" } ]',
        "must name a setting as db.KEY",
        id="no-section",
    ),
    pytest.param(
        'configurations = [ { "db.queue_discipline" = "random" } ]',
        "queue discipline must be one of fifo, codel, lifo",
        id="bad-value",
    ),
    pytest.param(
        'configurations = [ { "db.nosuch" = 1 } ]', "unknown setting 'nosuch'", id="bad-key"
    ),
    pytest.param(
        'configurations = [ { "db.queue_discipline" = "fifo" }, { "cache.guards" = "none" } ]',
        "configurations[1]: names cache.guards; every configuration names the same settings",
        id="different-keys",
    ),
    pytest.param(
        'configurations = [ { "db.queue_discipline" = "fifo" }, '
        '{ "db.queue_discipline" = "fifo" } ]',
        "configurations[1]: the same as configurations[0]",
        id="twice",
    ),
    pytest.param(
        'configurations = [ { "db.concurrency" = 1 } ]\n[variants]\n"db.concurrency" = [2]',
        "also swept in [variants]",
        id="also-a-variant",
    ),
    pytest.param(
        "configurations = ["
        + ", ".join(f'{{ "db.concurrency" = {n} }}' for n in range(1, 66))
        + "]",
        "65 trials in all; at most 64",
        id="too-many",
    ),
    pytest.param(
        TWO + '\n[[expect]]\nvariant = { "db.latency" = "1s" }\nlost = { eq = 0 }',
        "not a swept setting; swept: cache.guards, db.queue_discipline",
        id="selector-on-an-unswept-setting",
    ),
]


@pytest.mark.parametrize(("top", "needle"), MALFORMED)
def test_a_malformed_configuration_exits_2_with_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    top: str,
    needle: str,
) -> None:
    # Tables after the body's [end] would swallow later keys: put them at the very end.
    head, _, tail = top.partition("\n[")
    text = BASE.format(top=head) + (f"[{tail}\n" if tail else "")
    path = _write(tmp_path, text)
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(stacks))
    with pytest.raises(SystemExit) as exited:
        main(["run", str(path)])
    assert exited.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and needle in lines[0], lines
    assert list(stacks.iterdir()) == []


# -- the open loop in [herd] ------------------------------------------------------------------


def test_a_rate_makes_the_herd_an_open_loop() -> None:
    herd = HerdSettings(rate_per_s=160.0, duration_s=2.0, max_in_flight=50, channels=8, users=1)
    config = herd.config("127.0.0.1:1")
    assert config.open_loop == OpenLoop(160.0, 2.0, 50)
    assert config.channels == 8  # users are unused by an open loop
    assert HerdSettings().config("127.0.0.1:1").open_loop is None


def test_an_open_loop_that_cannot_run_is_refused(tmp_path: Path) -> None:
    text = BASE.format(top="").replace("users = 2", 'rate = 0.001\nduration = "1s"')
    with pytest.raises(spec.ExperimentError, match=r"herd: rate x duration must give"):
        spec.load(_write(tmp_path, text))
    text = BASE.format(top="").replace("users = 2", "rate = 10\nrounds = true")
    with pytest.raises(spec.ExperimentError, match=r"rate \(an open loop\) and rounds"):
        spec.load(_write(tmp_path, text))


# -- the measures -----------------------------------------------------------------------------


def _observations(
    served_at_s: list[float],
    *,
    trigger: tuple[float, float] | None = (1.0, 2.0),
    duration_s: float = 10.0,
    outages: list[Outage] | None = None,
    errors_at_s: tuple[float, ...] = (),
) -> Observations:
    outcomes = [
        Outcome(i, f"k{i}", "MISS", None, 1, 0, round(t * S)) for i, t in enumerate(served_at_s)
    ]
    outcomes += [
        Outcome(0, "e", None, "DEADLINE_EXCEEDED", 2, 0, round(t * S)) for t in errors_at_s
    ]
    result = HerdResult(
        users=0,
        outcomes=outcomes,
        release_ns=0,
        release_spread_s=0.0,
        lost=Counter(),
        wrong_values=0,
        seconds=duration_s,
        attempt_times_ns=[0, 1, 2],
    )
    journal = []
    if trigger is not None:
        journal = [
            JournalEntry(round(trigger[0] * S), "latency db 1s", "timeline"),
            JournalEntry(round(trigger[1] * S), "latency db 50ms", "timeline"),
        ]
    return Observations(
        variant={},
        db=DbSettings(),
        cache=CacheSettings(),
        herd=HerdSettings(rate_per_s=100.0, duration_s=duration_s),
        herd_result=result,
        t0_ns=0,
        end_ns=round((duration_s + 0.5) * S),
        db_arrivals=[1, 2],
        cache_attempts=[1, 2, 3, 4],
        db_counters=DbCounters(rejected=3, dropped_by_stage={"work": 5, "deadline": 2}),
        db_capacity_per_s=200.0,
        outages=outages or [],
        journal=journal,
        setup={},
        cache_peak_rss_bytes=0,
    )


def _steady(rate_per_s: float, start_s: float, end_s: float) -> list[float]:
    """Answers at `rate_per_s`, evenly, in [start_s, end_s)."""
    count = round((end_s - start_s) * rate_per_s)
    return [start_s + (i + 0.5) / rate_per_s for i in range(count)]


def test_goodput_counts_values_per_100ms_bin_as_a_rate() -> None:
    obs = _observations([0.05, 0.07, 0.15, 0.3], errors_at_s=(0.06,))
    goodput = goodput_per_s(obs)
    assert len(goodput) == 106  # the bins up to the trial's end, 10.5 s
    assert goodput[:4] == [20.0, 10.0, 0.0, 10.0]
    assert sum(goodput) == pytest.approx(40.0)


def test_goodput_that_never_comes_back_collapses_to_the_runs_end() -> None:
    obs = _observations(_steady(160, 0, 1))  # nothing after the trigger
    assert collapsed_s(obs) == pytest.approx(8.0)  # from the trigger's end (2 s) to 10 s
    assert back_to_90pct_s(obs) is None


def test_goodput_back_at_once_is_zero() -> None:
    obs = _observations(_steady(100, 0, 1) + _steady(100, 2, 10))
    assert collapsed_s(obs) == 0.0  # 100/s is half of 200/s
    assert back_to_90pct_s(obs) == 0.0  # 90% of the rate asked, 100/s


def test_windows_slide_in_100ms_steps_from_the_trigger_s_end() -> None:
    # Nothing from 2 s to 5.3 s, then 150/s: the window [4.9 s, 5.9 s) holds 90 answers (90%
    # of the 100/s asked), [5.0 s, 6.0 s) 105 (over half of 200/s).
    obs = _observations(_steady(150, 5.3, 10))
    assert back_to_90pct_s(obs) == pytest.approx(2.9)
    assert collapsed_s(obs) == pytest.approx(3.0)


def test_a_trigger_ending_between_bins_starts_at_the_next_bin() -> None:
    obs = _observations(_steady(100, 2.1, 10), trigger=(1.0, 2.03))
    assert collapsed_s(obs) == 0.0 and back_to_90pct_s(obs) == 0.0


def test_an_outage_ends_when_the_service_listens_again() -> None:
    outage = Outage("db", down_ns=1 * S, restart_ns=3 * S, up_ns=round(3.5 * S))
    obs = _observations(_steady(100, 3.5, 10), trigger=(1.0, 1.0), outages=[outage])
    assert trigger_s(obs) == [1.0, 3.5]
    assert back_to_90pct_s(obs) == 0.0


def test_without_a_trigger_there_is_nothing_to_recover_from() -> None:
    obs = _observations(_steady(100, 0, 10), trigger=None)
    assert trigger_s(obs) == []
    assert collapsed_s(obs) is None and back_to_90pct_s(obs) is None


def test_attempts_and_drops_at_each_hop() -> None:
    obs = _observations([])
    assert attempts(obs) == {"herd": 3, "cache_to_db": 4, "db_arrivals": 2}
    assert drops_by_stage(obs) == {"deadline": 2, "work": 5, "rejected": 3}


# -- the shipped file and the command ---------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "duration_s", "trigger"),
    [
        ({}, 70.0, ("latency db 1s", "latency db 50ms")),
        (MetastableConfig().params(), 70.0, ("latency db 1000ms", "latency db 50ms")),
        (
            MetastableConfig(trigger="outage", trigger_s=2.0, after_s=30.0).params(),
            37.0,
            ("kill db", "restore db"),
        ),
    ],
)
def test_the_shipped_file_loads_with_a_config(
    params: dict[str, Any], duration_s: float, trigger: tuple[str, str]
) -> None:
    experiment = spec.load(path_of("metastable"), params)
    assert experiment.kind == "metastable"
    assert experiment.herd.rate_per_s == 160.0 and experiment.herd.distribution == "unique"
    assert len(experiment.combinations()) == 5
    assert experiment.db.capacity_per_s == pytest.approx(200.0)
    assert experiment.herd.duration_s == pytest.approx(duration_s)
    assert tuple(step.do for step in experiment.timeline) == trigger


def _bounds(experiment: Experiment, measure: str) -> list[Any]:
    return [t.value for e in experiment.expect for t in e.tolerances if t.measure == measure]


def test_the_smoke_run_is_smaller_and_sees_its_collapse_and_the_cures_after_the_trigger() -> None:
    plain = spec.load(path_of("metastable"))
    smoke = spec.load(path_of("metastable"), plain.smoke)
    assert len(smoke.combinations()) == 4
    before, trigger = smoke.timeline[0].at_s, smoke.timeline[1].after_s
    assert before is not None and trigger is not None
    after = smoke.herd.duration_s - before - trigger
    assert _bounds(plain, "collapsed_s") == [30]
    (collapse,) = _bounds(smoke, "collapsed_s")
    # FIFO's collapse outlasts the trigger several times over and fits in the run with room for
    # a burst of answers; the slowest cure's bound, and its 1 s window, fit too.
    assert 4 * trigger <= collapse <= after - 2
    assert max(_bounds(smoke, "back_to_90pct_s")) + 1 < after
    assert smoke.herd.duration_s < plain.herd.duration_s
    # Every asserted row runs in the smoke run.
    for expectation in smoke.expect:
        assert not expectation.variant or expectation.variant in smoke.combinations()


def test_a_configuration_is_guards_slash_queue() -> None:
    assert parse_configuration("limit:n=20,queue=0+breaker/fifo") == (
        "limit:n=20,queue=0+breaker",
        "fifo",
    )
    for bad in ("fifo", "none/random", "nosuch/fifo", "/fifo"):
        with pytest.raises(ValueError):
            parse_configuration(bad)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--configuration", "none/random"], "queue must be one of fifo, codel, lifo"),
        (["--configuration", "none/fifo", "--configuration", "none/fifo"], "named once"),
        (["--rate", "0"], "--rate"),
        (["--trigger", "flood"], "--trigger"),
        (["--for", "2m"], "trigger duration must be in [100ms, 60s]"),
        (["--after", "1s"], "time after the trigger must be in [5s, 10m]"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    needle: str,
) -> None:
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(stacks))
    with pytest.raises(SystemExit) as exited:
        main(["scenario", "metastable", *args])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert needle in " ".join(err.split()), err
    assert "Traceback" not in err
    assert list(stacks.iterdir()) == []


def test_a_burst_right_after_the_trigger_does_not_end_a_collapse_that_resumes() -> None:
    # 150 answers in [2.0 s, 2.5 s), then nothing: only the windows from 2.0 s and 2.1 s hold
    # half of 200/s (150 and 120 answers); the run stays collapsed for the other 7.8 s.
    obs = _observations(_steady(300, 2.0, 2.5))
    assert collapsed_s(obs) == pytest.approx(7.8)
