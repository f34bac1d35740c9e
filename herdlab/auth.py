"""The admin plane's lock: a shared token, required whenever a server listens beyond loopback.

The admin plane is everything that changes or reveals the lab's state rather than reading data:
the `DbAdmin` and `CacheAdmin` services (latency, errors, capacity, coalescing, event records) and
`Cache.Expire`. On 127.0.0.1 / ::1 only local processes can reach it and no token is needed. A
server bound anywhere else refuses to start without a token (`HERDLAB_ADMIN_TOKEN`), and then
answers admin calls that do not carry it (metadata `x-herdlab-admin-token`) with
UNAUTHENTICATED. When a token is set it is required on every bind. Tokens are compared in
constant time. Data-plane calls (`Db.Get`, `Cache.Get`), health and reflection stay open.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

TOKEN_ENV = "HERDLAB_ADMIN_TOKEN"
TOKEN_METADATA = "x-herdlab-admin-token"
ADMIN_PREFIXES = ("/herdlab.v1.DbAdmin/", "/herdlab.v1.CacheAdmin/", "/herdlab.v1.ChaosLog/")
ADMIN_METHODS = frozenset({"/herdlab.v1.Cache/Expire"})


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


async def _deny(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    await context.abort(
        grpc.StatusCode.UNAUTHENTICATED,
        f"admin call without a valid '{TOKEN_METADATA}' metadata entry",
    )


_DENY = grpc.unary_unary_rpc_method_handler(_deny)

if TYPE_CHECKING:
    ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:  # generic only in the type stubs
    ServerInterceptor = grpc.aio.ServerInterceptor


class AdminTokenInterceptor(ServerInterceptor):
    def __init__(self, token: str) -> None:
        self._token = token.encode()

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        if is_admin_method(handler_call_details.method):
            sent = b""
            for key, value in handler_call_details.invocation_metadata or ():
                if key == TOKEN_METADATA:
                    sent = value.encode() if isinstance(value, str) else value
            if not hmac.compare_digest(sent, self._token):
                return _DENY
        return await continuation(handler_call_details)


def admin_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """The metadata a client sends on admin calls."""
    return ((TOKEN_METADATA, token),) if token else ()
