"""The herd's settings: who asks, for what, how often, retrying how.

Declared once with `herdlab.settings`, like the services' settings, so an experiment file's
`[herd]` section, sweeps, the flags of `chaos herd` and error messages read one declaration
(names, defaults, bounds). `config(target)` turns them into the herd's `HerdConfig`: the one place
a herd is built from what a user wrote.

With `rate` set the herd is an open loop (`chaos.engine.herd.OpenLoop`): arrivals at `rate` per
second for `duration`, at most `max_in_flight` at once; `users`, `requests` and `think` are then
unused. Without it the herd is the burst.

Connections: `connections` (C) is the name for how many connections the users are spread over,
each its own gRPC channel; `channels` is its older name, kept for the files and commands that use
it, and bounded to 1024. When both are given `connections` wins.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from chaos.engine.herd import (
    CLIENTS,
    DEFAULT_MAX_IN_FLIGHT,
    DISTRIBUTIONS,
    MAX_CONNECTIONS,
    MAX_IN_FLIGHT,
    MAX_RATE_PER_S,
    HerdConfig,
    OpenLoop,
    balanced,
    parse_rate,
)
from herdlab.grpcutil import Keepalive, Reconnect
from herdlab.guards import GUARD_USAGE
from herdlab.retry import POLICY_NAMES, RetryPolicy
from herdlab.settings import Settings, setting

# How a herd runs: the lab's asyncio herd in the calling process (over `--processes` herd
# processes when its connections need them), or on a Locust master and workers
# (`chaos.engine.herd_workers`).
ENGINES = ("asyncio", "locust")
MAX_PROCESSES = 64  # herd processes of one burst (`herd_fleet`)
MAX_WORKERS = 64

# Channel reconnect backoffs a herd can use: gRPC's own (no option set), or tuned for a lab
# (100 ms first, at most 1 s; a 1 s minimum connect timeout keeps slow handshakes).
RECONNECTS: dict[str, Reconnect | None] = {
    "default": None,
    "tuned": Reconnect(initial_backoff_ms=100, max_backoff_ms=1000, min_connect_timeout_ms=1000),
}
# The keepalive of a herd over several replicas with health checking and no --keepalive: a replica
# that stops answering is noticed within about 2 s (the services' `PingPolicy` accepts pings every
# 500 ms).
REPLICAS_KEEPALIVE = Keepalive(time_ms=1000, timeout_ms=1000)
# gRPC core's connection backoff when no channel option is set (doc/connection-backoff.md):
# attempts ~1, 2.6, 5.2, 9.3, 15.8 s after a loss, each +-20%.
GRPC_DEFAULT_BACKOFF: dict[str, float] = {
    "initial_ms": 1000,
    "multiplier": 1.6,
    "jitter": 0.2,
    "max_ms": 120_000,
    "min_connect_timeout_ms": 20_000,
}


def backoff_of(reconnect: str) -> dict[str, float]:
    """The connection backoff a herd's channels use under `reconnect` (a `RECONNECTS` name)."""
    option = RECONNECTS[reconnect]
    if option is None:
        return dict(GRPC_DEFAULT_BACKOFF)
    return {
        **GRPC_DEFAULT_BACKOFF,
        "initial_ms": option.initial_backoff_ms,
        "max_ms": option.max_backoff_ms,
        "min_connect_timeout_ms": option.min_connect_timeout_ms,
    }


@dataclass(frozen=True)
class HerdSettings(Settings):
    """The herd, declared once: the `[herd]` keys of experiment files and the flags of `chaos
    herd` (`herdlab.settings.options`) read the same names, defaults and bounds."""

    users: int = setting(
        1000,
        "users",
        "int",
        "Virtual users, released together (the burst; not with --rate).",
        lo=1,
        hi=100_000,
    )
    keys: int = setting(1, "keys", "int", "Distinct keys the users draw from.", lo=1, hi=10_000_000)
    distribution: str = setting(
        "hot",
        "distribution",
        "choice",
        "How requests pick keys: one hot key, uniform, zipf, round-robin, or unique (a fresh key "
        "PREFIXi for request i, never asked twice in a run).",
        choices=DISTRIBUTIONS,
    )
    zipf_s: float = setting(1.1, "zipf_s", "float", "Zipf exponent.", lo=0.01, hi=10)
    key_prefix: str = setting("key-", "key_prefix", "text", "Keys are PREFIX0..K-1.")
    requests: int = setting(
        1, "requests", "int", "Requests per user, one after another.", lo=1, hi=10_000
    )
    think_s: float = setting(
        0.0, "think", "duration", "Pause between one user's requests.", lo=0.0, hi=60.0
    )
    rate_per_s: float | None = setting(
        None,
        "rate",
        "float",
        "Open loop: R new requests per second (200/s or 200) on a fixed schedule, however slow "
        "the answers; needs a duration, replaces users, requests and think [default: none, the "
        "burst].",
        lo=0.001,
        hi=MAX_RATE_PER_S,
        read=parse_rate,
        metavar="R/s",
    )
    # Bounded by the open loop it sets (`OpenLoop.problems`: (0, 1h]), checked when there is one.
    duration_s: float = setting(
        60.0, "duration", "duration", "Open loop: how long arrivals keep coming (at most 1h)."
    )
    max_in_flight: int = setting(
        DEFAULT_MAX_IN_FLIGHT,
        "max_in_flight",
        "int",
        "Open loop: requests in flight at most; an arrival beyond is skipped and counted.",
        lo=1,
        hi=MAX_IN_FLIGHT,
    )
    channels: int = setting(
        8, "channels", "int", "gRPC channels (TCP connections) the users share.", lo=1, hi=1024
    )
    connections: int | None = setting(
        None,
        "connections",
        "int",
        "Connections (each its own gRPC channel) the users are spread over, users / C each, at "
        "most users; replaces --channels, its older name bounded to 1024 [default: --channels].",
        lo=1,
        hi=MAX_CONNECTIONS,
    )
    deadline_s: float = setting(
        10.0,
        "deadline",
        "duration",
        "Each request's deadline, retries included.",
        lo=0.001,
        hi=3600,
    )
    policy: str = setting(
        "none",
        "policy",
        "choice",
        "The users' retry policy towards the cache.",
        choices=POLICY_NAMES,
    )
    retry_base_s: float = setting(0.1, "retry_base", "duration", "Backoff base.", lo=0.001, hi=600)
    retry_cap_s: float = setting(5.0, "retry_cap", "duration", "Backoff cap.", lo=0.001, hi=600)
    retry_attempts: int = setting(6, "retry_attempts", "int", "Attempts at most.", lo=1, hi=100)
    attempt_timeout_s: float | None = setting(
        None,
        "attempt_timeout",
        "duration",
        "Deadline of each attempt [default: the request's deadline].",
        lo=0.001,
        hi=3600,
    )
    seed: int | None = setting(None, "seed", "seed", "Seed for keys and jitter.")
    guards: str = setting(
        "none",
        "guards",
        "guards",
        "Overload guard around the users' calls, repeatable to compose a set in order (each a "
        f"guard or a '+'-joined set): {GUARD_USAGE}, recommended.",
        flag_name="--guard",
    )
    client: str = setting(
        "herd",
        "client",
        "choice",
        "Where the users' retries run: the herd's own loop (herd), or herdlab.client's "
        "interceptors on the herd's channels (cures: the same policy and guards, one deadline "
        "per request, server pushback honoured, gRPC's retries off), as a service using the "
        "library would.",
        choices=CLIENTS,
    )
    reconnect: str = setting(
        "default",
        "reconnect",
        "choice",
        "Channel reconnect backoff: gRPC's default or tuned (100 ms, at most 1 s).",
        choices=tuple(RECONNECTS),
    )
    connect_timeout_s: float = setting(
        0.0,
        "connect_timeout",
        "duration",
        "The least time a channel gives one connection attempt (TCP, TLS and HTTP/2 setup) "
        "before it abandons it and backs off (0: as --reconnect says; gRPC's default is 20 s).",
        lo=0.0,
        hi=3600,
    )
    reconnect_initial_s: float = setting(
        0.0,
        "reconnect_initial",
        "duration",
        "The channels' first reconnect backoff (0: as --reconnect says; gRPC's default 1 s, "
        "then x1.6 with +-20% jitter, both fixed in gRPC core).",
        lo=0.0,
        hi=3600,
    )
    reconnect_max_s: float = setting(
        0.0,
        "reconnect_max",
        "duration",
        "The channels' largest reconnect backoff (0: as --reconnect says; gRPC's default 120 s).",
        lo=0.0,
        hi=3600,
    )
    keepalive_s: float = setting(
        0.0,
        "keepalive",
        "duration",
        "Keepalive ping on each channel after this long without activity (0: off, gRPC's "
        "default): a half-open connection is then noticed within keepalive + timeout.",
        lo=0.0,
        hi=3600,
    )
    keepalive_timeout_s: float = setting(
        20.0,
        "keepalive_timeout",
        "duration",
        "How long a keepalive ping may wait for its ACK before the connection is closed.",
        lo=0.001,
        hi=3600,
    )
    keepalive_without_calls: bool = setting(
        True, "keepalive_without_calls", "bool", "Ping idle channels too."
    )
    stay_connected: bool = setting(
        False,
        "stay_connected",
        "bool",
        "Reconnect a channel as soon as it loses its connection, as a client holding a stream "
        "or a pool of connections does, not at its next call (gRPC's default: a channel that "
        "lost its connection waits IDLE).",
    )
    health_check: bool = setting(
        True,
        "health_check",
        "bool",
        "Over several replicas: send only to replicas whose health watch says SERVING, with "
        "keepalive pings (1 s, ACK within 1 s, unless --keepalive is set) so a replica that "
        "stops answering is taken out of the rotation; a single target is unchanged.",
    )
    rounds: bool = setting(
        False,
        "rounds",
        "bool",
        "Run the herd round after round until the timeline has run (steady traffic for a soak); "
        "each round is users x requests, with a seed of its own.",
    )

    engine: str = setting(
        "asyncio",
        "engine",
        "choice",
        "What runs the herd: the lab's asyncio herd in this process (asyncio), or a Locust master "
        "and local workers (locust; needs the locust extra) [default: locust when --workers is "
        "given].",
        choices=ENGINES,
    )
    workers: int | None = setting(
        None,
        "workers",
        "int",
        "Locust workers the herd is shared over, released together; implies --engine locust "
        "[default: 1 with the locust engine].",
        lo=1,
        hi=MAX_WORKERS,
    )
    hosts: bool = setting(
        False,
        "hosts",
        "bool",
        "Run each Locust worker as a host of its own: a network namespace the lab makes, with a "
        "veth pair and a 198.18.0.0/15 address, removed after the run (plain processes, said in "
        "one line, where namespaces cannot be made).",
    )

    processes: int | None = setting(
        None,
        "processes",
        "int",
        "Herd processes the burst's users and connections are spread over, released together "
        "(`chaos herd --processes`): in an experiment the herd then runs apart from the "
        "controller, whose loop keeps observing [default: 1, in the controller's process].",
        lo=1,
        hi=MAX_PROCESSES,
    )

    @property
    def on_locust(self) -> bool:
        """The herd runs on Locust workers: `engine = "locust"`, or workers given."""
        return self.engine == "locust" or self.workers is not None

    @property
    def worker_count(self) -> int:
        return self.workers or 1

    @property
    def channel_count(self) -> int:
        """Channels (connections) the herd opens: `connections` when given, else `channels`,
        of which a burst needs no more than its users."""
        if self.connections is not None:
            return self.connections
        return self.channels if self.rate_per_s is not None else min(self.channels, self.users)

    def keepalive(self) -> Keepalive | None:
        """The channels' keepalive, or None when off."""
        if self.keepalive_s <= 0:
            return None
        return Keepalive(
            time_ms=max(1, round(self.keepalive_s * 1000)),
            timeout_ms=max(1, round(self.keepalive_timeout_s * 1000)),
            without_calls=self.keepalive_without_calls,
        )

    def _replicas_keepalive(self, target: str) -> Keepalive | None:
        """The keepalive health checking needs over several replicas when none is set."""
        if not self.health_check or not balanced(target):
            return None
        return REPLICAS_KEEPALIVE

    def open_loop(self) -> OpenLoop | None:
        """The open loop these settings describe, or None for the burst."""
        if self.rate_per_s is None:
            return None
        return OpenLoop(self.rate_per_s, self.duration_s, self.max_in_flight)

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            name=self.policy,
            base_s=self.retry_base_s,
            cap_s=self.retry_cap_s,
            max_attempts=self.retry_attempts,
            max_total_s=self.deadline_s,
            attempt_timeout_s=min(self.attempt_timeout_s or self.deadline_s, self.deadline_s),
            seed=self.seed,
        )

    def problems(self) -> list[str]:
        found = super().problems()
        try:
            self.retry_policy()
        except ValueError as exc:
            found.append(str(exc))
        plan = self.open_loop()
        if plan is None and self.connections is not None and self.connections > self.users:
            found.append(
                f"connections must be at most users ({self.users:,}), got {self.connections:,}"
            )
        if self.hosts and not self.on_locust:
            found.append("hosts are for Locust workers; give workers (or engine locust)")
        if self.on_locust and self.rounds:
            found.append("engine locust and rounds do not go together; choose one")
        if self.processes is not None and self.processes > 1:
            apart = [
                name
                for name, used in (
                    ("rate (an open loop)", plan is not None),
                    ("rounds", self.rounds),
                    ("engine locust", self.on_locust),
                )
                if used
            ]
            if apart:
                found.append(f"processes and {apart[0]} do not go together; choose one")
            elif self.processes > self.channel_count:
                found.append(
                    f"processes must be at most the connections ({self.channel_count:,}), "
                    f"got {self.processes}"
                )
        if plan is not None:
            found += plan.problems()
            if self.rounds:
                found.append("rate (an open loop) and rounds do not go together; choose one")
        return found

    def reconnect_options(self) -> Reconnect | None:
        """The channels' connection backoff: `reconnect`'s, with the times given here instead
        (None: gRPC's own, no option set)."""
        chosen = RECONNECTS[self.reconnect]
        given = {
            "min_connect_timeout_ms": self.connect_timeout_s,
            "initial_backoff_ms": self.reconnect_initial_s,
            "max_backoff_ms": self.reconnect_max_s,
        }
        changed = {name: round(s * 1000) for name, s in given.items() if s}
        if not changed:
            return chosen
        return dataclasses.replace(chosen or Reconnect(), **changed)

    def config(self, target: str, key_prefix: str | None = None) -> HerdConfig:
        return HerdConfig(
            target=target,
            users=self.users,
            keys=self.keys,
            distribution=self.distribution,
            zipf_s=self.zipf_s,
            key_prefix=self.key_prefix if key_prefix is None else key_prefix,
            requests_per_user=self.requests,
            think_s=self.think_s,
            channels=self.channel_count,
            open_loop=self.open_loop(),
            policy=self.retry_policy(),
            reconnect=self.reconnect_options(),
            keepalive=self.keepalive() or self._replicas_keepalive(target),
            health_check=self.health_check,
            stay_connected=self.stay_connected,
            seed=self.seed,
            guards=self.guards,
            client=self.client,
        )
