"""The admin plane's lock: a shared token, required whenever a server listens beyond loopback.

The admin plane is everything that changes or reveals the lab's state rather than reading data:
the `DbAdmin`, `CacheAdmin` and `WireAdmin` services (latency, errors, capacity, coalescing, event
records, wire faults) and `Cache.Expire`. On 127.0.0.1 / ::1 only local processes can reach it
and no token is needed. A server bound anywhere else refuses to start without a token
(`HERDLAB_ADMIN_TOKEN`), and then answers admin calls that do not carry it (metadata
`x-herdlab-admin-token`) with UNAUTHENTICATED. When a token is set it is required on every
bind. Tokens are compared in constant time. Data-plane calls (`Db.Get`, `Cache.Get`), health and
reflection stay open.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

import grpc

TOKEN_ENV = "HERDLAB_ADMIN_TOKEN"
TOKEN_METADATA = "x-herdlab-admin-token"
ADMIN_PREFIXES = (
    "/herdlab.v1.DbAdmin/",
    "/herdlab.v1.CacheAdmin/",
    "/herdlab.v1.WireAdmin/",
    "/herdlab.v1.ChaosLog/",
)
ADMIN_METHODS = frozenset({"/herdlab.v1.Cache/Expire"})
ADMIN_TIMEOUT_S = 10.0  # how long a controller waits for one admin call


class AdminError(Exception):
    """An admin call failed; the message names the service, the code and the reason."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_admin_method(method: str) -> bool:
    return method in ADMIN_METHODS or method.startswith(ADMIN_PREFIXES)


def token_problem(host: str, token: str | None) -> str | None:
    """Why a server on `host` with `token` must not start, or None."""
    if token is not None and not token:
        return f"{TOKEN_ENV} is set but empty"
    if not is_loopback(host) and not token:
        return (
            f"listening on {host} exposes the admin plane beyond this machine: "
            f"set {TOKEN_ENV} (callers send it as '{TOKEN_METADATA}' metadata)"
        )
    return None


async def require_token(context: grpc.aio.ServicerContext[Any, Any], token: bytes) -> None:
    """Aborts the call with UNAUTHENTICATED unless its metadata carries `token`."""
    sent = b""
    for key, value in context.invocation_metadata() or ():
        if key == TOKEN_METADATA:
            sent = value.encode() if isinstance(value, str) else value
    if not hmac.compare_digest(sent, token):
        await context.abort(
            grpc.StatusCode.UNAUTHENTICATED,
            f"admin call without a valid '{TOKEN_METADATA}' metadata entry",
        )


def admin_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """The metadata a client sends on admin calls."""
    return ((TOKEN_METADATA, token),) if token else ()
