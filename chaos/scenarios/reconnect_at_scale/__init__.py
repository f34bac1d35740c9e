"""Reconnect at scale: C connections (over TLS by default) dropped at once and coming back, with
and without the cures that bring a fleet back slowly.

The folder's `experiment.toml` says what runs: its rows are (trigger, cure) pairs named whole
(`row.trigger`, `row.cure`), each on a fresh stack with the wire proxy in front of the cache. This
module is its kind: the rows' fields (`chaos/engine/measures/connect_storm.py` computes them from
the proxy's record of the cache's link, the cache's CPU and the herd's channels), its table and
its figure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chaos.engine.kinds import Column, Kind, Plot, Row
from chaos.engine.model import Experiment
from chaos.engine.registry import KINDS
from chaos.scenarios.reconnect_at_scale.plot import plot_reconnect_at_scale, ready_text
from chaos.scenarios.reconnect_storm import error_counts

SCENARIO = "reconnect-at-scale"


def _config(experiment: Experiment) -> dict[str, Any]:
    herd = experiment.herd
    return {
        "connections": herd.channel_count,
        "tls": experiment.stack.tls,
        "think_s": herd.think_s,
        "requests_per_user": herd.requests,
        "deadline_s": herd.deadline_s,
        "seed": herd.seed,
        "params": dict(experiment.params),
    }


def _announce(experiment: Experiment, variant: Mapping[str, Any]) -> str:
    herd = experiment.settings_for(variant)[2]
    rows = f"{variant.get('row.trigger')} / {variant.get('row.cure')}: " if variant else ""
    return (
        f"{rows}{herd.channel_count:,} "
        f"connections{' over TLS' if experiment.stack.tls else ''}, connect timeout "
        f"{herd.connect_timeout_s or 20:g}s"
    )


DESCRIBED = (
    "handshake_capacity_per_s",
    "peak_connect_attempts_per_s",
    "peak_over_capacity",
    "peak_offered_per_s",
    "time_to_all_ready_s",
    "reconnect_over_ideal",
    "ideal_reconnect_s",
    "wasted_handshakes",
    "wasted_share",
    "server_cpu_peak",
    "failed_calls",
    "client_errors",
    "lost",
)


def _describe(row: Row) -> list[str]:
    """The row's figures in a line; a file that measures fewer of them (its own `measures`)
    gets none rather than a half-empty line."""
    if any(name not in row for name in DESCRIBED):
        return []
    return [
        f"  capacity {row['handshake_capacity_per_s']}/s; peak {row['peak_connect_attempts_per_s']}"
        f"/s to the cache ({row['peak_over_capacity']}x), {row['peak_offered_per_s']}/s offered; "
        f"all READY {ready_text(row)} after the storm (the ideal {row['ideal_reconnect_s']}s); "
        f"wasted handshakes {row['wasted_handshakes']} "
        f"({row['wasted_share']}); CPU peak {row['server_cpu_peak']}; failed calls "
        f"{row['failed_calls']:,} ({error_counts(row)}); lost {row['lost']}"
    ]


COLUMNS = (
    Column("trigger", format="text"),
    Column("cure", format="text"),
    Column("connections", format="num0"),
    Column("tls", format="yesno"),
    Column("handshake_capacity_per_s", "capacity/s", format="num0"),
    Column("peak_connect_attempts_per_s", "peak/s", format="num0"),
    Column("peak_over_capacity", "peak/cap", format="num2"),
    Column("time_to_all_ready_s", "all READY s", format="num2"),
    Column("ideal_reconnect_s", "ideal s", format="num2"),
    Column("reconnect_over_ideal", "x ideal", format="num2"),
    Column("wasted_handshakes", "wasted", format="num0"),
    Column("reconnect_peak_bin_share", "top 100ms", format="num2"),
    Column("failed_calls", "failed", format="num0"),
    Column("server_cpu_peak", "CPU peak", format="num2"),
    Column("lost", format="num0"),
)
READING = (
    "Each row is one (trigger, cure) pair on its own fresh stack, the wire proxy in front of the "
    "cache recording every connection. `capacity/s` is calibrated in the same row while the "
    "herd first connects, the proxy keeping a few handshakes in flight at the cache "
    "(`connect_pending`): the most connections the cache answered in one second with no client "
    "giving up. From the storm's start (the restarted cache listening, or the first connection "
    "aged out): `peak/s` the most connections that reached the cache in a second, `all READY s` "
    "until the last connection was READY again, `ideal s` connections / capacity, `wasted` "
    "handshakes the cache was handed for clients that had given up, `top 100ms` the share of "
    "the reconnects in the busiest 100 ms. In the figure: grey what the proxy was offered, blue "
    "what it passed to the cache, green what the cache answered, red the wasted ones, orange "
    "those the proxy reset without passing them (a gate refused them or held them past its "
    "hold, or the cache was down), dashed black the herd's connections that turned READY, "
    "purple the cache's CPU."
)

KIND = KINDS.register(
    SCENARIO,
    Kind(
        SCENARIO,
        fields=(
            "trigger",
            "cure",
            "connections",
            "tls",
            "handshake_capacity_per_s",
            "calibration_abandoned",
            "peak_connect_attempts_per_s",
            "peak_offered_per_s",
            "peak_over_capacity",
            "time_to_all_ready_s",
            "ideal_reconnect_s",
            "reconnect_over_ideal",
            "wasted_handshakes",
            "wasted_share",
            "reconnect_peak_bin_share",
            "reconnect_peak_over_mean",
            "failed_calls",
            ("client_errors", "errors"),  # by gRPC code
            "server_cpu_peak",
            "lost",
            "wrong_values",
            ("timeline", "connect_storm_timeline"),
        ),
        config=_config,
        announce=_announce,
        describe=_describe,
        title="Reconnect at scale: C connections come back at once, with and without the cures",
        columns=COLUMNS,
        plots=(Plot(plot_reconnect_at_scale, "Connections per second at the cache's door"),),
        reading=READING,
    ),
)
