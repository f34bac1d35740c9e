"""`chaos herd --call` against a service that is not the lab's: types by reflection or from the
.proto file, requests from the template, replies checked only where an expectation says so; bad
input is one line, exit 2, and no request is sent."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
from slow_target import BROKEN, PROTO, bare, reflecting, stock_service

from chaos.cli.main import main
from examples.stock import stock_pb2, stock_pb2_grpc

__all__ = ["bare", "reflecting"]  # the fixtures

WORK = "labtest.v1.Slow/Work"


def chaos(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def herd(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    code, out, err = chaos(capsys, "herd", "--json", *args)
    assert code == 0, err
    doc: dict[str, Any] = json.loads(out)
    return doc


def test_by_reflection_every_reply_checked(
    reflecting: str, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = herd(
        capsys,
        *("--target", reflecting, "--call", WORK, "--users", "40", "--metadata", "team=lab"),
        *("--data", '{"key": "{{key}}", "seq": "{{seq}}"}', "--keys", "4"),
        *("--distribution", "round-robin", "--expect-field", "echo={{key}}:{{seq}}"),
    )
    assert (doc["call"], doc["ok"], doc["lost"]) == ("/" + WORK, 40, 0)
    assert (doc["values"], doc["wrong_values"]) == ("checked", 0)
    assert doc["codes"]["OK"]["count"] == 40
    assert 0 < doc["codes"]["OK"]["latency_s"]["p50"] <= doc["codes"]["OK"]["latency_s"]["max"]
    # An expectation the replies do not meet counts every one of them.
    wrong = herd(
        capsys,
        *("--target", reflecting, "--call", WORK, "--users", "10"),
        *("--data", '{"key": "{{user}}"}', "--expect-field", "key=x{{user}}"),
    )
    assert (wrong["ok"], wrong["wrong_values"]) == (10, 10)


def test_by_proto_file_a_server_stream_unchecked(
    bare: str, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = herd(
        capsys,
        *("--target", bare, "--call", "labtest.v1.Slow/Count", "--proto", str(PROTO)),
        *("--data", '{"key": "{{uuid}}", "n": 3}', "--rate", "200", "--duration", "100ms"),
    )
    assert (doc["ok"], doc["lost"], doc["values"]) == (20, 0, "unchecked")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--call", "labtest.v1.Slow/Nope"], "unknown method labtest.v1.Slow/Nope; "),
        (["--call", WORK, "--data", '{"nope": "{{key}}"}'], 'no field named "nope"'),
        (["--call", WORK, "--data", '{"key": "{{who}}"}'], "unknown placeholder {{who}}"),
        (["--call", WORK, "--expect-field", "nope=1"], "has no field 'nope'"),
        (["--call", "labtest.v1.Slow/Upload"], "Upload is client-streaming"),
        (["--call", WORK, "--proto", str(BROKEN)], "broken.proto does not compile: "),
        (["--data", "{}"], "--data needs --call"),
    ],
)
def test_bad_input_is_one_line_and_sends_nothing(
    reflecting: str, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    code, out, err = chaos(capsys, "herd", "--target", reflecting, *args)
    assert (code, out) == (2, "")
    assert err.startswith("chaos: error: ") and err.count("\n") == 1 and needle in err


def test_a_target_that_does_not_answer(bare: str, capsys: pytest.CaptureFixture[str]) -> None:
    # Reflection asked of a server without it, then a port where nothing listens.
    code, _, err = chaos(capsys, "herd", "--target", bare, "--call", WORK)
    assert code == 2 and "does not serve reflection; give the method's --proto" in err
    code, _, err = chaos(capsys, "herd", "--target", "127.0.0.1:1", "--call", WORK)
    assert code == 2 and err.count("\n") == 1 and "target 127.0.0.1:1 does not answer" in err


def test_through_the_cures_every_attempt_is_recorded(capsys: pytest.CaptureFixture[str]) -> None:
    """`--client cures`: the retries run in herdlab.client's interceptors on the herd's channels
    (here after the server's pushback: 2 slots and 4 waiting, the rest refused), and the herd's
    record still counts every attempt that reached the server."""
    with stock_service("--slots", "2", "--latency", "0.02", "--queue", "4") as target:
        doc = herd(
            capsys,
            *("--target", target, "--call", "shop.v1.Stock/Check", "--client", "cures"),
            *("--data", '{"sku": "{{key}}"}', "--expect-field", "sku={{key}}"),
            *("--users", "60", "--keys", "60", "--distribution", "round-robin"),
            *("--policy", "full", "--retry-attempts", "20", "--deadline", "30s"),
        )
        with grpc.insecure_channel(target) as channel:
            stats = stock_pb2_grpc.StockStub(channel).Stats(stock_pb2.StatsRequest(), timeout=10)
    assert (doc["ok"], doc["lost"], doc["wrong_values"]) == (60, 0, 0)
    assert doc["attempts"] == stats.arrivals["/shop.v1.Stock/Check"] > 60
    assert stats.refused > 0
