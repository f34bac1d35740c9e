"""Experiment files: what a malformed one is told (one line naming the file and the field, exit
2, no process started), how params, variants and the hypothesis read, and a user's experiment
whose tolerance cannot hold exiting 1 with the tolerance and the measured value."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from support import chaos_run

from chaos.cli.main import main
from chaos.cli.scenarios import option
from chaos.engine import provenance, spec
from chaos.engine.hypothesis import RowView, check, held
from chaos.engine.model import Experiment
from chaos.engine.runner import document, failures, kind_of, run_experiment
from chaos.engine.shipped import path_of, shipped, typed_params
from chaos.engine.trial import Trial
from chaos.lab.backends.base import BackendError
from chaos.report.render import section_for, table_for
from herdlab.auth import AdminError

BASE = """\
title = "a small experiment"
measures = ["lost", "db_queries"]
[params]
users = 2
[herd]
users = "${users}"
[end]
limit = "30s"
"""


def _write(tmp_path: Path, text: str, name: str = "exp.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


MALFORMED = [
    pytest.param('title = "x"\n[herd\nusers = 2\n', "not valid TOML", id="toml-syntax-with-line"),
    pytest.param(BASE + 'titel = "x"\n', "unknown key", id="unknown-top-key"),
    pytest.param(
        BASE.replace('title = "a small experiment"\n', ""), "title: missing", id="no-title"
    ),
    pytest.param(
        BASE + '[stack.db]\nlatncy = "1s"\n', "unknown setting 'latncy'", id="unknown-setting"
    ),
    pytest.param(
        BASE + '[stack.db]\nconcurrency = "many"\n',
        "stack.db.concurrency: concurrency must be an integer",
        id="wrong-type",
    ),
    pytest.param(
        BASE + "[stack.db]\nconcurrency = 0\n",
        "concurrency must be in 1..1000000, got 0",
        id="out-of-range",
    ),
    pytest.param(
        BASE.replace('users = "${users}"', 'users = "${users}"\ndeadline = "10"'),
        "invalid duration '10'",
        id="duration-without-unit",
    ),
    pytest.param(
        BASE + '[[timeline]]\nat = "1s"\ndo = "explode db"\n',
        "unknown action 'explode'",
        id="unknown-action",
    ),
    pytest.param(
        BASE + '[[timeline]]\nat = "1s"\ndo = "kill mongo"\n',
        "usage: kill db|cache",
        id="bad-action-args",
    ),
    pytest.param(
        BASE + '[[timeline]]\nat = "1s"\ndo = "kill redis"\n',
        "no row runs redis",
        id="service-not-in-the-stack",
    ),
    pytest.param(
        BASE + '[stack]\nreplicas = 2\n[[timeline]]\nat = "1s"\ndo = "kill cache-3"\n',
        "no row has a replica cache-3",
        id="replica-not-in-the-stack",
    ),
    pytest.param(
        BASE
        + '[[timeline]]\nat = "5s"\ndo = "kill db"\n[[timeline]]\nat = "2s"\ndo = "restore db"\n',
        "actions out of order",
        id="out-of-order",
    ),
    pytest.param(
        BASE + '[[timeline]]\nat = "1s"\nafter = "2s"\ndo = "kill db"\n',
        "give exactly one of at, after, when",
        id="two-triggers",
    ),
    pytest.param(
        BASE + '[[timeline]]\nwhen = "moon_phase >= 1"\ndo = "kill db"\n',
        "unknown condition 'moon_phase'",
        id="unknown-condition",
    ),
    pytest.param(
        BASE + '[[timeline]]\nwhen = "db_arrivals is big"\ndo = "kill db"\n',
        "must read CONDITION OP NUMBER",
        id="malformed-condition",
    ),
    pytest.param(
        BASE + '[[timeline]]\nat = "1s"\nwithin = "2s"\ndo = "kill db"\n',
        "within: goes with when",
        id="within-without-when",
    ),
    pytest.param(
        BASE.replace('"db_queries"]', '"nosuch"]'), "unknown measure 'nosuch'", id="unknown-measure"
    ),
    pytest.param(
        BASE + "[[expect]]\namplification = { max = 2 }\n",
        "a tolerance on a field that this experiment does not measure",
        id="tolerance-on-unmeasured-field",
    ),
    pytest.param(
        BASE + "[[expect]]\nlost = { around = 0 }\n",
        "unknown key; allowed: eq, min",
        id="unknown-op",
    ),
    pytest.param(
        BASE
        + '[variants]\n"cache.policy" = ["none", "full"]\n[[expect]]\nlost = { max_times = 2 }\n',
        "max_times needs of",
        id="ratio-without-reference",
    ),
    pytest.param(
        BASE + '[[expect]]\nvariant = { "cache.policy" = "full" }\nlost = { eq = 0 }\n',
        "not a swept setting",
        id="selector-on-unswept-setting",
    ),
    pytest.param(
        BASE + '[variants]\n"cache.policy" = ["full", "nosuch"]\n',
        "policy must be one of",
        id="bad-variant-value",
    ),
    pytest.param(
        BASE + '[variants]\n"database.latency" = ["1s"]\n',
        "must name a setting as db.KEY",
        id="bad-variant-key",
    ),
    pytest.param(
        BASE.replace('limit = "30s"', 'when = "herd_done"'),
        "end.limit: missing",
        id="unbounded-end",
    ),
    pytest.param(
        BASE.replace('"${users}"', '"${clients}"'), "names ${clients}", id="undefined-param"
    ),
    pytest.param(BASE + 'scenario = "nosuch"\n', "unknown key", id="top-key-after-a-table"),
    pytest.param(
        BASE + '[[timeline]]\nat = "1s"\ndo = "set db.concurrency 0"\n',
        "db.concurrency: concurrency must be in 1..1000000, got 0",
        id="set-out-of-range",
    ),
    pytest.param(
        BASE + '[[timeline]]\nat = "1s"\ndo = "set db.seed 3"\n',
        "usage: set SETTING VALUE",
        id="set-not-at-runtime",
    ),
    pytest.param(
        BASE + '[[timeline]]\nat = "1s"\ndo = "set db.codel_target 30s"\n',
        "codel target must not exceed codel interval",
        id="set-breaks-a-relation",
    ),
    pytest.param(
        BASE + '[variants]\n"cache.retry_cap" = ["50ms"]\n',
        "cap (0.05) must be >= base (0.1)",
        id="variant-breaks-a-relation",
    ),
    pytest.param(
        BASE + '[[timeline]]\nat = "1s"\ndo = "restore db"\n',
        "restore db needs an earlier step that kills or stops it",
        id="restore-without-kill",
    ),
    pytest.param(
        BASE + '[[timeline]]\nat = "1s"\ndo = "kill db"\n[[timeline]]\nat = "2s"\ndo = "kill db"\n',
        "db is already killed",
        id="kill-twice",
    ),
    pytest.param(
        BASE + '[[timeline]]\nat = "1s"\ndo = "expire ' + "k" * 300 + '"\n',
        "bytes",
        id="expire-a-key-too-long",
    ),
    pytest.param(
        BASE + '[variants]\n"cache.policy" = ["none", "full"]\n[[expect]]\n'
        'variant = { "cache.policy" = "ful" }\nlost = { eq = 0 }\n',
        "policy must be one of",
        id="selector-value-typo",
    ),
    pytest.param(
        'scenario = "nosuch"\n' + BASE, "unknown scenario kind 'nosuch'", id="unknown-kind"
    ),
]


@pytest.mark.parametrize(("text", "needle"), MALFORMED)
def test_a_malformed_file_exits_2_with_one_line_and_starts_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    text: str,
    needle: str,
) -> None:
    path = _write(tmp_path, text)
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    # Every stack a run starts lives in a temporary folder made first: none may appear.
    monkeypatch.setattr(tempfile, "tempdir", str(stacks))
    with pytest.raises(SystemExit) as exited:
        main(["run", str(path)])
    assert exited.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert str(path) in lines[0] and needle in lines[0], lines[0]
    assert "Traceback" not in captured.err
    assert list(stacks.iterdir()) == []


def test_a_step_the_run_would_end_before_is_refused(tmp_path: Path) -> None:
    """`at = "10m"` in a run limited to 30 s was accepted, and the run then failed (exit 3)
    without a reason; an `after` chain counts from the previous step."""
    late = BASE + '[[timeline]]\nat = "10m"\ndo = "kill db"\n'
    with pytest.raises(
        spec.ExperimentError, match=r"timeline\[0\]: runs 10m after .* end.limit \(30s\)"
    ):
        spec.load(_write(tmp_path, late))
    chained = BASE + (
        '[[timeline]]\nat = "20s"\ndo = "kill db"\n[[timeline]]\nafter = "15s"\ndo = "restore db"\n'
    )
    with pytest.raises(spec.ExperimentError, match=r"timeline\[1\]: runs 35s after"):
        spec.load(_write(tmp_path, chained))


def test_a_binary_file_is_named_in_its_error(tmp_path: Path) -> None:
    path = tmp_path / "binary.toml"
    path.write_bytes(b"\xff\xfe\x00title")
    with pytest.raises(spec.ExperimentError, match=r"binary\.toml: not a TOML text file"):
        spec.load(path)


def test_toml_errors_carry_the_parsers_line(tmp_path: Path) -> None:
    path = _write(tmp_path, 'title = "x"\n\n[herd\n')
    with pytest.raises(spec.ExperimentError, match=r"line 3"):
        spec.load(path)


def test_params_keep_their_type_and_fill_strings(tmp_path: Path) -> None:
    text = BASE + '[[timeline]]\nwhen = "db_arrivals >= ${users}"\ndo = "kill db"\n'
    experiment = spec.load(_write(tmp_path, text), {"users": 7})
    assert experiment.herd.users == 7
    condition = experiment.timeline[0].when
    assert condition is not None and condition.value == 7.0 and condition.op == ">="


def test_setting_an_unknown_param_is_refused(tmp_path: Path) -> None:
    with pytest.raises(spec.ExperimentError, match=r"params.nosuch: no such param"):
        spec.load(_write(tmp_path, BASE), {"nosuch": 1})


def test_variants_are_every_combination_in_file_order(tmp_path: Path) -> None:
    text = BASE + '[variants]\n"cache.policy" = ["none", "full"]\n"db.concurrency" = [5, 10]\n'
    experiment = spec.load(_write(tmp_path, text))
    assert experiment.combinations() == [
        {"cache.policy": "none", "db.concurrency": 5},
        {"cache.policy": "none", "db.concurrency": 10},
        {"cache.policy": "full", "db.concurrency": 5},
        {"cache.policy": "full", "db.concurrency": 10},
    ]
    db, cache, _ = experiment.settings_for({"cache.policy": "full", "db.concurrency": 10})
    assert (cache.policy, db.concurrency) == ("full", 10)


LABELLED = BASE.replace(
    'title = "a small experiment"\n',
    'title = "a small experiment"\nconfigurations = [\n'
    '  { "row.cure" = "none", "cache.policy" = "none" },\n'
    '  { "row.cure" = "jitter", "cache.policy" = "full" },\n]\n',
)


def test_row_labels_tell_rows_apart_and_steps_select_by_them(tmp_path: Path) -> None:
    step = '[[timeline]]\nat = "1s"\ndo = "latency db 50ms"\nvariant = { "row.cure" = "jitter" }\n'
    experiment = spec.load(_write(tmp_path, LABELLED + step))
    rows = experiment.combinations()
    assert rows == [
        {"row.cure": "none", "cache.policy": "none"},
        {"row.cure": "jitter", "cache.policy": "full"},
    ]
    assert [experiment.timeline[0].runs_in(row) for row in rows] == [False, True]
    assert experiment.settings_for(rows[1])[1].policy == "full"  # the label changed nothing


def test_steps_are_checked_row_by_row_with_the_steps_that_run_in_it(tmp_path: Path) -> None:
    both = LABELLED.replace('"row.cure"', '"row.trigger"').replace('"jitter"', '"stop"')
    both = both.replace('"none", "cache', '"kill", "cache')
    steps = "".join(
        f'[[timeline]]\n{when}\ndo = "{do}"\nvariant = {{ "row.trigger" = "{row}" }}\n'
        for when, do, row in (
            ('at = "1s"', "kill cache", "kill"),
            ('at = "1s"', "stop cache", "stop"),
            ('after = "1s"', "restore cache", "kill"),
            ('after = "1s"', "restore cache", "stop"),
        )
    )
    spec.load(_write(tmp_path, both + steps))  # each row: one fault, one restore
    unselected = steps.replace('variant = { "row.trigger" = "stop" }\n', "")
    with pytest.raises(spec.ExperimentError, match="already killed or stopped"):
        spec.load(_write(tmp_path, both + unselected))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param(
            LABELLED + '[[expect]]\nvariant = { "row.cure" = "jiter" }\nlost = { eq = 0 }\n',
            "expect[0].variant.\"row.cure\": no row has 'jiter'",
            id="a-value-no-row-has",
        ),
        pytest.param(
            LABELLED.replace('"row.cure" = "jitter"', '"row.Cure" = "jitter"'),
            "a row label is row.NAME",
            id="a-bad-label-name",
        ),
    ],
)
def test_a_row_label_typo_is_refused(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(spec.ExperimentError) as raised:
        spec.load(_write(tmp_path, text))
    assert problem in str(raised.value)


def _expect(tmp_path: Path, expect: str) -> Experiment:
    text = BASE + '[variants]\n"cache.policy" = ["exponential", "full"]\n' + expect
    return spec.load(_write(tmp_path, text))


ROWS = [
    RowView({"cache.policy": "exponential"}, {"lost": 0, "db_queries": 100}),
    RowView({"cache.policy": "full"}, {"lost": 0, "db_queries": 40}),
]


def test_a_ratio_to_another_variant_holds_or_deviates(tmp_path: Path) -> None:
    half = '[[expect]]\nvariant = { "cache.policy" = "full" }\n'
    holds = _expect(
        tmp_path,
        half + 'db_queries = { max_times = 0.5, of = { "cache.policy" = "exponential" } }\n',
    )
    checks = check(holds.expect, ROWS)
    assert [(c.measured, c.reference, c.held) for c in checks] == [(40, 100, True)]
    deviates = _expect(
        tmp_path,
        half + 'db_queries = { max_times = 0.3, of = { "cache.policy" = "exponential" } }\n',
    )
    assert not held(check(deviates.expect, ROWS))


def test_a_missing_reference_row_is_not_checked_never_held(tmp_path: Path) -> None:
    experiment = _expect(
        tmp_path,
        '[[expect]]\ndb_queries = { max_times = 1, of = { "cache.policy" = "exponential" } }\n',
    )
    checks = check(experiment.expect, ROWS[1:])
    assert [c.held for c in checks] == [None]
    assert held(checks)


def test_a_ratio_to_a_failed_row_is_not_checked_and_the_failed_row_deviates(
    tmp_path: Path,
) -> None:
    experiment = _expect(
        tmp_path,
        '[[expect]]\nvariant = { "cache.policy" = "full" }\n'
        'db_queries = { max_times = 0.5, of = { "cache.policy" = "exponential" } }\n'
        "[[expect]]\nlost = { eq = 0 }\n",
    )
    failed = RowView({"cache.policy": "exponential"}, dict.fromkeys(("lost", "db_queries")), True)
    checks = check(experiment.expect, [failed, ROWS[1]])
    assert [(c.variant["cache.policy"], c.tolerance, c.held) for c in checks] == [
        ("full", "db_queries <= 0.5 x (cache.policy=exponential)", None),
        ("exponential", "lost == 0", False),
        ("full", "lost == 0", True),
    ]


def test_bounds_fail_on_a_value_that_was_not_measured(tmp_path: Path) -> None:
    experiment = _expect(tmp_path, "[[expect]]\ndb_queries = { min = 1 }\n")
    rows = [RowView({"cache.policy": "full"}, {"lost": 0, "db_queries": None})]
    assert [c.held for c in check(experiment.expect, rows)] == [False]


def test_every_shipped_experiment_and_its_smoke_params_check() -> None:
    found = shipped()
    assert {"retry-storm", "stampede"} <= set(found)
    for path in found.values():
        experiment = spec.load(path)
        assert experiment.expect, f"{path}: a shipped experiment states its hypothesis"
        spec.load(path, experiment.smoke)


def test_run_list_shows_the_shipped_experiments(capsys: pytest.CaptureFixture[str]) -> None:
    main(["run", "--list"])
    shown = capsys.readouterr().out
    for name in shipped():
        assert name in shown


def test_a_shipped_experiment_runs_by_name_and_its_old_path_is_told_the_name(
    capsys: pytest.CaptureFixture[str],
) -> None:
    main(["run", "--check", "partition"])
    assert "ok: " in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        main(["run", "--check", "chaos/experiments/partition.toml"])
    assert exited.value.code == 2
    assert "`chaos run partition`" in " ".join(capsys.readouterr().err.split())


USER_EXPERIMENT = """\
title = "Coalescing makes one query of five"
measures = ["db_queries", "lost", "client_errors"]

[stack.db]
latency = "300ms"
spread = "0ms"
concurrency = 5
queue = 5

[stack.cache]
policy = "none"
coalescing = true

[herd]
users = 5
keys = 1
deadline = "20s"

[[timeline]]
at = "0s"
do = "set db.queue_discipline lifo"

[end]
limit = "60s"

[[expect]]
lost = { eq = 0 }

[[expect]]
db_queries = { eq = 2 }   # cannot hold: five coalesced misses cost one query
"""


def test_a_tolerance_that_cannot_hold_exits_1_naming_it_and_the_measure(tmp_path: Path) -> None:
    path = _write(tmp_path, USER_EXPERIMENT, "user.toml")
    out_json = tmp_path / "r.json"
    done = chaos_run(path, out_json, tmp_path / "state")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "db_queries == 2" in done.stderr and "measured 1" in done.stderr, done.stderr
    doc = json.loads(out_json.read_text())
    assert doc["hypothesis"]["held"] is False
    assert doc["rows"][0]["db_queries"] == 1 and doc["rows"][0]["lost"] == 0
    assert [(e["phase"], e["do"]) for e in doc["journal"]] == [
        ("timeline", "set db.queue_discipline lifo")
    ]
    provenance = doc["provenance"]
    for field in (
        "herdlab",
        "git_commit",
        "python",
        "grpcio",
        "os",
        "cpu_count",
        "load_average_start",
        "load_average_end",
        "started_at",
        "ended_at",
        "seeds",
        "command",
    ):
        assert field in provenance, field
    assert len(doc["experiment"]["sha256"]) == 64


def test_every_shipped_experiments_document_has_a_report_section() -> None:
    for path in shipped().values():
        experiment = spec.load(path)
        doc = document(experiment, kind_of(experiment), [], [], provenance.start("test"))
        assert section_for(doc).name != "", path


def _readme_example() -> tuple[str, list[str]]:
    """The README's user experiment and the `chaos run` line that runs it (with `--set`)."""
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    after = readme.split("A user's experiment, whole", 1)[1]
    text = after.split("```toml\n", 1)[1].split("```", 1)[0]
    line = next(x for x in readme.splitlines() if x.startswith("chaos run coalescing.toml"))
    return text, line.split("#", 1)[0].split()[2:]


def test_the_readme_example_runs_with_its_set(tmp_path: Path) -> None:
    text, args = _readme_example()
    _write(tmp_path, text, "coalescing.toml")
    env = {**os.environ, "HERDLAB_STATE_DIR": str(tmp_path / "state")}
    done = subprocess.run(
        [sys.executable, "-m", "chaos", "run", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["experiment"]["params"]["clients"] == 20
    assert [r["db_queries"] for r in doc["rows"]] == [20, 1]


def test_a_typed_param_is_held_to_its_bounds(tmp_path: Path) -> None:
    text, _ = _readme_example()
    path = _write(tmp_path, text)
    with pytest.raises(spec.ExperimentError, match=r"params\.clients: must be in"):
        spec.load(path, {"clients": 0})
    assert spec.load(path, {"clients": 20}).herd.users == 20


def test_a_boolean_param_is_a_boolean_option_of_chaos_scenario() -> None:
    tls = next(p for p in typed_params(path_of("reconnect-at-scale")) if p.name == "tls")
    made = option(tls)
    assert made.type.convert("false", made, None) is False
    assert made.type.convert("yes", made, None) is True


# A new user's first experiment, as they wrote it: every request failed in both rows, for two
# reasons only the source showed (`hot` ignores `keys`; a DB as slow as the attempt timeout).
FIRST_OUTAGE = """\
title = "My first outage"
measures = ["client_errors", "db_queries", "lost"]
[params]
users = 1000
[stack.db]
latency = "2s"
[herd]
users = "${users}"
keys = 100
[[timeline]]
at = "800ms"
do = "kill db"
[[timeline]]
at = "6s"
do = "restore db"
[end]
limit = "120s"
[variants]
"cache.policy" = ["exponential", "full"]
"""


def test_check_warns_of_settings_that_cannot_show_what_was_meant(tmp_path: Path) -> None:
    path = _write(tmp_path, FIRST_OUTAGE)
    result = subprocess.run(
        [sys.executable, "-m", "chaos", "run", "--check", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    warnings = result.stderr.strip().splitlines()
    assert len(warnings) == 2, result.stderr
    assert "herd.keys = 100 with distribution 'hot'" in warnings[0]
    assert "db.latency = 2s is at or above cache.attempt_timeout = 2s" in warnings[1]


def test_a_failed_run_says_why_by_code_in_the_table_the_json_and_the_terminal(
    tmp_path: Path,
) -> None:
    path = _write(tmp_path, FIRST_OUTAGE)
    env = {**os.environ, "HERDLAB_STATE_DIR": str(tmp_path / "state")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "chaos",
            "run",
            "--set",
            "users=20",
            str(path),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert "errors by code: " in result.stdout, result.stdout
    doc = json.loads(next((tmp_path / "out").glob("*.json")).read_text())
    for row in doc["rows"]:
        causes = row["error_causes"]
        assert sum(c["count"] for c in causes.values()) == row["client_errors"] > 0
        assert set(causes) <= {"UNAVAILABLE", "DEADLINE_EXCEEDED"}, causes
        assert all(c["first"] for c in causes.values()), "the first message of each code"
    report = (tmp_path / "out" / "report.md").read_text()
    assert "errors by code (first message)" in report


FAILING_ROW = """\
title = "a row that fails at run time before one that runs"
measures = ["lost"]
configurations = [{ "stack.own_core" = true }, { "stack.own_core" = false }]
[herd]
users = 2
[end]
limit = "30s"
[[expect]]
lost = { eq = 0 }
"""


def test_a_row_that_fails_at_run_time_keeps_the_others_and_exits_3(tmp_path: Path) -> None:
    # `own_core` needs two cores, found only once the trial runs: on one core its row fails.
    path = _write(tmp_path, FAILING_ROW)
    one_core = {min(os.sched_getaffinity(0))}
    out_json, out_dir = tmp_path / "r.json", tmp_path / "report"
    command = ["run", str(path), "--json", str(out_json), "--out", str(out_dir)]
    done = subprocess.run(
        [sys.executable, "-m", "chaos", *command],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HERDLAB_STATE_DIR": str(tmp_path / "state")},
        preexec_fn=lambda: os.sched_setaffinity(0, one_core),
        check=False,
    )
    assert done.returncode == 3, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("chaos: error: 1 of 2 rows failed; stack.own_core=True: "), last
    assert "own_core needs two cores" in last
    assert "failed: " in done.stdout and "own_core needs two cores" in done.stdout
    doc = json.loads(out_json.read_text())
    failed, ran = doc["rows"]
    assert failed["variant"] == {"stack.own_core": True}
    assert "own_core needs two cores" in failed["error"] and failed["lost"] is None
    assert ran["variant"] == {"stack.own_core": False}
    assert ran["lost"] == 0 and "error" not in ran
    # The failed row measured nothing, so its tolerance deviates; the other row's holds.
    assert [c["held"] for c in doc["hypothesis"]["checks"]] == [False, True]
    assert doc["hypothesis"]["held"] is False
    report = (out_dir / "report.md").read_text()
    assert "| failed |" in report
    assert "stack.own_core=True: " in report and "own_core needs two cores" in report


@pytest.mark.parametrize(
    "failure",
    [
        BackendError("cache did not become SERVING within 20s (last: DEADLINE_EXCEEDED)"),
        AdminError("a [target] run's proxy: [/bold] gone"),
    ],
    ids=["stack", "admin-plane"],
)
def test_a_failed_row_is_kept_with_its_message_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    # What the stack or a service raises as the trial runs, raised where the trial runs.
    async def fails(trial: Trial) -> Any:
        raise failure

    monkeypatch.setattr(Trial, "run", fails)
    said: list[str] = []
    doc = asyncio.run(run_experiment(spec.load(_write(tmp_path, BASE)), said.append))
    assert doc["rows"][0]["error"] == str(failure) and doc["rows"][0]["lost"] is None
    assert failures([doc]) == [f"the run: {failure}"]
    console = Console(record=True, width=400)
    console.print(*said)
    console.print(table_for(doc))
    assert console.export_text().count(str(failure)) == 2  # the line said, and the table's cell


def test_a_bug_in_a_trial_is_not_kept_as_a_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def bug(trial: Trial) -> Any:
        raise NotImplementedError("a step without its run")

    monkeypatch.setattr(Trial, "run", bug)
    with pytest.raises(NotImplementedError):
        asyncio.run(run_experiment(spec.load(_write(tmp_path, BASE)), print))
