"""Reconnect storm: SIGKILL the cache while the herd holds M channels, restore it, and watch the
channels find their way back.

Each variant runs on a fresh local stack: a herd of N users over M channels (each its own TCP
connection) sends `requests_per_user` requests with `think_s` between them, so it is still busy
when the cache comes back. `kill_after_s` after the herd's release the cache is killed (SIGKILL);
`outage_s` later it is restarted on the same port. Variants cross two things:

- the channels' reconnect backoff: gRPC's defaults (no option set: 1 s initial, x1.6, +-20%
  jitter, 120 s max, 20 s minimum connect timeout) or tuned channel options (100 ms initial,
  1 s max);
- the herd's retry policy: `exponential` (no jitter: users who failed together retry together)
  or `full` (Full Jitter).

What is measured, all on the wall clock (comparable across processes):

- reconnect attempts: every CONNECTING transition of a herd channel's subchannel, read from
  gRPC's own channelz trace. The channel's state alone cannot show them: after the first failure
  pick_first stays in TRANSIENT_FAILURE ("sticky") while its subchannel keeps retrying, so the
  channel watcher of the herd sees one CONNECTING per outage. The trace keeps only the last ~20
  events per subchannel, so it is read every `PROBE_POLL_S`; `probe_gaps` counts reads where
  events may have been evicted unread (0 in a sound run).
- `outage`: from just before the SIGKILL to the instant the restarted cache accepts TCP
  connections again (a connect probe, polled every 5 ms). gRPC's own health check is not used for
  this instant: its channel has the default backoff too and would see the restart late.
- `time_to_first_success_s`: from that instant to the first successful herd response;
  `time_to_all_channels_ready_s`: to the moment the last of the M channels is READY again.
- herd attempts and served responses per 100 ms: the retry waves, and recovery.
"""

from __future__ import annotations

import asyncio
import bisect
import importlib
import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from chaos.herd import (
    CONNECT_TIMEOUT_S,
    LOST_MARGIN_S,
    HerdConfig,
    HerdHooks,
    HerdResult,
    ProgressFactory,
    ProgressFn,
    run_herd,
)
from chaos.plotting import new_figure, save
from chaos.scenarios.common import BIN_S, bin_index, bins, in_thread, scenario_stack, wait_listening
from chaos.stack import READY_TIMEOUT_S, LocalStack
from herdlab.grpcutil import Reconnect
from herdlab.retry import POLICY_NAMES, RetryPolicy

P = ParamSpec("P")
T = TypeVar("T")

SCENARIO = "reconnect-storm"
RECONNECT_NAMES = ("default", "tuned")
# gRPC core's connection backoff when no channel option is set (doc/connection-backoff.md).
GRPC_DEFAULT_BACKOFF = {
    "initial_ms": 1000,
    "multiplier": 1.6,
    "jitter": 0.2,
    "max_ms": 120_000,
    "min_connect_timeout_ms": 20_000,
}
# A 1 s minimum connect timeout leaves a busy, just-restarted server time to finish
# the handshake; 100 ms would abandon slow handshakes and retry them.
TUNED_RECONNECT = Reconnect(
    initial_backoff_ms=100, max_backoff_ms=1000, min_connect_timeout_ms=1000
)
PROBE_POLL_S = 0.05
_CONNECTING = "Subchannel connectivity state changed to CONNECTING"


@dataclass(frozen=True)
class ReconnectStormConfig:
    users: int = 1000
    channels: int = 8
    keys: int = 100
    # 10 s, as in retry-storm. Where the restart falls in gRPC's default schedule (attempts ~1,
    # 2.6, 5.2, 9.3, 15.8 s after the kill, each +-20%) decides how long the default waits: a
    # 5 s outage lands on the ~5.2 s attempt and some channels get lucky; 10 s lands in the gap
    # before the ~15.8 s attempt.
    outage_s: float = 10.0
    kill_after_s: float = 1.0  # after the herd's release
    # 1,000 users each asking once a second is about what one herd process and the cache manage
    # on two cores; 20 requests keep the herd busy well past the default backoff's next attempt.
    think_s: float = 1.0
    requests_per_user: int = 20
    policies: tuple[str, ...] = ("exponential", "full")
    reconnects: tuple[str, ...] = RECONNECT_NAMES
    tuned: Reconnect = TUNED_RECONNECT
    retry_base_s: float = 0.1
    retry_cap_s: float = 2.0
    retry_attempts: int = 6
    deadline_s: float = 10.0  # each request's total budget, retries included
    seed: int | None = None

    def problems(self) -> list[str]:
        found = []
        if not 1 <= self.users <= 100_000:
            found.append(f"users must be in 1..100000, got {self.users}")
        if not 1 <= self.channels <= min(self.users, 1024):
            found.append(f"channels must be in 1..min(users, 1024), got {self.channels}")
        if not 1 <= self.keys <= 10_000_000:
            found.append(f"keys must be in 1..10000000, got {self.keys}")
        if not 0 < self.outage_s <= 600:
            found.append(f"outage must be in (0, 600s], got {self.outage_s:g}s")
        if not 0 <= self.kill_after_s <= 60:
            found.append(f"kill-after must be in [0, 60s], got {self.kill_after_s:g}s")
        if not 0 < self.think_s <= 60:
            found.append(f"think time must be in (0, 60s], got {self.think_s:g}s")
        if not 1 <= self.requests_per_user <= 10_000:
            found.append(f"requests per user must be in 1..10000, got {self.requests_per_user}")
        elif self.requests_per_user * self.think_s <= self.kill_after_s + self.outage_s:
            found.append(
                "the herd would end before the cache is restored: requests per user x think "
                f"time ({self.requests_per_user * self.think_s:g}s) must exceed kill-after + "
                f"outage ({self.kill_after_s + self.outage_s:g}s)"
            )
        unknown = [p for p in self.policies if p not in POLICY_NAMES]
        if not self.policies or unknown:
            found.append(
                f"unknown or no retry policy {', '.join(unknown)}; choose from "
                + ", ".join(POLICY_NAMES)
            )
        bad = [r for r in self.reconnects if r not in RECONNECT_NAMES]
        if not self.reconnects or bad:
            found.append(
                f"unknown or no reconnect setting {', '.join(bad)}; choose from "
                + ", ".join(RECONNECT_NAMES)
            )
        if not 100 <= self.tuned.initial_backoff_ms <= self.tuned.max_backoff_ms:
            found.append("tuned reconnect backoff must have 100ms <= initial <= max")
        try:
            self.policy("exponential")
        except ValueError as exc:
            found.append(str(exc))
        return found

    def policy(self, name: str) -> RetryPolicy:
        return RetryPolicy(
            name=name,
            base_s=self.retry_base_s,
            cap_s=self.retry_cap_s,
            max_attempts=self.retry_attempts,
            max_total_s=self.deadline_s,
            attempt_timeout_s=min(2.0, self.deadline_s),
        )

    def reconnect(self, name: str) -> Reconnect | None:
        """The herd channels' option: None leaves gRPC's own defaults in force."""
        return self.tuned if name == "tuned" else None

    def backoff(self, name: str) -> dict[str, float]:
        if name == "default":
            return dict(GRPC_DEFAULT_BACKOFF)
        return {
            "initial_ms": self.tuned.initial_backoff_ms,
            "multiplier": GRPC_DEFAULT_BACKOFF["multiplier"],
            "jitter": GRPC_DEFAULT_BACKOFF["jitter"],
            "max_ms": self.tuned.max_backoff_ms,
            "min_connect_timeout_ms": self.tuned.min_connect_timeout_ms,
        }

    def herd_bound_s(self) -> float:
        """No herd can run longer than this (every request is bounded by its deadline)."""
        per_request = self.think_s + self.deadline_s + LOST_MARGIN_S
        return CONNECT_TIMEOUT_S + self.requests_per_user * per_request


# -- reconnect attempts from channelz -------------------------------------------------------------

# channelz is served by grpcio's core; grpcio-channelz only wraps these same calls in a servicer.
_cygrpc: Any = importlib.import_module("grpc._cython.cygrpc")
_MAX_PAGES = 1000


def _parse_timestamp(text: str) -> int:
    """channelz's RFC 3339 timestamp (`2026-01-02T03:04:05.123456789Z`) in ns since the epoch."""
    whole, _, fraction = text.rstrip("Z").partition(".")
    seconds = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    return int(seconds) * 1_000_000_000 + int((fraction or "0")[:9].ljust(9, "0"))


def _channelz(get: Callable[[int], str], node_id: int) -> dict[str, Any]:
    """One channelz node as JSON; {} if it is gone (a channel closed between two reads)."""
    try:
        text = get(node_id)
    except ValueError:
        return {}
    doc: dict[str, Any] = json.loads(text)
    return doc


def _channels_to(target: str) -> set[int]:
    """channelz ids of this process's live channels whose target is `target`."""
    names = {target, f"dns:///{target}"}
    found: set[int] = set()
    start = 0
    for _ in range(_MAX_PAGES):
        page = json.loads(_cygrpc.channelz_get_top_channels(start))
        for channel in page.get("channel", []):
            channel_id = int(channel["ref"]["channelId"])
            start = max(start, channel_id + 1)
            if channel["data"].get("target") in names:
                found.add(channel_id)
        if page.get("end", True):
            break
    return found


class ReconnectProbe:
    """Collects the CONNECTING transitions of the herd channels' subchannels.

    `attach()` (when the herd is released) takes the channels to `target` that did not exist at
    construction: the herd's. `poll()` reads their subchannels' traces and keeps every CONNECTING
    event once. channelz renders an event's time afresh on every read, a few ns apart from one
    read to the next, so an event is recognised by its subchannel and a time within
    `SAME_EVENT_NS` of one already kept (gRPC spaces one subchannel's attempts >= 100 ms apart)."""

    SAME_EVENT_NS = 10_000_000

    def __init__(self, target: str) -> None:
        self.target = target
        self._before = _channels_to(target)
        self.channel_ids: list[int] = []
        self.attempts: dict[int, list[int]] = {}  # subchannel id -> sorted CONNECTING times, ns
        self.gaps = 0
        self._newest: dict[int, int] = {}

    def attach(self) -> int:
        self.channel_ids = sorted(_channels_to(self.target) - self._before)
        return len(self.channel_ids)

    def poll(self) -> None:
        for channel_id in self.channel_ids:
            channel = _channelz(_cygrpc.channelz_get_channel, channel_id).get("channel", {})
            for ref in channel.get("subchannelRef", []):
                self._read_subchannel(int(ref["subchannelId"]))

    def _read_subchannel(self, subchannel_id: int) -> None:
        doc = _channelz(_cygrpc.channelz_get_subchannel, subchannel_id)
        events = doc.get("subchannel", {}).get("data", {}).get("trace", {}).get("events", [])
        if not events:
            return
        times = [_parse_timestamp(e["timestamp"]) for e in events]
        newest = self._newest.get(subchannel_id)
        if newest is not None and min(times) > newest + self.SAME_EVENT_NS:
            self.gaps += 1  # nothing we saw last time is left: events may have gone unread
        self._newest[subchannel_id] = max(times)
        kept = self.attempts.setdefault(subchannel_id, [])
        for event, t_ns in zip(events, times, strict=True):
            if event.get("description", "").startswith(_CONNECTING) and not self._known(kept, t_ns):
                bisect.insort(kept, t_ns)

    def _known(self, kept: list[int], t_ns: int) -> bool:
        i = bisect.bisect_left(kept, t_ns - self.SAME_EVENT_NS)
        return i < len(kept) and kept[i] <= t_ns + self.SAME_EVENT_NS

    def run(self, stop: threading.Event, bound_s: float) -> None:
        """Polls every PROBE_POLL_S until `stop` is set or `bound_s` has passed."""
        deadline = time.monotonic() + bound_s
        while not stop.wait(PROBE_POLL_S) and time.monotonic() < deadline:
            self.poll()

    def attempt_times(self) -> list[int]:
        return sorted(t for times in self.attempts.values() for t in times)


def _seconds(t_ns: int | None, since_ns: int) -> float | None:
    return None if t_ns is None else round((t_ns - since_ns) / 1e9, 3)


@dataclass
class _Instants:
    """What the scenario did, and when (wall-clock ns)."""

    kill_ns: int = 0
    restore_ns: int = 0
    listening_ns: int | None = None  # the restarted cache accepted a TCP connection
    probe_channels: int = 0

    @property
    def back_ns(self) -> int:
        """When the cache was back: listening, or (if that was never seen) the restore's start."""
        return self.listening_ns if self.listening_ns is not None else self.restore_ns


async def _variant(
    config: ReconnectStormConfig,
    reconnect: str,
    policy: str,
    on_progress: ProgressFn | None,
) -> dict[str, Any]:
    async with scenario_stack("reconnect-storm") as stack:
        return await _run_variant(stack, config, reconnect, policy, on_progress)


async def _run_variant(
    stack: LocalStack,
    config: ReconnectStormConfig,
    reconnect: str,
    policy: str,
    on_progress: ProgressFn | None,
) -> dict[str, Any]:
    stop = threading.Event()  # ends the probe threads
    threads: list[asyncio.Future[Any]] = []
    herd: asyncio.Task[HerdResult] | None = None
    try:
        info = await in_thread(stack.up)
        cache = info.services["cache"]
        herd_config = HerdConfig(
            target=cache.grpc,
            users=config.users,
            keys=config.keys,
            distribution="uniform",
            key_prefix="product:",
            requests_per_user=config.requests_per_user,
            think_s=config.think_s,
            channels=config.channels,
            policy=config.policy(policy),
            reconnect=config.reconnect(reconnect),
            seed=config.seed,
        )
        probe = ReconnectProbe(cache.grpc)
        released = asyncio.Event()
        instants = _Instants()

        def on_release() -> None:
            instants.probe_channels = probe.attach()
            released.set()

        herd = asyncio.create_task(run_herd(herd_config, HerdHooks(on_progress, on_release)))
        poller = asyncio.ensure_future(asyncio.to_thread(probe.run, stop, config.herd_bound_s()))
        threads.append(poller)
        await _until_released(released, herd)
        await asyncio.sleep(config.kill_after_s)
        instants.kill_ns = time.time_ns()
        await in_thread(stack.kill, "cache")
        await asyncio.sleep(config.outage_s)
        instants.restore_ns = time.time_ns()
        listen = asyncio.ensure_future(
            asyncio.to_thread(wait_listening, cache.grpc, READY_TIMEOUT_S, stop)
        )
        threads.append(listen)
        await in_thread(stack.restore, "cache")
        instants.listening_ns = await listen
        try:
            result = await asyncio.wait_for(asyncio.shield(herd), config.herd_bound_s())
        except TimeoutError as exc:
            raise RuntimeError(f"the herd did not end within {config.herd_bound_s():g}s") from exc
    finally:
        stop.set()
        if herd is not None:
            herd.cancel()
            await asyncio.gather(herd, return_exceptions=True)
        await asyncio.gather(*threads, return_exceptions=True)  # they end within a poll
    failure = poller.exception()
    if failure is not None:
        raise RuntimeError(f"the reconnect probe failed: {failure!r}") from failure
    return _row(config, reconnect, policy, result, instants, probe)


def _row(
    config: ReconnectStormConfig,
    reconnect: str,
    policy: str,
    result: HerdResult,
    instants: _Instants,
    probe: ReconnectProbe,
) -> dict[str, Any]:
    """One variant's result: figures relative to the cache's return, timelines to the release."""
    summary = result.summary()
    t0, kill, back = result.release_ns, instants.kill_ns, instants.back_ns
    ends = [o.done_ns for o in result.outcomes] + result.attempt_times_ns + [t0]
    count = max(1, math.ceil((max(ends) - t0) / (BIN_S * 1e9)))
    reconnects = [t for t in probe.attempt_times() if t >= kill]
    ok_times = sorted(o.done_ns for o in result.outcomes if o.code is None)
    first_ok = next((t for t in ok_times if t >= back), None)
    ready: dict[int, int] = {}
    for t, channel, state in result.channel_events:
        if state == "READY" and t >= kill and channel not in ready:
            ready[channel] = t
    all_ready = max(ready.values()) if len(ready) == config.channels else None
    attempt_bins = bins(result.attempt_times_ns, t0, count)
    return {
        "reconnect": reconnect,
        "backoff": config.backoff(reconnect),
        "policy": policy,
        "channels": config.channels,
        "users": config.users,
        "requests": summary["sent"],
        "ok": summary["ok"],
        "time_to_first_success_s": _seconds(first_ok, back),
        "time_to_all_channels_ready_s": _seconds(all_ready, back),
        "channel_ready_s": [_seconds(ready.get(c), back) for c in range(config.channels)],
        "reconnect_attempts": len(reconnects),
        "reconnect_attempts_in_outage": sum(1 for t in reconnects if t < back),
        "herd_attempts": len(result.attempt_times_ns),
        "herd_attempts_peak_per_100ms": max(attempt_bins[bin_index(kill, t0) :] or [0]),
        "failed_after_restore": sum(
            1 for o in result.outcomes if o.code is not None and o.done_ns >= back
        ),
        "client_errors": summary["errors"],
        "lost": summary["lost"],
        "wrong_values": summary["wrong_values"],
        "probe_channels": instants.probe_channels,
        "probe_subchannels": len(probe.attempts),
        "probe_gaps": probe.gaps,
        "seconds": round(result.seconds, 3),
        "timeline": {
            "bin_s": BIN_S,
            "t0_ns": t0,
            "outage": [_seconds(kill, t0), _seconds(back, t0)],
            "restore_started_s": _seconds(instants.restore_ns, t0),
            "first_success_s": _seconds(first_ok, t0),
            "all_channels_ready_s": _seconds(all_ready, t0),
            "reconnects": bins(reconnects, t0, count),
            "herd_attempts": attempt_bins,
            "served": bins(ok_times, t0, count),
        },
    }


async def _until_released(released: asyncio.Event, herd: asyncio.Task[Any]) -> None:
    """Returns when the barrier opens; raises the herd's error if it fails before that."""
    waiter = asyncio.create_task(released.wait())
    try:
        await asyncio.wait({waiter, herd}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if not released.is_set():
        herd.result()
        raise RuntimeError("the herd ended before it was released")


def _describe(row: dict[str, Any]) -> str:
    def secs(value: float | None) -> str:
        return "never" if value is None else f"{value:.2f}s"

    errors = ", ".join(f"{code} {n:,}" for code, n in sorted(row["client_errors"].items()))
    return (
        f"  first success {secs(row['time_to_first_success_s'])} after the restart, "
        f"all {row['channels']} channels READY {secs(row['time_to_all_channels_ready_s'])}; "
        f"{row['reconnect_attempts']} reconnect attempts "
        f"({row['reconnect_attempts_in_outage']} during the outage); "
        f"{row['herd_attempts']:,} herd attempts (peak {row['herd_attempts_peak_per_100ms']:,} "
        f"per 100ms after the kill); {row['ok']:,}/{row['requests']:,} ok; errors: "
        f"{errors or 'none'}; failed after the restart {row['failed_after_restore']:,}; "
        f"lost {row['lost']}"
    )


async def run_reconnect_storm(
    config: ReconnectStormConfig,
    emit: Callable[[str], None],
    progress: ProgressFactory | None = None,
) -> dict[str, Any]:
    """Runs every (reconnect backoff, herd policy) variant; returns the JSON document."""
    problems = config.problems()
    if problems:
        raise ValueError("; ".join(problems))
    rows = []
    for reconnect in config.reconnects:
        for policy in config.policies:
            title = f"reconnect {reconnect} / herd policy {policy}"
            backoff = config.backoff(reconnect)
            emit(
                f"{title}: {config.users:,} users on {config.channels} channels, cache killed "
                f"{config.kill_after_s:g}s after release for {config.outage_s:g}s; reconnect "
                f"backoff {backoff['initial_ms']:g}ms initial, {backoff['max_ms']:g}ms max"
            )
            row = await _variant(config, reconnect, policy, progress(title) if progress else None)
            emit(_describe(row))
            rows.append(row)
    return {
        "scenario": SCENARIO,
        "config": {
            "users": config.users,
            "channels": config.channels,
            "keys": config.keys,
            "outage_s": config.outage_s,
            "kill_after_s": config.kill_after_s,
            "think_s": config.think_s,
            "requests_per_user": config.requests_per_user,
            "retry": {
                "base_s": config.retry_base_s,
                "cap_s": config.retry_cap_s,
                "attempts": config.retry_attempts,
                "deadline_s": config.deadline_s,
            },
            "seed": config.seed,
        },
        "variants": rows,
    }


# -- plot -----------------------------------------------------------------------------------------


def plot_reconnect_storm(doc: Mapping[str, Any], path: Path) -> None:
    """One row per variant on a shared time axis (seconds since the herd's release): herd attempts
    (grey bars) and served responses (blue line) per 100 ms on the left axis, reconnect attempts
    per 100 ms (red stems) on the right, the outage shaded, first success and all-READY marked."""
    variants = doc["variants"]
    fig = new_figure(12, 2.7 * len(variants) + 0.9)
    axes = fig.subplots(len(variants), 1, sharex=True, squeeze=False)
    for ax, row in zip(axes[:, 0], variants, strict=True):
        line = row["timeline"]
        bin_s = line["bin_s"]
        xs = [i * bin_s for i in range(len(line["herd_attempts"]))]
        ax.bar(xs, line["herd_attempts"], width=bin_s, align="edge", color="#b8c2cc", label="herd")
        ax.step(xs, line["served"], where="post", color="#1f5fa8", lw=0.8, label="served")
        ax.set_ylabel("per 100 ms")
        ax.set_ylim(0, max(1, *line["herd_attempts"]) * 1.35)  # room for the legend
        start, end = line["outage"]
        if start is not None and end is not None:
            ax.axvspan(start, end, color="#e8489a", alpha=0.12, label="cache down")
        if line["first_success_s"] is not None:
            ax.axvline(line["first_success_s"], color="#138a36", lw=1.6, label="first success")
        if line["all_channels_ready_s"] is not None:
            ax.axvline(
                line["all_channels_ready_s"], color="#138a36", ls="--", lw=1.2, label="all READY"
            )
        twin = ax.twinx()
        hits = [(x + bin_s / 2, n) for x, n in zip(xs, line["reconnects"], strict=True) if n]
        if hits:
            centres, counts = zip(*hits, strict=True)
            twin.vlines(centres, 0, counts, color="#c8102e", lw=1.4)
            twin.plot(centres, counts, "o", color="#c8102e", ms=3, label="reconnect attempts")
        twin.set_ylim(0, max(2, *line["reconnects"]) * 1.35)
        twin.set_ylabel("reconnects\nper 100 ms", color="#c8102e")

        def secs(value: float | None) -> str:
            return "never" if value is None else f"+{value:.2f} s"

        ax.set_title(
            f"{row['reconnect']} reconnect backoff ({row['backoff']['initial_ms']:g} ms initial, "
            f"{row['backoff']['max_ms'] / 1000:g} s max), herd retry {row['policy']}: "
            f"first success {secs(row['time_to_first_success_s'])}, all {row['channels']} "
            f"channels READY {secs(row['time_to_all_channels_ready_s'])}, "
            f"{row['reconnect_attempts']} reconnects, "
            f"{row['failed_after_restore']:,} failed after the restart, lost {row['lost']}",
            fontsize=8.5,
            loc="left",
        )
        handles, labels = ax.get_legend_handles_labels()
        twin_handles, twin_labels = twin.get_legend_handles_labels()
        ax.legend(
            handles + twin_handles, labels + twin_labels, loc="upper right", fontsize=7, ncol=6
        )
    axes[-1, 0].set_xlabel("seconds since the herd's release")
    config = doc["config"]
    fig.suptitle(
        f"Reconnect storm: {config['users']:,} users on {config['channels']} channels, cache "
        f"SIGKILLed for {config['outage_s']:g} s (+ restart); times are from the moment the "
        "cache listens again"
    )
    save(fig, path)
