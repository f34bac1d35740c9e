"""Section `sharpness`: how sharp a stampede is where it lands, against the bare chain.

The workshop's herd is N identical queries within a millisecond. The lab's stampede (`chaos
scenario stampede --clients N`, coalescing off) goes herd -> cache -> DB; each hop is a Python
process, and the DB's exact record says how long the N queries took to arrive
(`db_arrival_spread_s`, first to last). The limit is the same shape with nothing in it: the
lab's herd (`chaos herd`, the same release barrier and channels) -> a pass-through grpc.aio
server (`benchmarks.pass_through`) -> the bare server (`benchmarks.bare_server`), which holds
the N calls and records when the first and the N-th arrived. `release_spread_s` is the herd's
own (barrier open to the last user's first send) in both.

Both run on each event loop (`--loop`, every process of the run on it), in interleaved rounds
whose loop order reverses every round. Not pinned: the scenario starts its own processes.
Figures are medians over rounds.

`render` writes the section's part of BENCHMARKS.md from its results (under its `TITLE`),
`summary_rows` its rows of the report's summary; `benchmarks.report` assembles them.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import markdown as md
from benchmarks.servers import read_json_file
from benchmarks.stats import median, ratio
from benchmarks.system import run_json, spawn, stop
from chaos.lab.ports import HOST, free_port
from chaos.scenarios.stampede import auto_db_latency
from herdlab import loop
from herdlab.config import format_duration

# The section's title in BENCHMARKS.md.
TITLE = "Sharpness of the stampede"

KEY_PREFIX = "burst"
KEY = f"{KEY_PREFIX}0"  # the herd's keys are PREFIX0..K-1; one key
CHANNELS = 8
RUN_TIMEOUT_S = 900.0
ALL = frozenset(range(os.cpu_count() or 1))


def _chaos(loop_name: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "chaos", "--loop", loop_name, *args]


def _lab(loop_name: str, clients: int) -> dict[str, Any]:
    """The lab's stampede with coalescing off: the DB's arrival spread, the herd's release."""
    out = Path(tempfile.mkdtemp(prefix="herdlab-bench-sharp-")) / "stampede.json"
    run_json(
        _chaos(loop_name, "scenario", "stampede", "--clients", str(clients), "--json", str(out)),
        ALL,
        RUN_TIMEOUT_S,
    )
    doc = json.loads(out.read_text())
    row = next(r for r in doc["scenarios"] if not r["coalescing"])
    return {
        "db_arrival_spread_s": row["db_arrival_spread_s"],
        "db_arrivals_per_s": row["db_arrivals_per_s"],
        "release_spread_s": row["release_spread_s"],
        "db_queries": row["db_queries"],
        "lost": row["lost"],
    }


def _chain(loop_name: str, clients: int) -> dict[str, Any]:
    """herd -> pass-through -> bare server: the bare server's arrival spread."""
    work = Path(tempfile.mkdtemp(prefix="herdlab-bench-chain-"))
    events = work / "gate.json"
    bare_port, pass_port = free_port(), free_port()
    hold_s = auto_db_latency(clients)
    bare = spawn(
        [
            sys.executable,
            "-m",
            "benchmarks.bare_server",
            "--port",
            str(bare_port),
            "--loop",
            loop_name,
            "--hold",
            str(clients),
            "--hold-key",
            KEY,
            "--settle",
            "0",
            "--events",
            str(events),
        ],
        ALL,
        work / "bare.log",
    )
    middle = spawn(
        [
            sys.executable,
            "-m",
            "benchmarks.pass_through",
            "--port",
            str(pass_port),
            "--upstream",
            f"{HOST}:{bare_port}",
            "--loop",
            loop_name,
        ],
        ALL,
        work / "pass.log",
    )
    try:
        _, done = run_json(
            _chaos(
                loop_name,
                "herd",
                "--target",
                f"{HOST}:{pass_port}",
                "--users",
                str(clients),
                "--keys",
                "1",
                "--key-prefix",
                KEY_PREFIX,
                "--channels",
                str(CHANNELS),
                "--deadline",
                format_duration(int(hold_s * 3)),
                "--json",
            ),
            ALL,
            RUN_TIMEOUT_S,
        )
        herd = json.loads(done.stdout)  # `chaos herd --json` prints one indented document
        gate = read_json_file(events, hold_s)
    finally:
        stop(middle)
        stop(bare)
    return {
        "arrival_spread_s": round((gate["all_pending_ns"] - gate["first_pending_ns"]) / 1e9, 6),
        "release_spread_s": herd["release_spread_s"],
        "lost": herd["lost"],
    }


def _medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {key: median([r[key] for r in runs]) for key in runs[0] if key != "lost"} | {
        "lost": sum(r["lost"] for r in runs),
        "rounds": runs,
    }


def run(clients: int, rounds: int, loops: Sequence[str] = loop.NAMES) -> dict[str, Any]:
    lab: dict[str, list[dict[str, Any]]] = {name: [] for name in loops}
    chain: dict[str, list[dict[str, Any]]] = {name: [] for name in loops}
    for number in range(rounds):
        for name in loops if number % 2 == 0 else loops[::-1]:
            lab[name].append(_lab(name, clients))
            chain[name].append(_chain(name, clients))
    rows: list[dict[str, Any]] = []
    for name in loops:
        lab_m, chain_m = _medians(lab[name]), _medians(chain[name])
        rows.append(
            {
                "loop": name,
                "lab": lab_m,
                "chain": chain_m,
                "spread_over_chain": ratio(
                    lab_m["db_arrival_spread_s"], chain_m["arrival_spread_s"]
                ),
            }
        )
    default = loop.chosen()
    base = next(r for r in rows if r["loop"] == default)
    for row in rows:
        row["lab_spread_vs_default"] = ratio(
            row["lab"]["db_arrival_spread_s"], base["lab"]["db_arrival_spread_s"]
        )
        row["release_spread_vs_default"] = ratio(
            row["lab"]["release_spread_s"], base["lab"]["release_spread_s"]
        )
    return {
        "clients": clients,
        "rounds": rounds,
        "channels": CHANNELS,
        "loop": default,
        "rows": rows,
    }


def render(sh: dict[str, Any]) -> list[str]:
    rows = []
    for row in sh["rows"]:
        lab, chain = row["lab"], row["chain"]
        rows.append(
            [
                f"{row['loop']}{' (default)' if row['loop'] == sh['loop'] else ''}",
                f"{lab['db_arrival_spread_s']:.3f}",
                f"{lab['db_arrivals_per_s']:,.0f}",
                f"{chain['arrival_spread_s']:.3f}",
                f"**{md.times(row['spread_over_chain'])}**",
                f"{lab['release_spread_s']:.3f} / {chain['release_spread_s']:.3f}",
                md.times(row["lab_spread_vs_default"]),
                f"{lab['lost']} / {chain['lost']}",
            ]
        )
    return [
        f"`chaos scenario stampede --clients {sh['clients']:,}` (coalescing off: every client's "
        "miss is a DB query) against the bare chain: the same herd (`chaos herd`, "
        f"{sh['channels']} channels) -> a pass-through grpc.aio server "
        "(`benchmarks/pass_through.py`, one channel upstream, as the cache has to the DB) -> "
        "the bare server holding every call (`benchmarks/bare_server.py --hold`). The spread "
        "runs from the first arrival at the last hop to the last, from the DB's exact record "
        "and the bare server's. Every process of a run is on the row's event loop. Medians of "
        f"{sh['rounds']} interleaved round(s); not pinned.",
        "",
        *md.table(
            [
                "loop",
                "lab: DB arrival spread s",
                "lab: DB arrivals/s",
                "bare chain: arrival spread s",
                "lab / bare chain",
                "herd release spread s lab / chain",
                "lab spread vs default loop",
                "lost lab / chain",
            ],
            rows,
        ),
    ]


def summary_rows(sh: dict[str, Any]) -> list[list[str]]:
    """The summary's rows for this section: figure, limit, distance."""
    return [
        [
            f"{sh['clients']:,} clients, {row['loop']}: the DB's arrivals spread over "
            f"{row['lab']['db_arrival_spread_s']:.3f} s",
            f"bare chain {row['chain']['arrival_spread_s']:.3f} s",
            md.times(row["spread_over_chain"]),
        ]
        for row in sh["rows"]
    ]
