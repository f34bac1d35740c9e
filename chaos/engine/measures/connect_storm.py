"""A reconnect storm at the scale where connecting is the overload, from the server's side of the
wire (the proxy's record of the cache's link, `wire_links`), the cache's own CPU (`cache_cpu`) and
the herd's channels.

The storm starts at the trigger's end: the restarted cache listening after a kill or a graceful
stop (the trial's outage), or, with no outage (connections aged out), the first herd channel
that left READY after the release. Measures:

- `handshake_capacity_per_s`: calibrated in the same trial, before the storm: the most
  connections the cache answered in one second (`answered`: its first byte, over TLS its
  handshake flight) while the herd opened all its connections at once (with `[stack]
  connect_pending` the proxy keeps that many in flight at the cache: the cache at its capacity,
  no client left waiting past its connect timeout), the seconds in which a client gave up
  excluded (a connect shorter than a second: its own rate);
  `calibration_abandoned` counts those give-ups (0: a clean calibration);
- `peak_connect_attempts_per_s`: the most connections that reached the cache in one second
  (any 1 s window of the proxy's 100 ms bins) from
  the storm on (`passed` by the proxy: what an admission gate let through), and
  `peak_offered_per_s` the most that reached the proxy (every client's attempt);
  `peak_over_capacity`: the first over the capacity;
- `time_to_all_ready_s`: from the storm's start to the last herd connection READY again;
  `ideal_reconnect_s`: connections / capacity, the time a server at its capacity needs;
  `reconnect_over_ideal`: the first over the second;
- `wasted_handshakes`: connections handed to the cache from the storm on whose client left
  before the cache answered (its handshake work for them was wasted), and `wasted_share` of
  those handed to it;
- `failed_calls`: herd requests that ended with an error (by code: `client_errors`);
- `server_cpu_peak`: the cache's most CPU in one second from the storm on, in cores;
- `reconnect_peak_bin_share`: the herd's reconnects (each connection's first connect attempt
  from the storm's trigger on; retries after a failed attempt are not reconnects), the share of
  them in the busiest 100 ms (connections aged out together land in one), and
  `reconnect_peak_over_mean`: in 100 ms bins from the first to the last, the largest bin over
  the mean bin.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from chaos.engine.measures.base import echo, measure, rounded
from chaos.engine.observations import Observations
from chaos.engine.observers.cache_cpu import cpu_peak, cpu_used
from chaos.engine.observers.wire_links import LinkRecord
from chaos.engine.timeline import BIN_NS, busiest_window

LINK = ("wire_links",)
PER_SECOND = 10  # 100 ms bins in a second

echo("connections", "herd.channel_count")  # the connections the herd held
echo("tls", "stack.tls")  # every link over verified TLS


@measure("trigger")
def trigger(obs: Observations) -> str | None:
    """The row's `row.trigger` label: what dropped the connections (kill, stop, age)."""
    value = obs.variant.get("row.trigger")
    return None if value is None else str(value)


@measure("cure")
def cure(obs: Observations) -> str | None:
    """The row's `row.cure` label: none, or the cure in force."""
    value = obs.variant.get("row.cure")
    return None if value is None else str(value)


def _link(obs: Observations) -> LinkRecord | None:
    record = obs.series.get("wire_links")
    return record if isinstance(record, LinkRecord) else None


def trigger_ns(obs: Observations) -> int | None:
    """When the storm's cause began: the cache's kill or stop, else the first channel that left
    READY after the release (connections aged out)."""
    outage = obs.outage("cache")
    if outage is not None:
        return outage.down_ns
    return _first_loss_ns(obs)


def _first_loss_ns(obs: Observations) -> int | None:
    last: dict[int, str] = {}
    for t, channel, state in sorted(obs.herd_result.channel_events):
        if t >= obs.t0_ns and last.get(channel) == "READY" and state != "READY":
            return t
        last[channel] = state
    return None


def storm_start_ns(obs: Observations) -> int | None:
    """When the storm began: the restarted cache listening, or the first connection lost."""
    outage = obs.outage("cache")
    if outage is not None:
        return outage.up_ns
    return _first_loss_ns(obs)


def _bins(obs: Observations, name: str, start_ns: int, end_ns: int) -> list[int]:
    record = _link(obs)
    return [] if record is None else record.per_bin(name, start_ns, end_ns)


def _per_second(obs: Observations, name: str, start_ns: int, end_ns: int) -> list[int]:
    record = _link(obs)
    return [] if record is None else record.per_second(name, start_ns, end_ns)


def busiest_second(bins: list[int], skip: list[int] | None = None) -> int | None:
    """The most counted in any second (`PER_SECOND` consecutive bins), windows overlapping a
    non-zero bin of `skip` left out; None without a window."""
    windows = [
        sum(bins[i : i + PER_SECOND])
        for i in range(max(1, len(bins) - PER_SECOND + 1))
        if not (skip and any(skip[i : i + PER_SECOND]))
    ]
    return max(windows, default=None)


@measure("handshake_capacity_per_s", needs=LINK)
def handshake_capacity_per_s(obs: Observations) -> float | None:
    """Connections the cache answered in the busiest second of the herd's first connect (every
    connection offered at once: the cache at its capacity), seconds in which a client gave up
    left out; a connect shorter than a second counts at its own rate."""
    start, end = obs.herd_result.connect_start_ns, obs.t0_ns
    answered = _bins(obs, "answered", start, end)
    if _link(obs) is None or not any(answered):
        return None
    first = next(i for i, n in enumerate(answered) if n)
    last = max(i for i, n in enumerate(answered) if n)
    if last - first + 1 < PER_SECOND:
        return round(sum(answered) / ((last - first + 1) / PER_SECOND), 1)
    return busiest_second(answered, _bins(obs, "abandoned", start, end))


@measure("calibration_abandoned", needs=LINK)
def calibration_abandoned(obs: Observations) -> int | None:
    """Clients that gave up during the first connect: handed to the cache and left before its
    answer (`abandoned`), or left while the first connect's gate held them (`left`)."""
    record = _link(obs)
    if record is None:
        return None
    start, end = obs.herd_result.connect_start_ns, obs.t0_ns
    return record.total("abandoned", start, end) + record.total("left", start, end)


def _peak(obs: Observations, name: str) -> int | None:
    start = storm_start_ns(obs)
    if start is None or _link(obs) is None:
        return None
    return busiest_second(_bins(obs, name, start, obs.end_ns)) or 0


@measure("peak_connect_attempts_per_s", needs=LINK)
def peak_connect_attempts_per_s(obs: Observations) -> int | None:
    return _peak(obs, "passed")


@measure("peak_offered_per_s", needs=LINK)
def peak_offered_per_s(obs: Observations) -> int | None:
    return _peak(obs, "accepted")


def _ratio(top: float | None, bottom: float | None) -> float | None:
    return None if top is None or not bottom else round(top / bottom, 3)


@measure("peak_over_capacity", needs=LINK)
def peak_over_capacity(obs: Observations) -> float | None:
    return _ratio(peak_connect_attempts_per_s(obs), handshake_capacity_per_s(obs))


def ready_again_ns(obs: Observations) -> dict[int, int]:
    """Each herd connection's first READY after it left READY from the trigger on; a connection
    that never left READY counts as ready at the trigger."""
    start = trigger_ns(obs)
    if start is None:
        return {}
    lost: set[int] = set()
    ready: dict[int, int] = {}
    for t, channel, state in sorted(obs.herd_result.channel_events):
        if t < start or channel in ready:
            continue
        if state != "READY":
            lost.add(channel)
        elif channel in lost:
            ready[channel] = t
    for channel in range(obs.herd_result.connections):
        if channel not in lost:
            ready.setdefault(channel, start)
    return ready


@measure("time_to_all_ready_s")
def time_to_all_ready_s(obs: Observations) -> float | None:
    start = storm_start_ns(obs)
    ready = ready_again_ns(obs)
    if start is None or len(ready) < obs.herd_result.connections:
        return None
    return round(max(0, max(ready.values()) - start) / 1e9, 3)


@measure("ideal_reconnect_s", needs=LINK)
def ideal_reconnect_s(obs: Observations) -> float | None:
    capacity = handshake_capacity_per_s(obs)
    return _ratio(obs.herd_result.connections, capacity)


@measure("reconnect_over_ideal", needs=LINK)
def reconnect_over_ideal(obs: Observations) -> float | None:
    return _ratio(time_to_all_ready_s(obs), ideal_reconnect_s(obs))


def _storm_total(obs: Observations, name: str) -> int | None:
    start = storm_start_ns(obs)
    if start is None or _link(obs) is None:
        return None
    return sum(_bins(obs, name, start, obs.end_ns))


@measure("wasted_handshakes", needs=LINK)
def wasted_handshakes(obs: Observations) -> int | None:
    return _storm_total(obs, "abandoned")


@measure("wasted_share", needs=LINK)
def wasted_share(obs: Observations) -> float | None:
    return _ratio(_storm_total(obs, "abandoned"), _storm_total(obs, "passed"))


@measure("failed_calls")
def failed_calls(obs: Observations) -> int:
    return sum(1 for o in obs.herd_result.outcomes if o.code is not None)


@measure("server_cpu_peak", needs=("cache_cpu",))
def server_cpu_peak(obs: Observations) -> float | None:
    start = storm_start_ns(obs)
    samples = obs.series.get("cache_cpu")
    if start is None or not isinstance(samples, list):
        return None
    return rounded(cpu_peak(samples, start), 2)


def connect_times(obs: Observations) -> list[int]:
    """The herd's reconnects: each connection's first connect attempt (turn to CONNECTING) from
    the trigger on, in time order; the attempts that follow a failed one are the storm's echo,
    not the moment its client came back."""
    start = trigger_ns(obs)
    if start is None:
        return []
    first: dict[int, int] = {}
    for t, channel, state in sorted(obs.herd_result.channel_events):
        if t >= start and state == "CONNECTING":
            first.setdefault(channel, t)
    return sorted(first.values())


def connect_bins(obs: Observations) -> list[int]:
    """The herd's reconnects from the trigger on, per 100 ms from the first to the last."""
    attempts = connect_times(obs)
    if not attempts:
        return []
    counts = Counter((t - attempts[0]) // BIN_NS for t in attempts)
    return [counts.get(index, 0) for index in range(max(counts) + 1)]


@measure("reconnect_peak_bin_share")
def reconnect_peak_bin_share(obs: Observations) -> float | None:
    """The share of the reconnects in the busiest 100 ms (a window starting at any reconnect,
    so a burst split by a bin's edge is still one burst)."""
    attempts = connect_times(obs)
    if not attempts:
        return None
    return _ratio(busiest_window(attempts), len(attempts))


@measure("reconnect_peak_over_mean")
def reconnect_peak_over_mean(obs: Observations) -> float | None:
    bins = connect_bins(obs)
    return _ratio(max(bins, default=0), sum(bins) / len(bins)) if bins else None


@measure("connect_storm_timeline", needs=("wire_links", "cache_cpu"))
def connect_storm_timeline(obs: Observations) -> dict[str, Any]:
    """Per second from the whole second of the herd's first connect: connections offered to the
    proxy, passed to the cache, answered and abandoned, reset by the proxy without reaching the
    cache (`refused`: a gate refused them or held them past their wait, the cache was down, or
    the link was full) and given up by their clients while held (`left`), the herd's connections
    that turned READY (`ready`), and the cache's CPU (cores); `t0_s` and `storm_s` mark the
    release and the storm's start on the same seconds."""
    origin_ns = obs.herd_result.connect_start_ns // 1_000_000_000 * 1_000_000_000
    series = {
        name: _per_second(obs, name, origin_ns, obs.end_ns)
        for name in ("accepted", "passed", "answered", "abandoned", "refused", "left")
    }
    seconds = range(len(series["accepted"]))
    ready = Counter(
        (t - origin_ns) // 1_000_000_000
        for t, _, state in obs.herd_result.channel_events
        if state == "READY" and t >= origin_ns
    )
    samples = obs.series.get("cache_cpu")
    cpu: list[float | None] = []
    if isinstance(samples, list):
        for index in seconds:
            second = origin_ns + index * 1_000_000_000
            cpu.append(rounded(cpu_used(samples, second, second + 1_000_000_000), 2))
    storm = storm_start_ns(obs)
    return {
        **series,
        "ready": [ready.get(index, 0) for index in seconds],
        "cpu": cpu,
        "t0_s": round((obs.t0_ns - origin_ns) / 1e9, 3),
        "storm_s": None if storm is None else round((storm - origin_ns) / 1e9, 3),
    }
