"""The client side of the lab's admin planes: what the controller's DB/cache admin and the wire
proxy's admin client share. Each call carries the admin token (`herdlab.auth`) and the admin
timeout, and a failed call is one `AdminError` naming where it went."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc

from herdlab.auth import ADMIN_TIMEOUT_S, TOKEN_ENV, AdminError, admin_metadata
from herdlab.grpcutil import aio_channel, channel_options

T = TypeVar("T")


class AdminClient:
    """The channels of one admin client, closed together at the end of `async with`."""

    def __init__(self, token: str | None, tls_ca: str | None = None) -> None:
        """`token` defaults to `HERDLAB_ADMIN_TOKEN`, which servers beyond loopback require.
        `tls_ca`: the services serve TLS, verified against this CA file (None: plaintext)."""
        self._metadata = admin_metadata(token if token is not None else os.environ.get(TOKEN_ENV))
        self._tls_ca = tls_ca
        self._channels: list[grpc.aio.Channel] = []

    def _open(self, target: str) -> grpc.aio.Channel:
        channel = aio_channel(target, channel_options(), self._tls_ca)
        self._channels.append(channel)
        return channel

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for channel in self._channels:
            await channel.close(grace=None)

    async def _call(self, where: str, rpc: Callable[..., Awaitable[T]], request: Any) -> T:
        """`rpc(request)` with the token and the admin timeout; AdminError naming `where` (the
        service and its address) when it fails."""
        try:
            return await rpc(request, timeout=ADMIN_TIMEOUT_S, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            raise AdminError(f"{where}: {exc.code().name}: {exc.details()}") from exc
