"""The wire-fault proxy: TCP on 127.0.0.1 in front of a lab service, with faults on its bytes.

A `Link` listens on one address and, for each connection accepted, opens one to its upstream
(the real service) and pumps bytes both ways: client to service is `upstream`, service to client
is `downstream`. Faults ("toxics", `chaos.wire.toxics`) are put in force and removed at runtime;
each applies to one direction or both, to a share of the connections (`toxicity`), and until it
is removed or its deadline passes. Those cross-cutting rules live here, once, in the pipe:

    read chunk -> for each fault in force on this direction that touches this connection:
                      chunk = fault.pipe(chunk)   (delay it, cut it, drop it)
               -> write what is left

With no fault acting on a direction's bytes the chunk is written as read, straight from the
event loop's read callback, without the pump (`chaos.wire.connection`; the hit path: see
BENCHMARKS.md for its cost against a direct connection); a fault put in force on a live connection
takes effect from its next chunk. A fault that acts on whole connections
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

from chaos.wire.connection import Connection, Direction, Side, reset
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
CLOSE_TIMEOUT_S = 5.0  # longest a closed socket may take to flush before it is aborted
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
    # Per direction: no fault in force acts on its bytes, so chunks may go straight through.
    straight: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(DIRECTIONS, True))
    # Set whenever faults, connections or dropped bytes change (for whoever waits on them).
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    stats: LinkStats = field(default_factory=LinkStats)  # what it saw of its connections
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def upstream(self) -> str:
        return f"{self.upstream_host}:{self.upstream_port}"

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._client_side, host, port, backlog=BACKLOG)
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
        self.straight = {
            d: not any(_on_bytes(f.spec.toxic) for f in self.active[d]) for d in DIRECTIONS
        }

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

    def _client_side(self) -> Side:
        """The protocol of a client's socket; its handler starts once it is connected."""
        up, down = Direction("upstream"), Direction("downstream")
        return Side(up, down, lambda: self.straight["upstream"], self._start_handler)

    def _start_handler(self, client: Side) -> None:
        task = asyncio.create_task(self._accept(client))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _accept(self, client: Side) -> None:
        assert client.transport is not None
        try:
            await self._serve(client)
        except asyncio.CancelledError:
            # Only `stop` cancels a handler.
            client.transport.abort()

    async def _serve(self, client: Side) -> None:
        assert client.transport is not None
        self.stats.count("accepted")
        if len(self.connections) >= MAX_CONNECTIONS:
            self.stats.count("refused")
            client.transport.close()
            return
        gates = await self._admission(client)
        if gates is None:
            if client.ended.is_set():
                # Its client gave up while it was held: it left the line, and the service is
                # not handed its handshake.
                self.stats.count("left")
                client.transport.abort()
                self.changed.set()
                return
            # Refused, or held past its wait: reset, as a connection the server refused.
            self.stats.count("refused")
            reset(client.transport)
            return
        connecting = time.monotonic()
        loop = asyncio.get_running_loop()
        try:
            _, upstream = await asyncio.wait_for(
                loop.create_connection(
                    lambda: Side(client.into, client.out, lambda: self.straight["downstream"]),
                    self.upstream_host,
                    self.upstream_port,
                ),
                CONNECT_TIMEOUT_S,
            )
        except (OSError, TimeoutError):
            # The service behind is down: the client's connection is reset, as a refused one.
            self.stats.count("refused")
            for gate in gates:
                gate.unreachable()
            reset(client.transport)
            return
        self.stats.count("passed")
        conn = Connection(client, upstream)
        conn.connecting_at, conn.unanswered, conn.stats = connecting, gates, self.stats
        if upstream.heard:
            conn.answer()  # a service that speaks first answered before the twin was made
        self.connections.add(conn)
        self.changed.set()
        try:
            for installed in self.faults.values():
                self._meet(conn, installed)
            conn.pumps = [
                asyncio.create_task(self._pump(conn, direction)) for direction in DIRECTIONS
            ]
            done, _ = await asyncio.wait(conn.pumps, return_when=asyncio.FIRST_COMPLETED)
            if conn.pumps[0] in done and conn.answered_at is None:
                self.stats.count("abandoned")  # the client left before the service answered
            conn.close()
            await asyncio.gather(*conn.pumps, return_exceptions=True)
        finally:
            conn.close()
            conn.settle()
            for pump in conn.pumps:
                pump.cancel()
            holds = list(conn.holds.values())
            for hold in holds:
                hold.cancel()
            await asyncio.gather(*conn.pumps, *holds, return_exceptions=True)
            for side in (client, upstream):
                await _gone(side)
            self.connections.discard(conn)
            self.changed.set()

    async def _admission(self, client: Side) -> list[Gate] | None:
        """`_admitted` for `client`, given up as soon as the client leaves (EOF or closed)
        while it waits: None then, as for a refusal (a client that half-closes before the
        service has answered counts as gone, which no gRPC client does)."""
        assert client.transport is not None
        if not any(installed.gate is not None for installed in self.faults.values()):
            return []
        admission = asyncio.ensure_future(self._admitted(client.transport))
        left = asyncio.ensure_future(client.ended.wait())
        try:
            await asyncio.wait({admission, left}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            left.cancel()
            if not admission.done():
                admission.cancel()
            await asyncio.gather(admission, left, return_exceptions=True)
        gates = None if admission.cancelled() else admission.result()
        if gates is not None and client.ended.is_set():
            for gate in gates:
                gate.withdraw()  # passed as its client left: not handed to the service
            return None
        return gates

    async def _admitted(self, transport: asyncio.BaseTransport) -> list[Gate] | None:
        """The gates in force that let this new connection pass (each drawn against its
        toxicity), once all have; None as soon as one refuses it."""
        peer = transport.get_extra_info("peername")
        name = f"{peer[0]}:{peer[1]}" if peer else ""
        passed: list[Gate] = []
        try:
            for installed in list(self.faults.values()):
                gate = installed.gate
                if gate is None or not (
                    installed.spec.toxicity >= 1 or self.rng.random() < installed.spec.toxicity
                ):
                    continue
                if not await gate.admit(name):
                    break
                passed.append(gate)
            else:
                return passed
        except asyncio.CancelledError:
            for earlier in passed:
                earlier.withdraw()
            raise
        for earlier in passed:
            earlier.withdraw()  # let through there, refused here: not pending
        return None

    def _read_size(self, faults: Iterable[Installed]) -> int:
        sizes = [s for f in faults if (s := f.spec.toxic.read_size()) is not None]
        return min([READ_BYTES, *sizes])

    async def _pump(self, conn: Connection, direction: str) -> None:
        """Copies what `direction` buffered, through the faults in force, until EOF or the
        connection's end. Chunks that arrive while no fault acts on the direction's bytes (and
        nothing waits here) do not come here: they go straight through (`Side`)."""
        way = conn.directions[direction]
        sink = way.sink
        assert sink is not None
        while not conn.closed:
            faults = self.active[direction]
            chunk: bytes | None = await way.read(self._read_size(faults) if faults else READ_BYTES)
            if not chunk:
                break
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
                sink.write(chunk)
                await way.drain()
            if conn.close_pending:
                conn.close()


def _on_bytes(toxic: Toxic) -> bool:
    """Whether `toxic` acts on the bytes themselves (its own `pipe` or read size), so the
    directions it applies to go through the pump; faults on whole connections (`hold`) and on
    new ones (`gate`) leave the straight path as it is."""
    kind = type(toxic)
    return kind.pipe is not Toxic.pipe or kind.read_size is not Toxic.read_size


async def _gone(side: Side) -> None:
    """Until `side`'s socket is closed; aborted if it takes longer than `CLOSE_TIMEOUT_S`
    (a peer that reads nothing would hold a graceful close open forever)."""
    try:
        await asyncio.wait_for(side.gone.wait(), CLOSE_TIMEOUT_S)
    except TimeoutError:
        if side.transport is not None:
            side.transport.abort()
        await side.gone.wait()


def installed_faults(links: Iterable[Link]) -> list[tuple[Link, Installed]]:
    return [(link, f) for link in links for f in link.faults.values()]
