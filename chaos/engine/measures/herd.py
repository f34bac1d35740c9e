"""What the herd's users saw: values, typed errors, lost requests, latency, keys served."""

from __future__ import annotations

from typing import Any

from chaos.engine.measures.base import measure
from chaos.engine.observations import Observations


def keys_asked(obs: Observations) -> int:
    """Distinct keys the users asked for (their requests that ended, with a value or an
    error): the keys a storm needed, the fresh keys of an open loop."""
    return len({o.key for o in obs.herd_result.outcomes})


def _summary(obs: Observations) -> dict[str, Any]:
    return obs.herd_result.summary()


@measure("lost")
def lost(obs: Observations) -> int:
    """Requests that ended with neither a value nor a typed error (always 0)."""
    return int(_summary(obs)["lost"])


@measure("errors")
def errors(obs: Observations) -> dict[str, int]:
    """Typed errors the users got, by gRPC code."""
    return dict(_summary(obs)["errors"])


@measure("error_causes")
def error_causes(obs: Observations) -> dict[str, dict[str, Any]]:
    """Why requests failed: per gRPC code, how many and the first one's message."""
    summary = _summary(obs)
    return {
        code: {"count": count, "first": summary["error_messages"].get(code, "")}
        for code, count in sorted(summary["errors"].items())
    }


@measure("client_errors")
def client_errors(obs: Observations) -> int:
    """Typed errors the users got, all codes."""
    return sum(_summary(obs)["errors"].values())


@measure("wrong_values")
def wrong_values(obs: Observations) -> int:
    """Values that were not their key's value at their version (always 0)."""
    return int(_summary(obs)["wrong_values"])


@measure("sources")
def sources(obs: Observations) -> dict[str, int]:
    """Values by where the cache took them from: HIT, MISS, COALESCED, STALE."""
    return dict(_summary(obs)["sources"])


@measure("latency_s")
def latency_s(obs: Observations) -> dict[str, float]:
    """p50, p99 and max of a request's time to its value or error, retries included."""
    return dict(_summary(obs)["latency_s"])


@measure("release_spread_s")
def release_spread_s(obs: Observations) -> float:
    """From the barrier's opening to the last user's first send."""
    return round(obs.herd_result.release_spread_s, 3)


@measure("requests")
def requests(obs: Observations) -> int:
    return int(_summary(obs)["sent"])


@measure("ok")
def ok(obs: Observations) -> int:
    return int(_summary(obs)["ok"])


@measure("keys_served")
def keys_served(obs: Observations) -> int:
    """Distinct keys that some user got a value for."""
    return len({o.key for o in obs.herd_result.outcomes if o.code is None})


@measure("seconds")
def seconds(obs: Observations) -> float:
    """From the herd's release to its last request's end."""
    return round(obs.herd_result.seconds, 3)
