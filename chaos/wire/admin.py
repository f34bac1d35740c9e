"""The proxy's admin plane (`WireAdmin`, protos/wire.proto): add, list and remove faults, and
read an admission fault's counts (admitted, held, refused, expired, queued) as it is listed.

Server side: `WireAdminServicer` checks every request (`chaos.wire.proxy.parse_fault`) and
answers INVALID_ARGUMENT naming the problem, NOT_FOUND for a fault that is not in force. Client
side: `WireClient`, an `AdminClient` (`herdlab.admin_client`) as the services' admin client is:
bounded by `ADMIN_TIMEOUT_S` per call, raising `AdminError`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import grpc

from chaos.wire.gate import COUNTS
from chaos.wire.proxy import Installed, Link, parse_fault
from chaos.wire.toxics import TOXICS
from herdlab.admin_client import AdminClient
from herdlab.grpcutil import Context
from protos import wire_pb2, wire_pb2_grpc

T = TypeVar("T")


def new_fault(
    link: str,
    kind: str,
    attributes: Mapping[str, float],
    *,
    name: str = "",
    stream: str = "both",
    for_s: float | None = None,
) -> wire_pb2.Fault:
    """The request to put a fault in force, checked as the proxy will check it (ValueError
    naming the problem); named `<link>-<kind>` unless `name` is given. A momentary fault
    (`reset`) without a duration acts once."""
    fault = wire_pb2.Fault(
        name=name or f"{link}-{kind}",
        link=link,
        kind=kind,
        stream=stream,
        attributes=dict(attributes),
        for_ms=(for_s or 0.0) * 1000,
        once=TOXICS.get(kind).momentary and for_s is None,
    )
    parse_fault(
        fault.name,
        link,
        kind,
        dict(attributes),
        stream=stream,
        for_ms=fault.for_ms,
        once=fault.once,
    )
    return fault


def fault_message(installed: Installed) -> wire_pb2.Fault:
    spec = installed.spec
    return wire_pb2.Fault(
        name=spec.name,
        link=spec.link,
        kind=spec.toxic.kind,
        stream=spec.stream,
        toxicity=spec.toxicity,
        attributes=spec.toxic.attributes(),
        for_ms=spec.for_ms,
        once=spec.once,
        expires_at_unix=installed.expires_at or 0.0,
        added_at_unix=installed.added_at,
        counts=installed.gate.counts if installed.gate is not None else {},
    )


def fault_doc(fault: wire_pb2.Fault) -> dict[str, object]:
    """A fault as `chaos faults --json` shows it (with `counts` for an admission fault)."""
    doc: dict[str, object] = {
        "name": fault.name,
        "link": fault.link,
        "kind": fault.kind,
        "stream": fault.stream,
        "toxicity": fault.toxicity,
        "attributes": dict(fault.attributes),
        "expires_at": fault.expires_at_unix or None,
    }
    if fault.counts:
        doc["counts"] = {k: int(fault.counts[k]) for k in COUNTS if k in fault.counts}
    return doc


class WireAdminServicer(wire_pb2_grpc.WireAdminServicer):
    def __init__(self, links: dict[str, Link]) -> None:
        self.links = links

    def _faults(self) -> wire_pb2.FaultList:
        return wire_pb2.FaultList(
            faults=[fault_message(f) for link in self.links.values() for f in link.faults.values()]
        )

    async def AddFault(self, request: wire_pb2.Fault, context: Context) -> wire_pb2.Fault:
        link = self.links.get(request.link)
        if link is None:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"no link {request.link!r}; this proxy has: {', '.join(self.links) or 'none'}",
            )
            raise AssertionError("unreachable")
        try:
            spec = parse_fault(
                request.name,
                request.link,
                request.kind,
                dict(request.attributes),
                stream=request.stream,
                toxicity=request.toxicity if request.HasField("toxicity") else 1.0,
                for_ms=request.for_ms,
                once=request.once,
            )
            if any(spec.name in other.faults for other in self.links.values()):
                raise ValueError(f"a fault named {spec.name!r} is already in force")
            installed = await link.apply_once(spec) if spec.once else link.add(spec)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise AssertionError("unreachable") from exc
        return fault_message(installed)

    async def RemoveFault(self, request: wire_pb2.FaultRef, context: Context) -> wire_pb2.FaultList:
        for link in self.links.values():
            if request.name in link.faults:
                return wire_pb2.FaultList(faults=[fault_message(link.remove(request.name))])
        await context.abort(grpc.StatusCode.NOT_FOUND, f"no fault {request.name!r} is in force")
        raise AssertionError("unreachable")

    async def ListFaults(self, request: wire_pb2.WireEmpty, context: Context) -> wire_pb2.FaultList:
        return self._faults()

    async def ClearFaults(
        self, request: wire_pb2.WireEmpty, context: Context
    ) -> wire_pb2.FaultList:
        removed = [
            fault_message(link.remove(name))
            for link in self.links.values()
            for name in list(link.faults)
        ]
        return wire_pb2.FaultList(faults=removed)

    async def GetLinks(self, request: wire_pb2.WireEmpty, context: Context) -> wire_pb2.LinkList:
        return wire_pb2.LinkList(
            links=[
                wire_pb2.Link(
                    name=link.name,
                    listen=link.listen,
                    upstream=link.upstream,
                    connections=len(link.connections),
                    counts=link.stats.totals,
                    bins=[
                        wire_pb2.LinkBin(unix_ms=start_ms, counts=counts)
                        for start_ms, counts in link.stats.bins
                    ],
                )
                for link in self.links.values()
            ]
        )


class WireClient(AdminClient):
    """The proxy's admin client. Use as `async with WireClient(target) as wire`."""

    def __init__(self, target: str, token: str | None = None) -> None:
        super().__init__(token)
        self.target = target
        self._stub = wire_pb2_grpc.WireAdminStub(self._open(target))

    async def _wire(self, rpc: Callable[..., Awaitable[T]], request: Any) -> T:
        return await self._call(f"wire proxy at {self.target}", rpc, request)

    async def add(self, fault: wire_pb2.Fault) -> wire_pb2.Fault:
        return await self._wire(self._stub.AddFault, fault)

    async def remove(self, name: str) -> list[wire_pb2.Fault]:
        reply = await self._wire(self._stub.RemoveFault, wire_pb2.FaultRef(name=name))
        return list(reply.faults)

    async def faults(self) -> list[wire_pb2.Fault]:
        reply = await self._wire(self._stub.ListFaults, wire_pb2.WireEmpty())
        return list(reply.faults)

    async def heal(self, link: str) -> list[str]:
        """Removes every fault on `link`; returns their names."""
        names = [f.name for f in await self.faults() if f.link == link]
        for name in names:
            await self.remove(name)
        return names

    async def clear(self) -> list[wire_pb2.Fault]:
        reply = await self._wire(self._stub.ClearFaults, wire_pb2.WireEmpty())
        return list(reply.faults)

    async def links(self) -> list[wire_pb2.Link]:
        reply = await self._wire(self._stub.GetLinks, wire_pb2.WireEmpty())
        return list(reply.links)
