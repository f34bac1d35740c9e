"""`chaos watch`: the figures from two scrapes (fixed exposition texts, no clock), the view's size,
and the command against a real local stack (`--once --json`; a service killed under the live
view; Ctrl-C)."""

from __future__ import annotations

import fcntl
import json
import math
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from rich.console import Console

from chaos.cli.watch import SHARE_SOURCES, counter_delta, figures, histogram_quantile, render
from herdlab.scrape import Scrape, parse

CHAOS = [sys.executable, "-m", "chaos"]
LATENCY_BOUNDS = (0.001, 0.01, 0.1, 1.0)


def db_text(arrivals: float, queue: float = 0, capacity: float = 200) -> str:
    return f"""# TYPE herdlab_db_arrivals_total counter
herdlab_db_arrivals_total {arrivals}
# TYPE herdlab_db_capacity_per_second gauge
herdlab_db_capacity_per_second {capacity}
# TYPE herdlab_db_queue_depth gauge
herdlab_db_queue_depth {queue}
"""


def cache_text(
    sources: dict[str, float],
    attempts: dict[str, float],
    buckets: tuple[float, ...],
    waiters: float = 0,
    in_flight: float = 0,
    guards: str = "",
) -> str:
    """A cache exposition; `buckets` are the cumulative counts of LATENCY_BOUNDS then +Inf,
    all put under source="miss" (the view sums every source)."""
    lines = ["# TYPE herdlab_cache_requests_total counter"]
    lines += [
        f'herdlab_cache_requests_total{{source="{s}",result="ok"}} {n}' for s, n in sources.items()
    ]
    lines.append("# TYPE herdlab_cache_db_attempts_total counter")
    lines += [
        f'herdlab_cache_db_attempts_total{{policy="full",outcome="{o}"}} {n}'
        for o, n in attempts.items()
    ]
    lines.append("# TYPE herdlab_cache_request_latency_seconds histogram")
    for bound, count in zip((*LATENCY_BOUNDS, math.inf), buckets, strict=True):
        le = "+Inf" if math.isinf(bound) else repr(bound)
        lines.append(
            f'herdlab_cache_request_latency_seconds_bucket{{source="miss",le="{le}"}} {count}'
        )
    lines += [
        f'herdlab_cache_request_latency_seconds_count{{source="miss"}} {buckets[-1]}',
        'herdlab_cache_request_latency_seconds_sum{source="miss"} 1.0',
        "# TYPE herdlab_cache_coalesced_waiters gauge",
        f"herdlab_cache_coalesced_waiters {waiters}",
        "# TYPE herdlab_cache_in_flight_keys gauge",
        f"herdlab_cache_in_flight_keys {in_flight}",
    ]
    return "\n".join(lines) + "\n" + guards


GUARDS_BEFORE = """# TYPE herdlab_guard_state gauge
herdlab_guard_state{side="cache",guard="breaker",key="state"} 0
# TYPE herdlab_guard_rejected_total counter
herdlab_guard_rejected_total{side="cache",guard="breaker"} 10
"""
GUARDS_AFTER = """# TYPE herdlab_guard_state gauge
herdlab_guard_state{side="cache",guard="breaker",key="state"} 2
# TYPE herdlab_guard_rejected_total counter
herdlab_guard_rejected_total{side="cache",guard="breaker"} 30
"""


def scrapes(**texts: str) -> dict[str, Scrape]:
    return {name: parse(name, f"http://127.0.0.1/{name}", text) for name, text in texts.items()}


def _text(which: str) -> str:
    """A cache's exposition before and after the interval of the tests."""
    if which == "before":
        return cache_text(
            {"hit": 10, "miss": 5},
            {"ok": 5, "unavailable": 0},
            (0, 0, 5, 10, 15),
            guards=GUARDS_BEFORE,
        )
    return cache_text(
        {"hit": 40, "miss": 25, "coalesced": 10},
        {"ok": 25, "unavailable": 10},
        (10, 40, 65, 70, 75),
        waiters=4,
        in_flight=2,
        guards=GUARDS_AFTER,
    )


# Over 2 s: 60 Gets (30 hit, 20 miss, 10 coalesced), 40 DB arrivals, attempts ok 20 and
# unavailable 10; the 60 new latencies: 10 under 1 ms, 30 in (1, 10] ms, 20 in (10, 100] ms.
BEFORE = scrapes(db=db_text(arrivals=100), cache=_text("before"))
AFTER = scrapes(db=db_text(arrivals=140, queue=7), cache=_text("after"))


def conn_text(open_: float, accepted: float, handshakes: float) -> str:
    """A server's connection figures, as `herdlab.grpcutil.ServerConnections` exports them."""
    return f"""# TYPE herdlab_grpc_server_connections_open gauge
herdlab_grpc_server_connections_open {open_}
# TYPE herdlab_grpc_server_connections_accepted counter
herdlab_grpc_server_connections_accepted_total {accepted}
# TYPE herdlab_grpc_server_tls_handshakes counter
herdlab_grpc_server_tls_handshakes_total {handshakes}
"""


def test_connections_open_and_accepted_and_handshakes_per_second() -> None:
    """Over 2 s the DB (plaintext) accepted 4 connections, each cache (TLS) 40, 30 of them
    handshakes; a cache restarted in between counts from 0 (its counters were reset)."""
    before = scrapes(
        db=db_text(100) + conn_text(1, 10, 0),
        cache=_text("before") + conn_text(100, 500, 400),
        **{"cache-2": _text("before") + conn_text(100, 500, 400)},
    )
    after = scrapes(
        db=db_text(140) + conn_text(3, 14, 0),
        cache=_text("after") + conn_text(120, 540, 430),
        **{"cache-2": _text("after") + conn_text(40, 40, 30)},
    )
    doc = figures(before, after, 2.0)
    assert doc["connections"] == {
        "db": {"open": 3, "accepted_per_s": 2.0, "handshakes_per_s": 0.0},
        "cache": {"open": 160, "accepted_per_s": 40.0, "handshakes_per_s": 30.0},
    }
    console = Console(width=80, record=True, color_system=None)
    console.print(render(doc, "herdlab watch  local  every 1s  12:00:00  (Ctrl-C stops)"))
    lines = [" ".join(line.split()) for line in console.export_text().splitlines()]
    assert "DB conns open 3 accepted 2.0/s TLS handshakes 0.0/s" in lines, lines
    assert "cache conns open 160 accepted 40.0/s TLS handshakes 30.0/s" in lines, lines
    down = {**after, "db": Scrape("db", "http://127.0.0.1/db", error="refused")}
    assert figures(before, down, 2.0)["connections"]["db"] == dict.fromkeys(
        ("open", "accepted_per_s", "handshakes_per_s")
    )


def test_figures_from_two_scrapes() -> None:
    doc = figures(BEFORE, AFTER, 2.0)
    assert doc["interval_s"] == 2.0
    assert doc["db_arrivals_per_s"] == 20.0
    assert doc["db_capacity_per_s"] == 200.0
    assert doc["db_load_ratio"] == 0.1
    assert doc["db_queue_depth"] == 7
    assert doc["cache_db_attempts_per_s"] == {"ok": 10.0, "unavailable": 5.0}
    assert doc["cache_requests_per_s"] == 30.0
    assert doc["shares"] == {"hit": 0.5, "miss": 20 / 60, "coalesced": 10 / 60, "stale": 0.0}
    assert doc["coalesced_waiters"] == 4
    assert doc["keys_in_flight"] == 2
    # Rank 30 of 60: the (1, 10] ms bucket holds ranks 10..40 -> 1 + 9 * 20/30 ms.
    assert doc["latency_p50_s"] == pytest.approx(0.001 + 0.009 * 20 / 30)
    # Rank 59.4: the (10, 100] ms bucket holds ranks 40..60 -> 10 + 90 * 19.4/20 ms.
    assert doc["latency_p99_s"] == pytest.approx(0.01 + 0.09 * 19.4 / 20)
    assert doc["guards"] == [
        {
            "service": "cache",
            "side": "cache",
            "guard": "breaker",
            "state": {"state": 2.0},
            "rejected_per_s": 10.0,
        }
    ]
    assert doc["services"]["db"] == {
        "role": "db",
        "up": True,
        "metrics": "http://127.0.0.1/db",
        "error": None,
    }
    json.dumps(doc)  # the --json document is plain JSON


def test_stale_share_is_shown_once_a_cache_exports_it() -> None:
    after = scrapes(
        db=db_text(arrivals=140),
        cache=cache_text({"hit": 10, "miss": 5, "stale": 15}, {"ok": 5}, (0, 0, 5, 10, 15)),
    )
    assert figures(BEFORE, after, 1.0)["shares"]["stale"] == 1.0


def test_cache_replicas_are_summed_and_their_guards_listed_each() -> None:
    before = {**BEFORE, **scrapes(**{"cache-2": _text("before")})}
    after = {**AFTER, **scrapes(**{"cache-2": _text("after")})}
    one = figures(BEFORE, AFTER, 2.0)
    two = figures(before, after, 2.0)
    assert two["cache_requests_per_s"] == 2 * one["cache_requests_per_s"]
    assert two["cache_db_attempts_per_s"] == {"ok": 20.0, "unavailable": 10.0}
    assert two["coalesced_waiters"] == 8 and two["keys_in_flight"] == 4
    assert two["shares"] == one["shares"]
    assert two["latency_p50_s"] == pytest.approx(one["latency_p50_s"])
    assert [g["service"] for g in two["guards"]] == ["cache", "cache-2"]


def test_a_service_down_loses_its_figures_and_only_those() -> None:
    down = {**AFTER, "cache": Scrape("cache", "http://127.0.0.1/cache", error="refused")}
    doc = figures(BEFORE, down, 2.0)
    assert doc["services"]["cache"]["up"] is False
    assert doc["services"]["cache"]["error"] == "refused"
    for name in ("cache_db_attempts_per_s", "cache_requests_per_s", "coalesced_waiters"):
        assert doc[name] is None, name
    assert doc["shares"] == dict.fromkeys(SHARE_SOURCES)
    assert doc["latency_p50_s"] is None and doc["guards"] == []
    assert doc["db_arrivals_per_s"] == 20.0


def test_a_restarted_service_counts_from_zero() -> None:
    """Bug: a restart resets counters; a negative delta would show negative rates."""
    assert counter_delta(100.0, 5.0) == 5.0
    assert counter_delta(5.0, 100.0) == 95.0
    doc = figures(BEFORE, scrapes(db=db_text(arrivals=6)), 2.0)
    assert doc["db_arrivals_per_s"] == 3.0


def test_histogram_quantile_as_prometheus() -> None:
    buckets = {0.1: 10.0, 0.5: 30.0, math.inf: 40.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.3)
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.05, buckets) == pytest.approx(0.02)  # lowest bucket from 0
    assert histogram_quantile(0.99, buckets) == 0.5  # in +Inf: the highest finite bound
    assert histogram_quantile(0.5, {0.1: 0.0, math.inf: 0.0}) is None
    assert histogram_quantile(0.5, {}) is None


def test_the_view_fits_80_by_24() -> None:
    console = Console(width=80, record=True, color_system=None)
    doc = figures(BEFORE, AFTER, 2.0)
    console.print(render(doc, "herdlab watch  local  every 1s  12:00:00  (Ctrl-C stops)"))
    lines = console.export_text().rstrip("\n").splitlines()
    assert len(lines) <= 24, lines
    assert max(len(line) for line in lines) <= 80
    text = "\n".join(lines)
    for needle in ("20.0/s", "200.0/s", "unavailable 5.0/s", "hit 50%", "stale 0%", "waiters 4"):
        assert needle in text, needle
    assert "breaker: state 2  rejected 10.0/s" in text
    assert "cache conns" in text and "TLS handshakes" in text


def test_a_busy_cache_to_db_line_and_a_guard_set_fit_80_columns_unbroken() -> None:
    """Several gRPC codes at thousands a second and a guard set of four: each figure continues on
    the next line whole, never cut inside a code or a number."""
    doc = figures(BEFORE, AFTER, 2.0)
    attempts = {
        "ok": 1234.5,
        "unavailable": 987.6,
        "deadline_exceeded": 456.7,
        "resource_exhausted": 321.0,
        "cancelled": 12.3,
    }
    doc["cache_db_attempts_per_s"] = attempts
    guards = {
        "budget": {"tokens": 12.5, "ratio": 0.1},
        "throttle": {"accepts": 1234, "requests": 2345, "reject_probability": 0.25},
        "breaker": {"state": 2, "failures": 17},
        "limit": {"limit": 20, "in_flight": 20, "min_rtt_ms": 5.25, "queue": 3},
    }
    doc["guards"] = [
        {"service": "cache-2", "side": "cache", "guard": g, "state": s, "rejected_per_s": 1234.5}
        for g, s in guards.items()
    ]
    console = Console(width=80, record=True, color_system=None)
    console.print(render(doc, "herdlab watch  local  every 1s  12:00:00  (Ctrl-C stops)"))
    lines = console.export_text().rstrip("\n").splitlines()
    assert len(lines) <= 24, lines
    assert all(len(line) <= 80 for line in lines), lines
    first = next(n for n, line in enumerate(lines) if line.lstrip().startswith("cache->DB"))
    shown = " ".join(lines[first : first + 2])
    for code, rate in attempts.items():
        assert f"{code} {rate:,.1f}/s" in shown, (code, lines)
    assert "reject_probability 0.25" in "\n".join(lines)
    assert sum(line.count("rejected 1,234.5/s") for line in lines) == 4


# -- against a real local stack ---------------------------------------------------------------


def chaos(state_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CHAOS, *args],
        text=True,
        env={**os.environ, "HERDLAB_STATE_DIR": str(state_dir), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def run(state_dir: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = chaos(state_dir, *args, env=env)
    stdout, stderr = proc.communicate(timeout=60)
    return proc.returncode, stdout, stderr


def _stack(state_dir: Path) -> Iterator[Path]:
    code, _, stderr = run(state_dir, "up", "--db-arg=--latency=5ms", "--db-arg=--spread=0ms")
    assert code == 0, stderr
    try:
        yield state_dir
    finally:
        run(state_dir, "down")


@pytest.fixture(scope="module")
def shared_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A stack the tests only read (and herd): one start for all of them."""
    yield from _stack(tmp_path_factory.mktemp("watch"))


@pytest.fixture()
def stack_dir(tmp_path: Path) -> Iterator[Path]:
    """A stack of the test's own, for a test that breaks it."""
    yield from _stack(tmp_path)


def _lines(stream: IO[str], until: Any, limit: int = 100) -> dict[str, Any]:
    """Reads JSON lines until `until(doc)` holds (at most `limit` lines: a bound, not a clock)."""
    for _ in range(limit):
        line = stream.readline()
        assert line, "watch ended early"
        doc: dict[str, Any] = json.loads(line)
        if until(doc):
            return doc
    raise AssertionError(f"not seen in {limit} lines")


def test_watch_once_json_has_every_figure(shared_stack: Path) -> None:
    herd = chaos(
        shared_stack,
        *("herd", "--rate", "100/s", "--duration", "60s", "--distribution", "unique", "--json"),
    )
    try:
        # The herd is under way once the DB has seen arrivals: live figures, not zeros.
        live = chaos(shared_stack, "watch", "--json", "--interval", "0.2s", "--count", "100")
        assert live.stdout is not None
        _lines(live.stdout, lambda d: (d["db_arrivals_per_s"] or 0) > 0)
        live.kill()
        live.communicate(timeout=10)
        code, stdout, stderr = run(shared_stack, "watch", "--once", "--json", "--interval", "1s")
    finally:
        herd.kill()
        herd.communicate(timeout=10)
    assert code == 0, stderr
    doc = json.loads(stdout)
    assert doc["services"]["db"]["up"] and doc["services"]["cache"]["up"]
    assert doc["db_arrivals_per_s"] > 0 and doc["db_capacity_per_s"] > 0
    assert doc["db_load_ratio"] > 0 and doc["db_queue_depth"] >= 0
    assert doc["cache_db_attempts_per_s"]["ok"] > 0
    assert doc["cache_requests_per_s"] > 0
    assert doc["shares"] == {"hit": 0.0, "miss": 1.0, "coalesced": 0.0, "stale": 0.0}  # unique keys
    assert doc["coalesced_waiters"] >= 0 and doc["keys_in_flight"] >= 0
    assert 0 < doc["latency_p50_s"] <= doc["latency_p99_s"]
    assert doc["guards"] == []
    # The herd's channels to the cache, the cache's to the DB; plaintext: no handshake.
    for role in ("db", "cache"):
        assert doc["connections"][role]["open"] >= 1, doc["connections"]
        assert doc["connections"][role]["accepted_per_s"] >= 0
        assert doc["connections"][role]["handshakes_per_s"] == 0


def test_watch_reads_the_compose_stack_where_its_ports_are(shared_stack: Path) -> None:
    """The docker backend reads the compose stack's published /metrics (here pointed, by the
    documented variables, at a local stack: no Docker engine is needed to watch)."""
    services = json.loads(run(shared_stack, "status", "--json")[1])["services"]
    env = {f"HERDLAB_{n.upper()}_METRICS_URL": services[n]["metrics"] for n in ("db", "cache")}
    code, stdout, stderr = run(
        shared_stack / "elsewhere",
        *("--backend", "docker", "watch", "--once", "--json", "--interval", "0.2s"),
        env=env,
    )
    assert code == 0, stderr
    doc = json.loads(stdout)
    assert {n: s["metrics"] for n, s in doc["services"].items()} == {
        "db": services["db"]["metrics"],
        "cache": services["cache"]["metrics"],
    }
    assert all(s["up"] for s in doc["services"].values())
    assert doc["db_capacity_per_s"] > 0


def test_live_view_survives_a_killed_service_and_ctrl_c_exits_130(stack_dir: Path) -> None:
    live = chaos(stack_dir, "watch", "--json", "--interval", "0.2s", "--count", "1000")
    assert live.stdout is not None and live.stderr is not None
    try:
        _lines(live.stdout, lambda d: d["services"]["cache"]["up"])
        code, _, stderr = run(stack_dir, "kill", "cache")
        assert code == 0, stderr
        doc = _lines(live.stdout, lambda d: not d["services"]["cache"]["up"])
        assert doc["cache_requests_per_s"] is None and doc["db_capacity_per_s"] is not None
        _lines(live.stdout, lambda d: True)  # and it goes on
        live.send_signal(signal.SIGINT)
        _, stderr = live.communicate(timeout=20)
    finally:
        if live.poll() is None:
            live.kill()
            live.communicate(timeout=10)
    assert live.returncode == 130, stderr
    assert "Traceback" not in stderr and stderr.strip() == "chaos: interrupted"


def test_watch_without_a_stack_is_one_line_exit_2(tmp_path: Path) -> None:
    code, _, stderr = run(tmp_path, "watch", "--once")
    assert code == 2 and stderr.strip().splitlines() == [
        "chaos: error: no lab stack is up; run 'chaos up' first"
    ]
    code, _, stderr = run(tmp_path, "watch", "--interval", "0s")
    assert code == 2 and "--interval" in stderr and len(stderr.strip().splitlines()) == 1


def test_watch_of_the_compose_stack_without_docker_says_so_exit_2(tmp_path: Path) -> None:
    env = {"DOCKER_HOST": "unix:///nonexistent"}
    code, stdout, stderr = run(tmp_path, "--backend", "docker", "watch", "--once", env=env)
    assert code == 2 and stdout == "", stdout
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.startswith("chaos: error: docker not reachable at unix:///nonexistent"), stderr


def test_live_view_in_an_80x24_terminal(shared_stack: Path) -> None:
    """The rich Live view on a real terminal (a pty of 80x24): frames within 80 columns, then
    Ctrl-C exits 130 without a traceback."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = {**os.environ, "HERDLAB_STATE_DIR": str(shared_stack), "TERM": "xterm"}
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    proc = subprocess.Popen(
        [*CHAOS, "watch", "--interval", "0.2s", "--count", "1000"],
        stdin=slave,
        stdout=slave,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    os.close(slave)
    seen = b""
    try:
        for _ in range(1000):  # a bound on reads, not a clock
            ready, _, _ = select.select([master], [], [], 20)
            assert ready, f"no output from the live view: {seen[-500:]!r}"
            seen += os.read(master, 65536)
            if seen.count(b"DB arrivals") >= 2:  # a second frame drawn over the first
                break
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=20)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert seen.count(b"DB arrivals") >= 2, seen[-500:]
    text = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", seen).decode(errors="replace")
    for line in text.replace("\r", "\n").splitlines():
        assert len(line) <= 80, line
    assert "cache up" in text and "db up" in text
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
