"""The wire-fault proxy: TCP on 127.0.0.1 in front of a lab service, with faults on its bytes.

A `Link` listens on one address and, for each connection accepted, opens one to its upstream
(the real service) and pumps bytes both ways: client to service is `upstream`, service to client
is `downstream`. Faults ("toxics", `chaos.wire.toxics`) are put in force and removed at runtime;
each applies to one direction or both, to a share of the connections (`toxicity`), and until it
is removed or its deadline passes. Those cross-cutting rules live here, once, in the pipe:

    read chunk -> for each fault in force on this direction that touches this connection:
                      chunk = fault.pipe(chunk)   (delay it, cut it, drop it)
               -> write what is left

With no fault in force on a direction the chunk is written as read (the hit path: see
BENCHMARKS.md for its cost against a direct connection). A fault that acts on whole connections
(`hold`: reset, timeout) runs once per connection it meets, as a task the link cancels when the
fault is removed. A fault that decides which new connections reach the service (`gate`:
admit, stage) is asked before the proxy connects upstream, and told how long the service took to
answer each connection it let through (`chaos.wire.gate`); direction does not apply to it.
Expiry is the proxy's own timer: a fault given `for_ms` is removed at its deadline even if
whoever added it is gone.

Why not toxiproxy itself: it is a Go binary the lab would have to install and start; the lab's
proxy is a few hundred lines of asyncio with the same shape, started by `chaos up --proxy` like
the other services, and its faults are typed values checked where they are added.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from chaos.wire.connection import Connection, reset
from chaos.wire.gate import Clock, Gate
from chaos.wire.stats import LinkStats
from chaos.wire.toxics import TOXICS
from chaos.wire.toxics.base import Toxic

LINK_NAMES = ("db", "cache")  # the lab's services a proxy can stand in front of
TARGET_LINK = "target"  # the user's own service (`chaos proxy`, an experiment's `[target]`)
ALL_LINKS = (*LINK_NAMES, TARGET_LINK)
STREAMS = ("upstream", "downstream", "both")
DIRECTIONS = ("upstream", "downstream")
READ_BYTES = 64 * 1024
CONNECT_TIMEOUT_S = 5.0
MAX_FAULTS = 64
MAX_CONNECTIONS = 60_000
# The accept queue of a link's listener: as deep as gRPC's own servers ask for (the host's
# `somaxconn`, 4096 here), so the proxy in front of a service queues no less than it would.
BACKLOG = 4096
MAX_FOR_MS = 86_400_000.0


@dataclass(frozen=True)
class FaultSpec:
    """A fault as asked for: which link and direction, which toxic, how widely, how long."""

    name: str
    link: str
    toxic: Toxic
    stream: str = "both"
    toxicity: float = 1.0
    for_ms: float = 0.0
    once: bool = False

    def problems(self) -> list[str]:
        found = []
        if self.stream not in STREAMS:
            found.append(f"stream must be one of {', '.join(STREAMS)}, got {self.stream!r}")
        if not 0 < self.toxicity <= 1:
            found.append(f"toxicity must be in (0, 1], got {self.toxicity:g}")
        if not 0 <= self.for_ms <= MAX_FOR_MS:
            found.append(f"for must be in [0, {MAX_FOR_MS:g}] ms, got {self.for_ms:g}")
        if self.once and not self.toxic.holds:
            found.append(f"once applies to faults on whole connections, not {self.toxic.kind}")
        if not self.name or len(self.name) > 100:
            found.append("name must be 1 to 100 characters")
        return found

    def applies_to(self, direction: str) -> bool:
        return self.stream in ("both", direction)


def parse_fault(
    name: str,
    link: str,
    kind: str,
    attributes: dict[str, float],
    *,
    stream: str = "both",
    toxicity: float = 1.0,
    for_ms: float = 0.0,
    once: bool = False,
) -> FaultSpec:
    """The fault these values describe; ValueError naming the first problem."""
    toxic = TOXICS.get(kind).parse(attributes)
    spec = FaultSpec(
        name or f"{link}-{kind}", link, toxic, stream or "both", toxicity, for_ms, once
    )
    problems = spec.problems()
    if problems:
        raise ValueError(problems[0])
    return spec


@dataclass
class Installed:
    spec: FaultSpec
    added_at: float  # wall clock
    expires_at: float | None  # wall clock
    timer: asyncio.TimerHandle | None = None
    gate: Gate | None = None  # an admission fault's state while in force


@dataclass
class Link:
    """One proxied service: `listen` -> `upstream`, and the faults in force on it."""

    name: str
    upstream_host: str
    upstream_port: int
    rng: random.Random = field(default_factory=random.Random)
    clock: Clock = time.monotonic  # what admission gates read (tests inject their own)
    faults: dict[str, Installed] = field(default_factory=dict)
    connections: set[Connection] = field(default_factory=set)
    listen: str = ""
    # The faults in force per direction, in the order they were added (rebuilt on change).
    active: dict[str, tuple[Installed, ...]] = field(
        default_factory=lambda: {d: () for d in DIRECTIONS}
    )
    # Set whenever faults, connections or dropped bytes change (for whoever waits on them).
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    stats: LinkStats = field(default_factory=LinkStats)  # what it saw of its connections
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def upstream(self) -> str:
        return f"{self.upstream_host}:{self.upstream_port}"

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._accept, host, port, backlog=BACKLOG)
        bound = self._server.sockets[0].getsockname()
        self.listen = f"{bound[0]}:{bound[1]}"

    async def stop(self) -> None:
        """Stops listening, removes every fault, closes every connection and waits for its
        tasks: nothing of the link is left running or open."""
        if self._server is not None:
            self._server.close()
        for name in list(self.faults):
            self.remove(name)
        pending = []
        for conn in list(self.connections):
            conn.close()
            pending += [*conn.pumps, *conn.holds.values()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        # Handlers end once their pumps have; one still connecting upstream is cancelled.
        for handler in list(self._handlers):
            handler.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    # -- faults ---------------------------------------------------------------------------------

    def add(self, spec: FaultSpec) -> Installed:
        if spec.name in self.faults:
            raise ValueError(f"a fault named {spec.name!r} is already in force")
        if len(self.faults) >= MAX_FAULTS:
            raise ValueError(f"at most {MAX_FAULTS} faults per link")
        now = time.time()
        installed = Installed(spec, now, now + spec.for_ms / 1000 if spec.for_ms else None)
        installed.gate = spec.toxic.gate(self.clock, self.changed.set)
        if spec.for_ms:
            loop = asyncio.get_running_loop()
            installed.timer = loop.call_later(spec.for_ms / 1000, self.remove, spec.name)
        self.faults[spec.name] = installed
        self._rebuild()
        self.changed.set()
        for conn in self.connections:
            self._meet(conn, installed)
        return installed

    def remove(self, name: str) -> Installed:
        installed = self.faults.pop(name)
        if installed.timer is not None:
            installed.timer.cancel()
        if installed.gate is not None:
            installed.gate.open()
        self._rebuild()
        self.changed.set()
        for conn in self.connections:
            hold = conn.holds.pop(name, None)
            if hold is not None:
                hold.cancel()
            conn.touched.pop(name, None)
            conn.counters.pop(id(installed.spec.toxic), None)
        return installed

    async def apply_once(self, spec: FaultSpec) -> Installed:
        """Puts a holding fault on the connections open now, waits for it to act on each, then
        removes it (bounded by the fault's own time plus a second)."""
        installed = self.add(spec)
        holds = [c.holds[spec.name] for c in self.connections if spec.name in c.holds]
        bound = installed.spec.toxic.longest_hold_s() + 1.0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*holds, return_exceptions=True), bound)
        if spec.name in self.faults:
            self.remove(spec.name)
        return installed

    def _rebuild(self) -> None:
        faults = list(self.faults.values())
        self.active = {d: tuple(f for f in faults if f.spec.applies_to(d)) for d in DIRECTIONS}

    def _touches(self, conn: Connection, installed: Installed) -> bool:
        """Whether `installed` applies to `conn`: drawn once per connection (toxicity)."""
        name = installed.spec.name
        touched = conn.touched.get(name)
        if touched is None:
            touched = installed.spec.toxicity >= 1 or self.rng.random() < installed.spec.toxicity
            conn.touched[name] = touched
        return touched

    def _meet(self, conn: Connection, installed: Installed) -> None:
        if installed.spec.toxic.holds and self._touches(conn, installed):
            conn.holds[installed.spec.name] = asyncio.create_task(
                installed.spec.toxic.hold(conn, self.rng)
            )

    # -- the pipe -------------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            # Only `stop` cancels a handler; asyncio's server would log a cancelled one.
            writer.transport.abort()
        finally:
            self._handlers.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.count("accepted")
        if len(self.connections) >= MAX_CONNECTIONS:
            self.stats.count("refused")
            writer.close()
            return
        gates = await self._admitted(writer)
        if gates is None:
            # Refused, or held past its wait: reset, as a connection the server refused.
            self.stats.count("refused")
            reset(writer)
            return
        connecting = time.monotonic()
        try:
            upstream = await asyncio.wait_for(
                asyncio.open_connection(self.upstream_host, self.upstream_port), CONNECT_TIMEOUT_S
            )
        except (OSError, TimeoutError):
            # The service behind is down: the client's connection is reset, as a refused one.
            self.stats.count("refused")
            reset(writer)
            return
        self.stats.count("passed")
        conn = Connection((reader, writer), upstream)
        conn.connecting_at, conn.unanswered = connecting, gates
        self.connections.add(conn)
        self.changed.set()
        try:
            for installed in self.faults.values():
                self._meet(conn, installed)
            conn.pumps = [
                asyncio.create_task(self._pump(conn, "upstream", reader, upstream[1])),
                asyncio.create_task(self._pump(conn, "downstream", upstream[0], writer)),
            ]
            done, _ = await asyncio.wait(conn.pumps, return_when=asyncio.FIRST_COMPLETED)
            if conn.pumps[0] in done and conn.answered_at is None:
                self.stats.count("abandoned")  # the client left before the service answered
            conn.close()
            await asyncio.gather(*conn.pumps, return_exceptions=True)
        finally:
            conn.close()
            for pump in conn.pumps:
                pump.cancel()
            holds = list(conn.holds.values())
            for hold in holds:
                hold.cancel()
            await asyncio.gather(*conn.pumps, *holds, return_exceptions=True)
            for side in (writer, upstream[1]):
                with contextlib.suppress(OSError, ConnectionError):
                    await side.wait_closed()
            self.connections.discard(conn)
            self.changed.set()

    async def _admitted(self, writer: asyncio.StreamWriter) -> list[Gate] | None:
        """The gates in force that let this new connection pass (each drawn against its
        toxicity), once all have; None as soon as one refuses it."""
        peer = writer.get_extra_info("peername")
        name = f"{peer[0]}:{peer[1]}" if peer else ""
        passed = []
        for installed in list(self.faults.values()):
            gate = installed.gate
            if gate is None or not (
                installed.spec.toxicity >= 1 or self.rng.random() < installed.spec.toxicity
            ):
                continue
            if not await gate.admit(name):
                return None
            passed.append(gate)
        return passed

    def _read_size(self, faults: Iterable[Installed]) -> int:
        sizes = [s for f in faults if (s := f.spec.toxic.read_size()) is not None]
        return min([READ_BYTES, *sizes])

    async def _pump(
        self,
        conn: Connection,
        direction: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """Copies `direction` until EOF or an error on either side, through the faults in force."""
        with contextlib.suppress(OSError, ConnectionError):
            while not conn.closed:
                faults = self.active[direction]
                chunk: bytes | None = await reader.read(
                    self._read_size(faults) if faults else READ_BYTES
                )
                if not chunk:
                    break
                conn.active_at = time.monotonic()
                if conn.answered_at is None and direction == "downstream":
                    conn.answered_at = conn.active_at
                    self.stats.count("answered")
                    for gate in conn.unanswered:
                        gate.answered(conn.active_at - conn.connecting_at)
                    conn.unanswered = []
                size = len(chunk)
                for installed in self.active[direction]:
                    if chunk is None:
                        break
                    if self._touches(conn, installed):
                        chunk = await installed.spec.toxic.pipe(chunk, conn, self.rng)
                if chunk is None or len(chunk) < size:
                    conn.dropped += size - len(chunk or b"")
                    self.changed.set()
                if chunk and not conn.closed:
                    writer.write(chunk)
                    await writer.drain()
                if conn.close_pending:
                    conn.close()


def installed_faults(links: Iterable[Link]) -> list[tuple[Link, Installed]]:
    return [(link, f) for link in links for f in link.faults.values()]
