"""Configuration parsing: durations always carry a unit, probabilities are in [0, 1], and bad
values become one clear line (and exit code 2 on the command line)."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from cache_service.__main__ import main as cache_main
from db_service.__main__ import main as db_main
from herdlab.config import (
    DURATION,
    PROBABILITY,
    format_duration,
    format_number,
    format_value,
    parse_duration,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("10s", 10.0),
        ("1m", 60.0),
        ("1.5m", 90.0),
        ("2h", 7200.0),
        (".25s", 0.25),
        ("0s", 0.0),
        (" 10 s ", 10.0),
        ("1m30s", 90.0),
        ("1h2m3s", 3723.0),
        ("2s500ms", 2.5),
        ("1m 30s", 90.0),
    ],
)
def test_durations_with_a_unit_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    [
        *("10x", "-1s", "", "5", "ms", "1e3s", "1.s", "10 sec", "inf s", "nan ms", "1,5s"),
        *("1m30", "1m-30s", "s1m"),
    ],
)
def test_bad_durations_are_rejected_with_a_clear_message(text: str) -> None:
    with pytest.raises(ValueError, match=r"invalid duration .*: use a non-negative number with a"):
        parse_duration(text)


def test_absurdly_large_durations_are_rejected() -> None:
    with pytest.raises(ValueError, match="too large"):
        parse_duration("9" * 400 + "h")


def test_duration_param_type() -> None:
    assert DURATION.convert("250ms", None, None) == pytest.approx(0.25)
    assert DURATION.convert(3, None, None) == 3.0
    with pytest.raises(click.BadParameter, match="invalid duration '10x'"):
        DURATION.convert("10x", None, None)


@pytest.mark.parametrize(
    ("seconds", "argv", "short"),
    [
        (120.0, "120000ms", "2m"),
        (90.0, "90000ms", "90s"),
        (30.0, "30000ms", "30s"),
        (1.5, "1500ms", "1.5s"),
        (0.0, "0ms", "0s"),
        (0.5, "500ms", "500ms"),
        (0.0005, "0.5ms", "0.5ms"),
    ],
)
def test_durations_are_written_in_two_forms(seconds: float, argv: str, short: str) -> None:
    """A command line's form (always milliseconds, never an exponent) and a guard spec's (whole
    minutes in m, from a second up in s, else ms); both read back the same."""
    assert format_duration(seconds) == argv
    assert format_duration(seconds, short=True) == short
    assert parse_duration(argv) == parse_duration(short) == pytest.approx(seconds)


def test_a_command_lines_duration_is_never_in_exponent_notation() -> None:
    assert format_duration(1e-9) == "0.000001ms"
    assert parse_duration(format_duration(1e-9)) == pytest.approx(1e-9)


@pytest.mark.parametrize(
    ("value", "text"), [(20.0, "20"), (0.1, "0.1"), (-3.0, "-3"), (1e20, "1e+20")]
)
def test_numbers_are_written_in_the_shortest_text_that_reads_back(value: float, text: str) -> None:
    assert format_number(value) == text
    assert float(text) == value


@pytest.mark.parametrize(
    ("value", "text"), [(50.0, "50"), (0.25, "0.25"), (3, "3"), ("fifo", "fifo"), (True, "True")]
)
def test_values_print_their_numbers_in_the_shortest_text(value: object, text: str) -> None:
    assert format_value(value) == text


@pytest.mark.parametrize(("text", "p"), [("0", 0.0), ("0.25", 0.25), ("1", 1.0)])
def test_probability_accepts_0_to_1(text: str, p: float) -> None:
    assert PROBABILITY.convert(text, None, None) == p


@pytest.mark.parametrize(
    ("text", "message"),
    [("1.5", "is not between 0 and 1"), ("-0.1", "is not between 0 and 1"), ("x", "not a number")],
)
def test_probability_rejects_the_rest(text: str, message: str) -> None:
    with pytest.raises(click.BadParameter, match=message):
        PROBABILITY.convert(text, None, None)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--latency", "10x"], "invalid duration '10x': use a non-negative number with a unit"),
        (["--latency", "5"], "invalid duration '5'"),
        (["--error-rate", "2"], "Invalid value for '--error-rate'"),
        (["--concurrency", "0"], "concurrency must be in 1..1000000, got 0"),
        (["--queue", "-1"], "queue must be in 0..1000000, got -1"),
        (["--record-size", "0"], "record size must be in 1..50000000, got 0"),
    ],
)
def test_db_service_rejects_bad_flags(args: list[str], message: str) -> None:
    result = CliRunner().invoke(db_main, args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_db_service_reads_its_environment() -> None:
    result = CliRunner().invoke(db_main, [], env={"HERDLAB_DB_LATENCY": "soon"})
    assert result.exit_code == 2
    assert "invalid duration 'soon'" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--policy", "jittery"], "Invalid value for '--policy'"),
        (["--ttl", "0s"], "ttl must be > 0, got 0"),
        (["--retry-base", "0ms"], "retry policy base must be > 0, got 0"),
        (["--retry-base", "1s", "--retry-cap", "100ms"], "cap (0.1) must be >= base (1.0)"),
        (["--retry-attempts", "0"], "Invalid value for '--retry-attempts'"),
        (["--attempt-timeout", "2"], "invalid duration '2'"),
    ],
)
def test_cache_service_rejects_bad_flags(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cache_main, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
