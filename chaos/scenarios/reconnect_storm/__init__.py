"""Reconnect storm: SIGKILL the cache while the herd holds M channels, restore it, and watch the
channels find their way back.

The folder's `experiment.toml` says what runs; this module is its kind (the document's shape:
`scenario`, `config`, a row per variant under `rows`, also `variants`), its table and figure, and
the typed configuration `chaos scenario reconnect-storm` and the tests build it from.

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

- reconnect attempts: every CONNECTING transition of a herd channel's subchannel, from gRPC's
  channelz trace (the `channelz` observer, `chaos/engine/observers/channelz.py`);
- the outage: the trial's own timing of the cache, from just before the SIGKILL to the instant
  the restarted cache accepts TCP connections again. gRPC's health check is not used for this
  instant: its channel has the default backoff too and would see the restart late;
- `time_to_first_success_s`: from that instant to the first successful herd response;
  `time_to_all_channels_ready_s`: to the moment the last of the M channels is READY again
  (`chaos/engine/measures/cache_return.py`);
- herd attempts, served responses and reconnect attempts per 100 ms: the retry waves, and
  recovery (`reconnect_timeline`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chaos.engine import spec
from chaos.engine.bounds import out_of_range
from chaos.engine.herd import CONNECT_TIMEOUT_S, LOST_MARGIN_S
from chaos.engine.herd_settings import RECONNECTS, backoff_of
from chaos.engine.kinds import Column, Kind, Plot, Row, from_options
from chaos.engine.model import Experiment
from chaos.engine.registry import KINDS
from chaos.scenarios.reconnect_storm.plot import plot_reconnect_storm
from herdlab.config import format_duration
from herdlab.retry import POLICY_NAMES, RetryPolicy, parse_policy_names

SCENARIO = "reconnect-storm"
RECONNECT_NAMES = tuple(RECONNECTS)
# Each attempt of a user's request is given at most this long (its deadline bounds the whole).
ATTEMPT_TIMEOUT_S = 2.0


def trial_limit_s(
    requests_per_user: int, think_s: float, deadline_s: float, fault_at_s: float, outage_s: float
) -> float:
    """No trial runs longer than this: the herd's bound (every request is bounded by its
    deadline) plus the fault's start (after the release) and its length, within what an
    experiment may ask."""
    per_request = think_s + deadline_s + LOST_MARGIN_S
    herd_s = CONNECT_TIMEOUT_S + requests_per_user * per_request
    return min(spec.MAX_LIMIT_S, herd_s + fault_at_s + outage_s)


def channel_problems(users: int, channels: int) -> list[str]:
    """What is wrong with a herd of `users` on `channels` channels (each its own connection)."""
    found = out_of_range("users", users, "1..100000")
    if not 1 <= channels <= min(users, 1024):
        found.append(f"channels must be in 1..min(users, 1024), got {channels}")
    return found


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
    retry_base_s: float = 0.1
    retry_cap_s: float = 2.0
    retry_attempts: int = 6
    deadline_s: float = 10.0  # each request's total budget, retries included
    seed: int = 42

    def problems(self) -> list[str]:
        found = channel_problems(self.users, self.channels)
        found += out_of_range("keys", self.keys, "1..10000000")
        found += out_of_range("outage", self.outage_s, "(0, 600s]")
        found += out_of_range("kill-after", self.kill_after_s, "[0, 60s]")
        found += out_of_range("think time", self.think_s, "(0, 60s]")
        requests = out_of_range("requests per user", self.requests_per_user, "1..10000")
        found += requests
        if (
            not requests
            and self.requests_per_user * self.think_s <= self.kill_after_s + self.outage_s
        ):
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
        try:
            RetryPolicy(
                name="exponential",
                base_s=self.retry_base_s,
                cap_s=self.retry_cap_s,
                max_attempts=self.retry_attempts,
                max_total_s=self.deadline_s,
                attempt_timeout_s=min(ATTEMPT_TIMEOUT_S, self.deadline_s),
            )
        except ValueError as exc:
            found.append(str(exc))
        return found

    @property
    def limit_s(self) -> float:
        return trial_limit_s(
            self.requests_per_user, self.think_s, self.deadline_s, self.kill_after_s, self.outage_s
        )

    def params(self) -> dict[str, Any]:
        """The shipped experiment's params for this configuration."""
        return {
            "users": self.users,
            "channels": self.channels,
            "keys": self.keys,
            "outage": format_duration(self.outage_s),
            "kill_after": format_duration(self.kill_after_s),
            "think": format_duration(self.think_s),
            "requests": self.requests_per_user,
            "reconnects": list(self.reconnects),
            "policies": list(self.policies),
            "retry_base": format_duration(self.retry_base_s),
            "retry_cap": format_duration(self.retry_cap_s),
            "retry_attempts": self.retry_attempts,
            "deadline": format_duration(self.deadline_s),
            "seed": self.seed,
            "limit": f"{math.ceil(self.limit_s)}s",  # whole seconds: no exponent for long runs
        }

    def command(self) -> str:
        """The `chaos` command line that runs this scenario (as far as the CLI exposes it)."""
        return (
            f"chaos scenario reconnect-storm --users {self.users} --channels {self.channels} "
            f"--outage {self.outage_s:g}s --policies {','.join(self.policies)} --seed {self.seed}"
        )


def _swept(experiment: Experiment, key: str, default: str) -> tuple[str, ...]:
    return next((tuple(map(str, v)) for k, v in experiment.variants if k == key), (default,))


def config_of(experiment: Experiment) -> ReconnectStormConfig:
    """The storm's parameters as an experiment states them (for the document's `config`)."""
    herd = experiment.herd
    kill_at = next((s.at_s for s in experiment.timeline if s.do == "kill cache"), None)
    outage = next((s.after_s for s in experiment.timeline if s.do == "restore cache"), None)
    return ReconnectStormConfig(
        users=herd.users,
        channels=herd.channels,
        keys=herd.keys,
        outage_s=outage or 0.0,
        kill_after_s=kill_at or 0.0,
        think_s=herd.think_s,
        requests_per_user=herd.requests,
        policies=_swept(experiment, "herd.policy", herd.policy),
        reconnects=_swept(experiment, "herd.reconnect", herd.reconnect),
        retry_base_s=herd.retry_base_s,
        retry_cap_s=herd.retry_cap_s,
        retry_attempts=herd.retry_attempts,
        deadline_s=herd.deadline_s,
        seed=herd.seed or 0,
    )


def _config(experiment: Experiment) -> dict[str, Any]:
    config = config_of(experiment)
    return {
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
        "seed": experiment.herd.seed,
    }


def _announce(experiment: Experiment, variant: Mapping[str, Any]) -> str:
    config = config_of(experiment)
    herd = experiment.settings_for(variant)[2]
    backoff = backoff_of(herd.reconnect)
    return (
        f"reconnect {herd.reconnect} / herd policy {herd.policy}: {config.users:,} users on "
        f"{config.channels} channels, cache killed {config.kill_after_s:g}s after release for "
        f"{config.outage_s:g}s; reconnect backoff {backoff['initial_ms']:g}ms initial, "
        f"{backoff['max_ms']:g}ms max"
    )


def narrated_s(value: float | None) -> str:
    """A time as narration says it (`never`: None)."""
    return "never" if value is None else f"{value:.2f}s"


def error_counts(row: Row) -> str:
    """The row's client errors by gRPC code, as narration says them (`none`)."""
    return ", ".join(f"{code} {n:,}" for code, n in sorted(row["client_errors"].items())) or "none"


def _describe(row: Row) -> list[str]:
    return [
        f"  first success {narrated_s(row['time_to_first_success_s'])} after the restart, "
        f"all {row['channels']} channels READY {narrated_s(row['time_to_all_channels_ready_s'])}; "
        f"{row['reconnect_attempts']} reconnect attempts "
        f"({row['reconnect_attempts_in_outage']} during the outage); "
        f"{row['herd_attempts']:,} herd attempts (peak {row['herd_attempts_peak_per_100ms']:,} "
        f"per 100ms after the kill); {row['ok']:,}/{row['requests']:,} ok; errors: "
        f"{error_counts(row)}; failed after the restart {row['failed_after_restore']:,}; "
        f"lost {row['lost']}"
    ]


COLUMNS = (
    Column("reconnect", format="text"),
    Column("policy", format="text"),
    Column("users"),
    Column("channels"),
    Column("time_to_first_success_s"),
    Column("time_to_all_channels_ready_s"),
    Column("reconnect_attempts"),
    Column("herd_attempts"),
    Column("failed_after_restore"),
    Column("client_errors", format="sum"),
    Column("lost"),
)
READING = (
    "Each row is one (reconnect backoff, herd retry policy) pair on its own fresh "
    "stack, 100 ms per bar. The shaded band is the outage (SIGKILL until the cache listens "
    "again); grey bars are herd attempts, the blue line the responses served, red stems the "
    "channels' connection attempts (from gRPC's channelz). Times in the table are from the "
    "moment the cache listens again. With gRPC's default backoff (1 s, x1.6, up to 120 s) the "
    "channels try again at ~1, 2.6, 5.2, 9.3, 15.8 s after the kill: the cache is back but "
    "every channel still in backoff fails its calls fast with UNAVAILABLE (grey bars with no "
    "blue) until its next attempt, seconds later. Tuned (100 ms, at most 1 s) every channel "
    "is READY within about a second."
)


def configure(values: Mapping[str, Any]) -> ReconnectStormConfig:
    """`chaos scenario reconnect-storm`'s options."""
    policies = tuple(parse_policy_names(values["policies"]))
    return from_options(ReconnectStormConfig, values, policies=policies)


KIND = KINDS.register(
    SCENARIO,
    Kind(
        SCENARIO,
        rows_key="variants",
        fields=(
            "reconnect",
            ("backoff", "reconnect_backoff"),
            ("policy", "herd_policy"),
            "channels",
            ("users", "clients"),
            "requests",
            "ok",
            "time_to_first_success_s",
            "time_to_all_channels_ready_s",
            "channel_ready_s",
            "reconnect_attempts",
            "reconnect_attempts_in_outage",
            "herd_attempts",
            "herd_attempts_peak_per_100ms",
            "failed_after_restore",
            ("client_errors", "errors"),  # by gRPC code
            "lost",
            "wrong_values",
            "probe_channels",
            "probe_subchannels",
            "probe_gaps",
            "seconds",
            ("timeline", "reconnect_timeline"),
        ),
        config=_config,
        announce=_announce,
        describe=_describe,
        title="Reconnect storm: the cache dies under a herd holding M channels and comes back",
        columns=COLUMNS,
        plots=(Plot(plot_reconnect_storm, "Herd attempts, responses and reconnects per 100 ms"),),
        reading=READING,
        configure=configure,
    ),
)
