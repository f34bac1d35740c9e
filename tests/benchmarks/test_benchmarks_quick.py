"""`python -m benchmarks --quick` end to end: real processes, real gRPC, every section.

Slow (about a minute on 2 cores): it carries its own timeout mark, above the suite's default. It
asserts that the run completes and that both outputs have every section, never a timing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.report import SECTIONS

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 540


@pytest.mark.timeout(RUN_TIMEOUT_S + 30)
def test_quick_mode_writes_every_section(tmp_path: Path) -> None:
    out, doc = tmp_path / "BENCHMARKS.md", tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(out), "--json", str(doc)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]

    results = json.loads(doc.read_text())
    assert set(SECTIONS) <= set(results)
    assert results["meta"]["quick"] is True
    assert results["coalescing"]["db_queries"] == 1
    peers = results["coalescing"]["peers"]
    assert len([p for p in peers if p["peer"] != "herdlab"]) >= 2
    assert all(p["db_queries"] >= 1 and "peak_memory_bytes" in p for p in peers)
    hit = results["hit_path"]
    # The quick profile measures the hit path at one concurrency (the full run: 1, 64, 512).
    assert set(hit["ratios"]) == set(hit["guarded_ratios"]) == {"64"}
    assert all(r is not None for r in [*hit["ratios"].values(), *hit["guarded_ratios"].values()])
    assert hit["guards"] == "recommended" and "limit" in hit["guards_spec"]
    for row in hit["rows"]:
        assert row["cache_guarded"]["rounds"] and row["cache_guarded"]["errors"] == 0
        assert len(row["guarded_paired_ratios"]) == len(row["paired_ratios"]) == hit["rounds"]
        for span in (row["ratio_min_max"], row["guarded_ratio_min_max"]):
            assert len(span) == 2 and span[0] <= span[1]
        assert row["guarded_over_cache"] is not None and row["guarded_cpu_ratio"] is not None
        assert len(row["twin"]["paired_ratios"]) == hit["rounds"]  # the noise floor, measured
        assert row["twin"]["ratio"] is not None and row["ratio_paired"] is not None
    assert results["policies"]["rows"]
    assert (tmp_path / results["policies"]["plot"]).stat().st_size > 0
    runs = results["herd_recovery"]["runs"]
    assert len(runs) == 2 and all(run["policies"] for run in runs)
    assert all(p["lost"] == 0 for run in runs for p in run["policies"])
    guard_run = results["herd_recovery"]["guard_run"]
    guard_rows = guard_run["policies"]
    assert [p["guards"] for p in guard_rows] == results["herd_recovery"]["guard_sets"]
    assert len(guard_rows) >= 2 and "--guards " in guard_run["command"]
    for p in guard_rows:
        assert p["policy"] == "full" and p["keys"] == guard_run["keys"] and p["lost"] == 0
        assert p["guards_spec"] and p["guards_params"] and p["queue"] == "fifo"
        assert p["slot_time_amplification"] is not None and p["ideal_recovery_s"] > 0
        assert (p["recovery_s"] is None) == (p["recovery_over_ideal"] is None)
        assert all(low <= high for low, high in p["guard_state"].values())
        assert bool(p["guard_state"]) == (p["guards_spec"] != "none")
    assert results["herd_scale"]["sizes"]
    side_by_side = results["herd_scale"]["side_by_side"]
    assert [e["workers"] for e in side_by_side] == [None, 2]
    assert side_by_side[1]["sizes"][0]["unreported"] == side_by_side[1]["sizes"][0]["lost"] == 0
    assert results["wire_proxy"]["rows"]
    assert set(hit["by_loop"]) == {"asyncio", "uvloop"}
    assert all(len(rows) == len(hit["rows"]) == 1 for rows in hit["by_loop"].values())
    sharp = results["sharpness"]["rows"]
    assert sorted(r["loop"] for r in sharp) == ["asyncio", "uvloop"]
    for row in sharp:
        assert row["lab"]["db_queries"] == results["sharpness"]["clients"]
        assert row["lab"]["lost"] == row["chain"]["lost"] == 0
        assert row["lab"]["db_arrival_spread_s"] > 0 and row["chain"]["arrival_spread_s"] > 0
    tls = results["tls_handshake"]
    for mode in ("plaintext", "tls"):
        assert len(tls[mode]["server_cpu_us_by_round"]) == tls["rounds"] == 1
        assert tls[mode]["server_cpu_us_per_connection"] > 0
    assert tls["ratio"] is not None and len(tls["paired_ratios"]) == 1

    text = out.read_text()
    for number, section in enumerate(SECTIONS, start=1):
        assert f"## {number}. " in text and f"(`{section}`)" in text, section
    assert "python -m benchmarks --quick" in text
    assert "### With the recommended guards on" in text
    assert "### Event loops" in text
    assert f"`{guard_run['command']} --json r.json`" in text
    assert all(f"- `{p['guards']}`: " in text for p in guard_rows)


def test_handler_cost_times_both_handlers_on_hits_the_cache_counts() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.handler_cost", "--calls", "500", "--repeats", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    doc = json.loads(result.stdout)
    # Every timed call of the cache's handler was a hit, counted once: 3 interleaved rounds.
    assert doc["hits_counted"] == 500 * 2 * 3
    assert doc["cache_us"] > 0 and doc["bare_us"] > 0
    assert doc["extra_us"] == pytest.approx(doc["cache_us"] - doc["bare_us"], abs=0.011)


def test_handler_cost_rejects_a_count_below_one() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.handler_cost", "--calls", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--calls and --repeats must be >= 1" in result.stderr
