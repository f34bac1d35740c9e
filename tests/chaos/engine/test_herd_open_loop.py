"""The herd's open loop: arrivals on a fixed schedule (rate x duration of them, exactly), each a
request of its own that ends with a value or a typed error, and a bound on requests in flight
that is hit, counted and reported when the cache hangs. Runs against a real stack; it waits on
the herd's own hooks (its start, its progress count), never on the clock.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from chaos.engine.herd import (
    HerdConfig,
    HerdHooks,
    HerdResult,
    KeyChooser,
    OpenLoop,
    parse_rate,
    run_herd,
)
from chaos.lab.backends.local import LocalStack, StackInfo
from herdlab.retry import RetryPolicy

DB_ARGS = ["--latency=1ms", "--spread=0ms"]
CHAOS = [sys.executable, "-m", "chaos"]


def config(info: StackInfo, plan: OpenLoop, deadline_s: float = 10.0) -> HerdConfig:
    return HerdConfig(
        target=info.services["cache"].grpc,
        distribution="unique",
        key_prefix=f"ol-{os.urandom(4).hex()}-",
        channels=2,
        open_loop=plan,
        policy=RetryPolicy(name="none", max_total_s=deadline_s, attempt_timeout_s=deadline_s),
    )


def assert_every_request_ended_typed(result: HerdResult) -> None:
    summary = result.summary()
    assert summary["lost"] == 0 and summary["wrong_values"] == 0
    for o in result.outcomes:
        assert (o.source is None) != (o.code is None), o
        assert o.done_ns >= o.sent_ns


# -- the schedule, without a stack ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "duration", "arrivals"),
    [(200, 0.5, 100), (200, 0.7, 140), (0.7, 10, 7), (3, 0.5, 1), (100_000, 3600, 360_000_000)],
)
def test_arrivals_are_rate_times_duration(rate: float, duration: float, arrivals: int) -> None:
    """Bug: 0.7 x 10 is 6.999... in binary; rounding down without care loses an arrival."""
    assert OpenLoop(rate, duration).arrivals == arrivals


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        (OpenLoop(0, 1), "rate must be in (0, 100000]/s"),
        (OpenLoop(100_001, 1), "rate must be in (0, 100000]/s"),
        (OpenLoop(10, 3601), "duration must be in (0, 1h]"),
        (OpenLoop(10, 0), "duration must be in (0, 1h]"),
        (OpenLoop(0.5, 1), "must give 1..10000000 arrivals, got 0"),
        (OpenLoop(100_000, 3600), "must give 1..10000000 arrivals, got 360000000"),
        (OpenLoop(10, 1, max_in_flight=0), "max in flight must be in 1..1000000"),
    ],
)
def test_open_loop_bounds(plan: OpenLoop, message: str) -> None:
    assert any(message in p for p in plan.problems()), plan.problems()


@pytest.mark.parametrize(("text", "rate"), [("200/s", 200.0), ("200", 200.0), (" 2.5/s", 2.5)])
def test_rates_parse(text: str, rate: float) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "/s", "fast", "200/m", "0", "-5/s", "nan", "inf", "1e6"])
def test_bad_rates_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="rate"):
        parse_rate(text)


def test_unique_keys_are_never_repeated_whatever_the_key_count() -> None:
    choose = KeyChooser(HerdConfig(target="-", keys=3, distribution="unique"), random.Random(1))
    assert [choose() for _ in range(5)] == [f"key-{i}" for i in range(5)]


# -- over a real stack ---------------------------------------------------------------------------


def test_sends_exactly_rate_times_duration_each_ending_typed(stack_info: StackInfo) -> None:
    plan = OpenLoop(rate_per_s=200, duration_s=0.5)
    cfg = config(stack_info, plan)
    seen: list[tuple[int, int]] = []
    result = asyncio.run(run_herd(cfg, HerdHooks(on_progress=lambda d, t: seen.append((d, t)))))
    summary = result.summary()
    assert (summary["arrivals"], summary["sent"], summary["skipped"]) == (100, 100, 0)
    assert summary["bound_hit"] is False and summary["first_bound_hit_s"] is None
    assert sorted(o.user for o in result.outcomes) == list(range(100))
    # Each arrival drew its own fresh key: all 100 are misses that went to the DB.
    assert sorted(o.key for o in result.outcomes) == sorted(
        f"{cfg.key_prefix}{i}" for i in range(100)
    )
    assert_every_request_ended_typed(result)
    assert summary["ok"] == 100 and summary["sources"] == {"MISS": 100}
    assert seen[-1] == (100, 100)
    assert result.users == 0 and summary["max_lag_s"] >= 0


def test_bound_is_hit_and_reported_while_the_cache_hangs(
    lab_stack: tuple[LocalStack, StackInfo],
) -> None:
    """The cache is paused (SIGSTOP) as the schedule starts, so the first `max_in_flight`
    requests hang and every later arrival finds the bound reached. The deadline (60 s) only
    bounds a broken run: the cache is resumed as soon as the herd has counted every arrival past
    the bound as skipped, and the held requests then get their values."""
    stack, info = lab_stack
    plan = OpenLoop(rate_per_s=100, duration_s=0.2, max_in_flight=5)
    held = plan.arrivals - plan.max_in_flight
    seen: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:
        seen.append((done, total))
        if done == held:
            stack.resume("cache")

    def pause() -> None:
        stack.pause("cache")

    hooks = HerdHooks(on_progress=progress, on_release=pause)
    try:
        result = asyncio.run(run_herd(config(info, plan, deadline_s=60), hooks))
    finally:
        stack.resume("cache")
    summary = result.summary()
    assert summary["bound_hit"] is True
    assert (summary["arrivals"], summary["sent"], summary["skipped"]) == (20, 5, 15)
    assert summary["peak_in_flight"] == 5 and summary["first_bound_hit_s"] is not None
    assert result.open_loop is not None and len(result.open_loop.skipped_ns) == 15
    assert result.open_loop.skipped_ns[0] == min(result.open_loop.skipped_ns)
    # The bound was first hit at arrival 5: the requests sent are arrivals 0..4.
    assert sorted(o.user for o in result.outcomes) == [0, 1, 2, 3, 4]
    assert_every_request_ended_typed(result)
    assert summary["ok"] == 5
    assert [d for d, _ in seen] == list(range(1, 21)) and {t for _, t in seen} == {20}


def test_cli_open_loop_json(stack_info: StackInfo, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            *CHAOS,
            "herd",
            "--target",
            stack_info.services["cache"].grpc,
            "--rate",
            "100/s",
            "--duration",
            "300ms",
            "--max-in-flight",
            "50",
            "--distribution",
            "unique",
            "--key-prefix",
            f"olcli-{os.urandom(4).hex()}-",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "HERDLAB_STATE_DIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["rate_per_s"] == 100 and doc["duration_s"] == 0.3
    assert (doc["arrivals"], doc["sent"], doc["skipped"], doc["lost"]) == (30, 30, 0, 0)
    assert doc["max_in_flight"] == 50 and doc["bound_hit"] is False
    assert {"max_lag_s", "late", "peak_in_flight", "first_bound_hit_s"} <= set(doc)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--rate", "200/s"], "--rate needs --duration"),
        (["--duration", "1s"], "--duration needs --rate"),
        (["--max-in-flight", "5"], "--max-in-flight needs --rate"),
        (["--rate", "fast", "--duration", "1s"], "invalid rate 'fast'"),
        (["--rate", "200/s", "--duration", "2h"], "duration must be in (0, 1h]"),
        (["--rate", "200/s", "--duration", "1s", "--users", "5"], "--users is for the burst"),
        (["--rate", "200/s", "--duration", "1s", "--max-in-flight", "0"], "--max-in-flight"),
    ],
)
def test_bad_open_loop_flags_exit_2_with_one_line(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    result = subprocess.run(
        [*CHAOS, "herd", "--target", "127.0.0.1:1", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "HERDLAB_STATE_DIR": str(tmp_path)},
    )
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("chaos: error: ") and needle in lines[0]
