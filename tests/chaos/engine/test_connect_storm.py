"""The reconnect-at-scale measures on an injected trial: the proxy's 100 ms record of the cache's
link, the cache's CPU samples and the herd's channel states; every figure worked out by hand."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

from support import observations

from chaos.engine.measures.connect_storm import (
    busiest_second,
    connect_bins,
    connect_storm_timeline,
    handshake_capacity_per_s,
    ideal_reconnect_s,
    peak_connect_attempts_per_s,
    peak_over_capacity,
    reconnect_over_ideal,
    reconnect_peak_bin_share,
    time_to_all_ready_s,
    wasted_handshakes,
    wasted_share,
)
from chaos.engine.observations import Observations, Outage
from chaos.engine.observers.cache_cpu import cpu_peak, cpu_used
from chaos.engine.observers.wire_links import LinkRecord

ROOT = Path(__file__).resolve().parents[3]
S = 1_000_000_000
MS = 1_000_000


def _bins(start_s: float, name: str, counts: list[int]) -> dict[int, dict[str, int]]:
    return {round(start_s * 1000) + 100 * i: {name: n} for i, n in enumerate(counts) if n}


def _record(*parts: dict[int, dict[str, int]]) -> LinkRecord:
    merged: dict[int, dict[str, int]] = {}
    for part in parts:
        for ms, counts in part.items():
            merged.setdefault(ms, {}).update(counts)
    return LinkRecord(totals={}, bins=sorted(merged.items()))


def _storm(record: LinkRecord, events: list[tuple[int, int, str]], channels: int) -> Observations:
    """Connect from 0 s, release at 4 s, the cache killed at 5 s and listening again at 10 s."""
    obs = observations([], [Outage("cache", down_ns=5 * S, restart_ns=10 * S, up_ns=10 * S)])
    obs.herd_result = dataclasses.replace(
        obs.herd_result, connect_start_ns=0, channel_events=events, connections=channels
    )
    obs.t0_ns, obs.end_ns = 4 * S, 20 * S
    obs.series["wire_links"] = record
    return obs


def test_busiest_second_slides_over_the_bins_and_skips_windows_with_give_ups() -> None:
    bins = [0, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 9]
    assert busiest_second(bins) == 54  # bins 2..11
    assert busiest_second(bins, skip=[0] * 11 + [1]) == 50  # bins 1..10
    assert busiest_second([1, 2]) == 3  # shorter than a second: all of it


def test_the_storm_against_the_calibrated_capacity() -> None:
    record = _record(
        _bins(0.0, "answered", [100] * 20),  # the first connect: 1,000 a second for 2 s
        _bins(10.0, "passed", [600] * 10 + [100] * 10),  # the storm: 6,000 in its first second
        _bins(10.0, "abandoned", [300] * 10),
    )
    ready = [(10 * S + 4 * S, 0, "READY")]
    events = [(1 * S, 0, "READY"), (5 * S, 0, "TRANSIENT_FAILURE"), *ready]
    obs = _storm(record, events, channels=1)
    assert handshake_capacity_per_s(obs) == 1000
    assert peak_connect_attempts_per_s(obs) == 6000 and peak_over_capacity(obs) == 6.0
    assert wasted_handshakes(obs) == 3000 and wasted_share(obs) == 0.429  # of 7,000 passed
    assert time_to_all_ready_s(obs) == 4.0  # from the restarted cache listening
    assert ideal_reconnect_s(obs) == 0.001 and reconnect_over_ideal(obs) == 4000.0


def test_the_timeline_counts_each_second_what_the_proxy_did_and_when_the_herd_was_ready() -> None:
    record = _record(
        _bins(0.5, "accepted", [50, 50]),
        _bins(10.0, "accepted", [400] * 10 + [30]),
        _bins(10.0, "refused", [300] * 10),  # a gate reset most of the storm's first second
        _bins(11.0, "passed", [10]),
        _bins(12.0, "left", [2]),
    )
    events = [(1 * S, 0, "READY"), (5 * S, 0, "IDLE"), (11 * S + 300 * MS, 0, "READY")]
    obs = _storm(record, events, channels=1)
    # The first connect at 0.55 s: every series, the marks and the CPU on the same whole seconds.
    obs.herd_result = dataclasses.replace(obs.herd_result, connect_start_ns=550 * MS)
    obs.series["cache_cpu"] = [
        (t * S // 2, 1, c) for t, c in ((20, 0), (21, 0.25), (22, 0.5), (23, 0.625))
    ]
    timeline = connect_storm_timeline(obs)
    assert timeline["accepted"][:2] == [100, 0] and timeline["accepted"][10:13] == [4000, 30, 0]
    assert timeline["refused"][10] == 3000 and sum(timeline["refused"]) == 3000
    assert timeline["passed"][11] == 10 and timeline["left"][12] == 2
    assert [i for i, n in enumerate(timeline["ready"]) if n] == [1, 11]
    assert timeline["cpu"][10:12] == [0.5, 0.25] and timeline["cpu"][9] is None
    assert len(timeline["ready"]) == len(timeline["accepted"]) == len(timeline["cpu"]) == 21
    assert timeline["t0_s"] == 4.0 and timeline["storm_s"] == 10.0


def test_a_connection_never_ready_again_leaves_all_ready_unmeasured() -> None:
    events = [(1 * S, 0, "READY"), (1 * S, 1, "READY"), (5 * S, 0, "IDLE"), (6 * S, 1, "IDLE")]
    events.append((12 * S, 0, "READY"))
    assert time_to_all_ready_s(_storm(_record(), events, channels=2)) is None


def test_connections_aged_out_together_land_in_one_bin() -> None:
    ready = [(1 * S, c, "READY") for c in range(10)]
    together = [(8 * S + c * MS, c, "CONNECTING") for c in range(10)]
    spread = [(8 * S + c * 100 * MS, c, "CONNECTING") for c in range(10)]
    obs = observations([])
    obs.t0_ns = 4 * S
    # Each connection's attempts after its first (a failed handshake, tried again) are not
    # reconnects: they would dilute the burst the trigger made.
    retries = [(9 * S + c * 300 * MS + k * MS, c, "CONNECTING") for c in range(10) for k in (1, 2)]
    for events, share in ((together, 1.0), (spread, 0.1)):
        lost = [(t - MS, c, "IDLE") for t, c, _ in events]
        obs.herd_result = dataclasses.replace(
            obs.herd_result, channel_events=ready + lost + events + retries, connections=10
        )
        assert reconnect_peak_bin_share(obs) == share
        assert sum(connect_bins(obs)) == 10


def test_cpu_is_read_within_one_incarnation_of_the_cache() -> None:
    samples = [(0, 1, 0.0), (S // 2, 1, 0.25), (S, 1, 1.0), (S + S // 2, 2, 0.0), (2 * S, 2, 0.5)]
    assert cpu_peak(samples, 0) == 1.0  # 1 CPU second in the first second
    assert cpu_used(samples, S + 1, 3 * S) == 1.0  # the restarted process: 0.5 s in 0.5 s
    assert cpu_used(samples, 0, S // 4) is None  # one sample only


def test_a_file_measuring_fewer_figures_is_narrated_without_them() -> None:
    from chaos.scenarios.reconnect_at_scale import KIND  # the scenario's kind, not a measure

    assert KIND.describe({"lost": 0, "wasted_share": 0.0}) == []


def test_the_figure_draws_the_shipped_document_and_one_from_before_resets_were_kept(
    tmp_path: Path,
) -> None:
    from chaos.scenarios.reconnect_at_scale.plot import plot_reconnect_at_scale

    doc = json.loads((ROOT / "docs" / "reconnect-at-scale.json").read_text())
    older = copy.deepcopy(doc)
    for row in older["rows"]:
        for key in ("refused", "left", "ready"):
            row["timeline"].pop(key, None)
    for name, document in (("shipped", doc), ("older", older)):
        path = tmp_path / f"{name}.png"
        plot_reconnect_at_scale(document, path)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
