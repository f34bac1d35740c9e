"""The wire faults are actions like the others: one toxic's words read alike in a timeline and on
the command line (`--latency 200ms`, `-t latency -a latency=200ms`, `latency=200ms`), each
toxic's options generated from its declared attributes, bad input refused naming the problem."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from chaos.cli.main import cli
from chaos.engine import spec
from chaos.engine.actions.wire import WORDS, Wire
from chaos.engine.shipped import path_of
from chaos.lab.backends.base import BackendError
from chaos.wire.toxics import TOXICS


@pytest.mark.parametrize(
    "words",
    [
        ["db", "latency=200ms", "jitter=50ms"],
        ["db", "--latency", "200ms", "--jitter", "50ms"],
        ["db", "-t", "latency", "-a", "latency=200ms", "-a", "jitter=50ms"],
        ["db", "--toxic", "latency", "--attribute", "jitter=50ms", "--latency", "0.2s"],
    ],
)
def test_one_toxic_is_written_alike_every_way(words: list[str]) -> None:
    action = Wire.parse(words)
    assert isinstance(action, Wire)
    assert action.described() | {"jitter_ms": 50.0, "latency_ms": 200.0} == action.described()
    assert action.fault.name == "db-latency" and action.fault.stream == "both"


def test_a_switch_with_a_time_and_a_direction() -> None:
    action = Wire.parse(["cache", "blackhole", "--stream", "upstream", "--for", "5s"])
    assert isinstance(action, Wire)
    assert action.described() == {"fault": "blackhole", "stream": "upstream", "for_s": 5.0}
    reset = Wire.parse(["cache", "reset"])
    assert isinstance(reset, Wire) and reset.fault.once  # no time: once, on what is open


def test_every_toxic_has_its_option_and_every_attribute_a_word() -> None:
    for kind in TOXICS.names():
        assert WORDS[kind].kind == kind
    assert {w.field for w in WORDS.values() if w.kind == "latency"} == {"latency_ms", "jitter_ms"}


@pytest.mark.parametrize(
    ("words", "needle"),
    [
        (["db"], "give exactly one of"),
        (["db", "latency=1ms", "--blackhole"], "give exactly one of"),
        (["db", "--jitter", "1s", "--blackhole"], "--jitter goes with --latency"),
        (["db", "latency=1ms", "after=1s"], "latency takes no -a after"),
        (["db", "limit=1.5"], "limit: "),
        (["db", "latency=100000s"], "latency latency_ms must be in"),
        (["redis", "blackhole"], "'redis' is not one of"),
    ],
)
def test_bad_words_name_the_problem(words: list[str], needle: str) -> None:
    with pytest.raises(ValueError, match="usage: wire") as caught:
        Wire.parse(words)
    assert needle in str(caught.value)


def test_the_generic_form_is_refused_on_the_command_line_with_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["--state-dir", str(tmp_path), "wire", "cache", "-t", "latency", "-a", "after=1s"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 2 and "latency takes no -a after" in result.output


def test_a_dry_run_needs_a_stack_with_the_proxy(tmp_path: Path) -> None:
    args = ["--state-dir", str(tmp_path), "wire", "cache", "-t", "latency", "--dry-run"]
    result = CliRunner().invoke(cli, args)  # `chaos` makes a BackendError exit 2, one line
    assert isinstance(result.exception, BackendError)
    assert "no lab stack is up" in str(result.exception)


def test_a_timeline_puts_any_toxic_on_a_proxied_link_and_only_there() -> None:
    text = path_of("partition").read_text()
    step = '[[timeline]]\nafter = "1s"\ndo = "wire cache latency=200ms jitter=50ms --for 2s"\n\n'
    added = text.replace("[end]\n", step + "[end]\n")
    experiment = spec.parse(added, "p.toml")
    (wire,) = [s.action for s in experiment.timeline if isinstance(s.action, Wire)]
    assert wire.described()["latency_ms"] == 200.0
    with pytest.raises(spec.ExperimentError, match='needs \\[stack\\] proxy = "db"'):
        spec.parse(added.replace("wire cache", "wire db"), "p.toml")


def test_reset_is_a_timeline_step_that_undoes_every_fault_before_it() -> None:
    text = path_of("partition").read_text()
    reset = '[[timeline]]\nafter = "1s"\ndo = "reset"\n\n'
    before_heal = text.replace(
        '[[timeline]]\nafter = "${outage}"', reset + '[[timeline]]\nafter = "${outage}"'
    )
    assert before_heal != text
    with pytest.raises(spec.ExperimentError, match="heal cache needs an earlier step"):
        spec.parse(before_heal, "p.toml")
    experiment = spec.parse(text.replace("[end]\n", reset + "[end]\n"), "p.toml")
    assert experiment.timeline[-1].action.acts_on() == "stack"


@pytest.mark.parametrize(
    ("words", "attributes"),
    [
        (
            ["cache", "--admit", "200", "--burst", "50", "--max-wait", "2s"],
            {"rate": 200.0, "burst": 50.0, "max_wait_ms": 2000.0, "answer_within_ms": 0.0}
            | {"floor": 1.0, "pending": 0.0},
        ),
        (
            ["cache", "-t", "admit", "-a", "admit=200", "-a", "max_wait=0s"],
            {"rate": 200.0, "burst": 10.0, "max_wait_ms": 0.0, "answer_within_ms": 0.0}
            | {"floor": 1.0, "pending": 0.0},
        ),
        (
            ["cache", "stage=8", "every=2s", "keeps_up=50ms"],
            {"groups": 8.0, "every_ms": 2000.0, "keeps_up_ms": 50.0, "hold_ms": 10_000.0},
        ),
        (
            ["cache", "--admit", "200", "--answer-within", "250ms", "--floor", "20"],
            {"rate": 200.0, "burst": 10.0, "max_wait_ms": 10_000.0, "answer_within_ms": 250.0}
            | {"floor": 20.0, "pending": 0.0},
        ),
        (
            ["db", "--age", "30s", "--spread", "0", "--grace", "5s"],
            {"age_ms": 30_000.0, "spread": 0.0, "grace_ms": 5000.0},
        ),
    ],
)
def test_the_admission_cures_and_max_age_are_written_like_any_toxic(
    words: list[str], attributes: dict[str, float]
) -> None:
    action = Wire.parse(words)
    assert isinstance(action, Wire) and not action.fault.once
    assert dict(action.fault.attributes) == attributes


def test_a_timeline_puts_the_cures_in_force_at_a_restore() -> None:
    text = path_of("partition").read_text()
    steps = "".join(
        f'[[timeline]]\nafter = "1s"\ndo = "wire cache {words}"\n\n'
        for words in ("admit=200 max_wait=5s --for 20s", "stage=4 every=2s", "age=30s spread=0")
    )
    experiment = spec.parse(text.replace("[end]\n", steps + "[end]\n"), "p.toml")
    kinds = [s.action.fault.kind for s in experiment.timeline if isinstance(s.action, Wire)]
    assert kinds == ["admit", "stage", "age"]
