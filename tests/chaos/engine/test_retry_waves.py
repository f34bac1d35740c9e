"""`retry_peak_over_mean` on an injected herd record: a wave of retries is one wave wherever the
100 ms bins' edges fall, and spread retries read near 1."""

from __future__ import annotations

import dataclasses

from support import observations

from chaos.engine.measures.retry_waves import retries, retry_peak_over_mean

MS = 1_000_000


def _waves(times_ns: list[int]) -> float:
    obs = observations([])
    obs.herd_result = dataclasses.replace(obs.herd_result, retry_times_ns=times_ns)
    assert retries(obs) == len(times_ns)
    return float(retry_peak_over_mean(obs))


def test_a_wave_split_by_a_bins_edge_is_one_wave() -> None:
    # One retry, then 100 within 60 ms from 50 ms (the edge at 100 ms splits them 84/16 in
    # bins), then one every 100 ms from 0.2 s to 10 s: 200 retries, the first 198 within 99
    # bins (to 9.8 s). The busiest 100 ms holds the whole wave, not 85: 100 over 198/99.
    wave = [50 * MS + (i * 60 * MS) // 100 for i in range(100)]
    times = [0, *wave, *((2 + i) * 100 * MS for i in range(99))]
    assert _waves(times) == 50.0
    assert _waves(list(reversed(times))) == 50.0  # any order


def test_evenly_spread_retries_read_one_and_a_straggler_does_not_dilute_them() -> None:
    even = [i * 100 * MS for i in range(200)]
    assert _waves(even) == 1.0
    # Two retries (1%) a minute later: the mean is the first 99%'s, over their 19.8 s.
    assert _waves([*even[:198], 60_000 * MS, 61_000 * MS]) == 1.0
    assert _waves([]) == 0.0
