"""Partition: the cache is partitioned on the wire (or killed) while the herd holds M channels,
then healed (or restored); with and without keepalive pings on the herd's channels.

The folder's `experiment.toml` says what runs; this module is its kind
(the document's `rows`, one per (fault, keepalive) variant) and the typed configuration `chaos
scenario partition` builds it from. The run is the reconnect storm's (`reconnect_storm/`) with
the wire proxy in front of the cache (`[stack] proxy = "cache"`) and the fault swept
(`"wire.fault" = ["kill", "partition"]`): its measures (reconnect attempts from the channelz
observer, the 100 ms timeline its plot draws) count from the fault's start to its heal whichever
fault it was. What a partition adds (`chaos/engine/measures/fault_notice.py`): when the herd first
saw an error, channels that stayed READY on dead connections, and when all were READY again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chaos.engine.bounds import out_of_range
from chaos.engine.kinds import Column, Kind, Plot, Row, from_options
from chaos.engine.model import Experiment
from chaos.engine.registry import KINDS
from chaos.scenarios.partition.plot import plot_partition
from chaos.scenarios.reconnect_storm import (
    channel_problems,
    error_counts,
    narrated_s,
    trial_limit_s,
)
from chaos.wire.settings import FAULTS
from herdlab.config import format_duration

SCENARIO = "partition"


@dataclass(frozen=True)
class PartitionConfig:
    users: int = 200
    channels: int = 8
    keys: int = 100
    outage_s: float = 10.0  # how long the partition (or the kill) holds
    fault_after_s: float = 1.0  # after the herd's release
    think_s: float = 1.0
    requests_per_user: int = 25
    faults: tuple[str, ...] = FAULTS
    keepalive_s: float = 1.0  # the keepalive variant's ping interval (the other has none)
    keepalive_timeout_s: float = 1.0
    deadline_s: float = 5.0
    seed: int = 42

    def problems(self) -> list[str]:
        found = channel_problems(self.users, self.channels)
        found += out_of_range("the partition", self.outage_s, "(0, 600s]", must="must last")
        found += out_of_range("keepalive", self.keepalive_s, "(0, 3600s]")
        found += out_of_range("keepalive timeout", self.keepalive_timeout_s, "(0, 3600s]")
        bad = [f for f in self.faults if f not in FAULTS]
        if not self.faults or bad:
            found.append(f"unknown or no fault {', '.join(bad)}; choose from {', '.join(FAULTS)}")
        if self.requests_per_user * self.think_s <= self.fault_after_s + self.outage_s:
            found.append(
                "the herd would end before the heal: requests x think time "
                f"({self.requests_per_user * self.think_s:g}s) must exceed "
                f"{self.fault_after_s + self.outage_s:g}s"
            )
        return found

    @property
    def limit_s(self) -> float:
        return trial_limit_s(
            self.requests_per_user, self.think_s, self.deadline_s, self.fault_after_s, self.outage_s
        )

    def params(self) -> dict[str, Any]:
        return {
            "users": self.users,
            "channels": self.channels,
            "keys": self.keys,
            "outage": format_duration(self.outage_s),
            "fault_after": format_duration(self.fault_after_s),
            "think": format_duration(self.think_s),
            "requests": self.requests_per_user,
            "faults": list(self.faults),
            # As the shipped file writes them, so its [[expect]] selectors match ("1s").
            "keepalives": ["0s", f"{self.keepalive_s:g}s"],
            "keepalive_timeout": format_duration(self.keepalive_timeout_s),
            "deadline": format_duration(self.deadline_s),
            "seed": self.seed,
            "limit": f"{math.ceil(self.limit_s)}s",
        }

    def command(self) -> str:
        return (
            f"chaos scenario partition --users {self.users} --channels {self.channels} "
            f"--for {self.outage_s:g}s --keepalive {self.keepalive_s:g}s "
            f"--faults {','.join(self.faults)} --seed {self.seed}"
        )


def _describe(row: Row) -> list[str]:
    return [
        f"  first error {narrated_s(row['noticed_s'])} after the fault; {row['stayed_ready']} of "
        f"{row['channels']} channels stayed READY through it; all READY again "
        f"{narrated_s(row['all_ready_after_heal_s'])} after the heal; {row['reconnect_attempts']} "
        f"reconnect attempts; {row['ok']:,}/{row['requests']:,} ok; errors: {error_counts(row)}; "
        f"lost {row['lost']}"
    ]


def _config(experiment: Experiment) -> dict[str, Any]:
    herd = experiment.herd
    return {
        "users": herd.users,
        "channels": herd.channels,
        "think_s": herd.think_s,
        "requests_per_user": herd.requests,
        "deadline_s": herd.deadline_s,
        "keepalive_timeout_s": herd.keepalive_timeout_s,
        "reconnect": herd.reconnect,
        "seed": herd.seed,
    }


def _stayed_ready(row: Row, rows: Sequence[Row]) -> str:
    return f"{row['stayed_ready']} of {row['channels']}"


COLUMNS = (
    Column("fault", format="text"),
    Column("keepalive", format="yesno"),
    Column("noticed_s"),
    Column("stayed_ready", format="text", value=_stayed_ready),
    Column("reconnect_attempts"),
    Column("all_ready_after_heal_s"),
    Column("client_errors", format="codes"),
    Column("lost"),
)
READING = (
    "Each row is one (fault, keepalive) pair on its own fresh stack with the wire "
    "proxy in front of the cache, on the reconnect storm's axes. A kill resets every "
    "connection: the herd sees UNAVAILABLE at once and reconnects at once. A partition "
    "leaves the connections open and silent: without keepalive every call waits out its "
    "deadline and the channels stay READY on dead connections; with keepalive pings the "
    "loss is noticed within the ping interval plus its timeout, the channels reconnect "
    "(each attempt into the partition hangs until the connect timeout) and are all READY "
    "again soon after the heal. `noticed_s` counts from the fault's start, "
    "`all_ready_after_heal_s` from the heal."
)


def configure(values: Mapping[str, Any]) -> PartitionConfig:
    """`chaos scenario partition`'s options: `--keepalive` is the ping interval and its timeout."""
    faults = tuple(f.strip() for f in values["faults"].split(",") if f.strip())
    return from_options(
        PartitionConfig, values, keepalive_s=values["keepalive_timeout"], faults=faults
    )


KIND = KINDS.register(
    SCENARIO,
    Kind(
        SCENARIO,
        fields=(
            "fault",
            "keepalive",
            "noticed_s",
            "reconnect_attempts",
            "all_ready_after_heal_s",
            "stayed_ready",
            ("client_errors", "errors"),  # by gRPC code
            "lost",
            "wrong_values",
            ("channels", "probe_channels"),
            "requests",
            "ok",
            "time_to_first_success_s",
            ("failed_after_heal", "failed_after_restore"),
            "reconnect_attempts_in_outage",
            "probe_gaps",
            ("timeline", "reconnect_timeline"),
        ),
        config=_config,
        describe=_describe,
        title="Partition vs kill: how soon the herd notices, how it comes back",
        columns=COLUMNS,
        plots=(Plot(plot_partition, "Herd attempts, responses and reconnects per 100 ms"),),
        reading=READING,
        configure=configure,
    ),
)
