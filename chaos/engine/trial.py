"""One trial: one variant of an experiment on a fresh local stack, the lab's one run loop.

1. the stack starts with the variant's settings (`scenario_stack`: torn down whatever happens);
2. the setup actions run in order (e.g. warm every key, expire them all);
3. the herd is released; the timeline's steps run in order, each at its time, after the previous
   step, or when its condition holds (at the latest `within` after the release);
4. the trial ends when the herd has ended (every request has a value or a typed error), bounded
   by the experiment's limit. A herd in rounds (`[herd] rounds = true`, steady traffic for a
   soak) runs round after round until the timeline has run, then ends with its current round;
5. the services' exact records are read and everything is handed over as `Observations`.

With `[stack] replicas = R` the cache runs as `cache-1` .. `cache-R` (and with `store = "redis"`
a redis-server beside them): the herd spreads over them with round_robin, admin calls go to the
first, and each replica's records are read as the cache's are. A timeline step with a `variant`
runs only in the rows it selects.

The trial is a `chaos.engine.actions.base.Target`: killing, stopping (SIGTERM: a drain) and
restoring a service are the trial's (`kill`, `stop`, `restore`), and so are a partition on the
wire (`cut`: the `partition` action's fault goes through the stack's wire proxy, `[stack]
proxy`, `wire_admin`) and its `heal`, all timed as an `Outage`: a killed (stopped) service's
records are read just before the SIGKILL (SIGTERM),
and the instant it is back is taken from a TCP connect probe (the health check `restore` waits on
sees a restarted service up to a second late). A restore may add flags for that start only (the
DB's `--data-version`, so its values change).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from cache_service.settings import CacheSettings
from chaos.engine.herd import (
    HerdConfig,
    HerdHooks,
    HerdResult,
    ProgressFn,
    replicas_target,
    run_herd,
)
from chaos.engine.herd_fleet import FleetError, run_fleet
from chaos.engine.herd_rounds import HerdRounds
from chaos.engine.herd_settings import HerdSettings
from chaos.engine.herd_workers import run_on_workers
from chaos.engine.model import Experiment, Step
from chaos.engine.observations import DbCounters, JournalEntry, Observations, Outage
from chaos.engine.registry import CONDITIONS, OBSERVERS
from chaos.engine.trial_stack import in_thread, scenario_stack, wait_listening
from chaos.lab.admin import Admin
from chaos.lab.backends.local import READY_TIMEOUT_S, LocalStack, cache_names
from chaos.lab.procstats import peak_rss_bytes
from chaos.wire.admin import WireClient, new_fault
from chaos.wire.gate import CEILING
from db_service.settings import DbSettings
from herdlab.auth import AdminError
from herdlab.limits import raise_open_files
from herdlab.metrics import (
    CACHE_LEASE_TAKEOVERS,
    CACHE_LEASE_WAITS,
    CACHE_LEASES,
    CACHE_SHARED_FALLBACKS,
    sample,
)
from herdlab.scrape import read as read_metrics
from protos import admin_pb2

POLL_S = 0.01
CONNECT_GATE = "cache-connect"  # the first connect's admission gate (`[stack] connect_pending`)
CONNECT_HOLD_SHARE = 0.75  # it holds a connection at most this share of the connect timeout
GRPC_CONNECT_TIMEOUT_S = 20.0  # gRPC's minimum connect timeout, where the herd sets none
# The replicas' lease figures a trial reads (counters' totals, summed over labels).
LEASE_METRICS = {
    "leases": sample(CACHE_LEASES),
    "takeovers": sample(CACHE_LEASE_TAKEOVERS),
    "waits": sample(CACHE_LEASE_WAITS),
    "fallbacks": sample(CACHE_SHARED_FALLBACKS),
}
# A condition is polled at most this long after the release when it has no `within`.
MAX_CONDITION_WAIT_S = 3600.0


def lease_samples(metrics_url: str) -> dict[str, float]:
    """One replica's lease figures (LEASE_METRICS' names), read from its /metrics; raises when
    the replica does not answer (OSError) or its page is not an exposition (ValueError)."""
    scrape = read_metrics("cache", metrics_url, READY_TIMEOUT_S)
    return {name: scrape.total(metric) for name, metric in LEASE_METRICS.items()}


class TrialError(RuntimeError):
    """The trial could not do what the experiment asked (a service did not come back, the herd
    outlived the limit); the message says what."""


class Trial:
    def __init__(
        self,
        experiment: Experiment,
        variant: Mapping[str, Any],
        *,
        name: str,
        emit: Callable[[str], None],
        on_progress: ProgressFn | None,
        observers: tuple[str, ...] = (),
    ) -> None:
        self.experiment = experiment
        self.variant = dict(variant)
        self.db: DbSettings
        self.cache: CacheSettings
        self.herd: HerdSettings
        self.db, self.cache, self.herd = experiment.settings_for(variant)
        self.wire = experiment.wire_for(variant)
        self.shape = experiment.stack_for(variant)
        self.caches: list[str] = []  # the cache's services: `cache`, or its replicas
        self.name = name
        self.label = ", ".join(str(v) for v in self.variant.values()) or name
        self.emit = emit
        self.on_progress = on_progress
        self.observer_names = observers
        self.stack: LocalStack
        self.targets: dict[str, str] = {}
        self.herd_target = ""  # the cache's address as the herd reaches it (its proxy link)
        self.tls_ca: str | None = None  # `[stack] tls`: the CA every client verifies against
        self.wire_address: str | None = None
        self.metrics_urls: dict[str, str] = {}
        self.pids: dict[str, int | None] = {}
        self.t0_ns = 0
        self.released = asyncio.Event()
        self.herd_task: asyncio.Task[HerdResult] | None = None
        self.gate_lifted: asyncio.Future[None] | None = None  # the first connect's gate lifted
        self.cache_core: int | None = None  # the cache's own core (`[stack] own_core`)
        self.rounds: HerdRounds | None = None  # the herd, when it runs in rounds
        self.outages: list[Outage] = []
        self.journal: list[JournalEntry] = []
        self.setup_results: dict[str, dict[str, Any]] = {}
        self.db_baseline = 0  # DB arrivals before the release, in the current incarnation
        self.cache_baseline = 0  # of the first cache (the one admin calls reach)
        self._cache_baselines: dict[str, int] = {}
        self._db_arrivals: list[int] = []  # of incarnations already killed
        self._cache_attempts: list[int] = []
        self._db_counters = DbCounters()
        # The DB's counters at the release: what setup (e.g. warming) cost is not the trial's.
        self._db_counters_at_release: admin_pb2.DbState | None = None
        self.observers: dict[str, Any] = {}

    # -- the services ---------------------------------------------------------------------------

    @asynccontextmanager
    async def admin(self) -> AsyncIterator[Admin]:
        """Admin clients for the stack as it is now (fresh channels: no reconnect backoff left
        over from a service that was killed)."""
        async with Admin(
            self.targets["db"], self.targets[self.caches[0]], tls_ca=self.tls_ca
        ) as admin:
            yield admin

    @asynccontextmanager
    async def cache_admin(self, service: str) -> AsyncIterator[Admin]:
        """Admin clients of the DB and of the cache service (or replica) `service`."""
        async with Admin(self.targets["db"], self.targets[service], tls_ca=self.tls_ca) as admin:
            yield admin

    def herd_config(self) -> HerdConfig:
        """The herd of this trial; its keys are the trial's own (`<trial name>:<key_prefix>N`).
        With replicas it is spread over all of them (round_robin); a single cache is reached
        through the wire proxy when the stack has one."""
        target = (
            self.herd_target
            if len(self.caches) == 1
            else replicas_target([self.targets[name] for name in self.caches])
        )
        config = self.herd.config(target, f"{self.name}:{self.herd.key_prefix}")
        return dataclasses.replace(config, tls_ca=self.tls_ca)

    async def _harvest(self, service: str) -> None:
        """Reads `service`'s records (and the DB's counters) before it is killed or the trial
        ends; the next incarnation starts its records from zero."""
        if service == "redis":
            return
        async with self.cache_admin(self.caches[0] if service == "db" else service) as admin:
            if service == "db":
                self._db_arrivals += await admin.db_arrivals(after_seq=self.db_baseline)
                self._db_counters.add(await admin.db_state(), self._db_counters_at_release)
                self._db_counters_at_release = None
                self.db_baseline = 0
            else:
                after = self._cache_baselines.get(service, 0)
                self._cache_attempts += await admin.cache_attempts(after_seq=after)
                self._cache_baselines.pop(service, None)
                if service == self.caches[0]:
                    self.cache_baseline = 0

    async def _harvest_before_end(self, service: str) -> dict[str, Any]:
        """Reads `service`'s records before a kill or a stop. A service too busy to answer its
        admin plane in time (one drowning in handshakes) is killed all the same: the kill is the
        experiment, and the step's details say which records were not read."""
        if self.stack.status()[service].state != "running":
            return {}
        try:
            await self._harvest(service)
        except AdminError as exc:
            return {"records_not_read": str(exc)}
        return {}

    async def kill(self, service: str) -> dict[str, Any]:
        details = await self._harvest_before_end(service)
        outage = Outage(service, down_ns=time.time_ns())
        await in_thread(self.stack.kill, service)
        self.outages.append(outage)
        return details

    async def stop(self, service: str) -> dict[str, Any]:
        """SIGTERM: the service drains and exits; its records are read just before (its admin
        plane refuses calls once it drains)."""
        details = await self._harvest_before_end(service)
        outage = Outage(service, down_ns=time.time_ns(), kind="stop")
        self.outages.append(outage)
        stopped = await in_thread(self.stack.stop, service)
        return {**details, "exit_s": stopped.exit_s, "forced": stopped.forced}

    async def restore(self, service: str, extra_args: Sequence[str] = ()) -> dict[str, Any]:
        """Starts `service` again; records how long after its start it was listening."""
        outage = await self._restore(service, extra_args)
        assert outage.up_ns is not None and outage.restart_ns is not None
        return {"listening_after_s": round((outage.up_ns - outage.restart_ns) / 1e9, 3)}

    async def _restore(self, service: str, extra_args: Sequence[str] = ()) -> Outage:
        outage = next((o for o in reversed(self.outages) if o.service == service), None)
        if outage is None or outage.up_ns is not None:
            raise TrialError(f"restore {service}: it was not killed or stopped")
        stop = threading.Event()
        target = self.targets[service]
        probe = asyncio.ensure_future(
            asyncio.to_thread(wait_listening, target, READY_TIMEOUT_S, stop)
        )
        outage.restart_ns = time.time_ns()
        try:
            info = await in_thread(self.stack.restore, service, extra_args)
        finally:
            stop.set()
            up_ns = await probe
        outage.serving_ns = time.time_ns()
        outage.up_ns = up_ns or outage.serving_ns
        self.pids[service] = info.pid
        self._pin_cache()
        return outage

    def wire_admin(self, link: str) -> str:
        if self.wire_address is None or link not in self.wire.proxied():
            raise TrialError(f"wire fault on {link}: the stack has no wire proxy in front of it")
        return self.wire_address

    def cut(self, service: str) -> None:
        self.outages.append(Outage(service, down_ns=time.time_ns(), kind="partition"))

    async def heal(self, service: str) -> dict[str, Any]:
        """Undoes the service's last fault: removes its link's wire faults (a partition), or
        restores a killed or stopped service; returns how long it was down."""
        outage = next((o for o in reversed(self.outages) if o.service == service), None)
        if outage is None or outage.up_ns is not None:
            raise TrialError(f"heal {service}: it was not partitioned, killed or stopped")
        if outage.restarted:
            outage = await self._restore(service)
        else:
            async with WireClient(self.wire_admin(service)) as wire:
                await wire.heal(service)
                outage.up_ns = time.time_ns()
        assert outage.up_ns is not None
        return {"down_s": round((outage.up_ns - outage.down_ns) / 1e9, 3)}

    async def clear_wire(self) -> list[str]:
        if self.wire_address is None:
            return []
        async with WireClient(self.wire_address) as wire:
            return [f.name for f in await wire.clear()]

    def states(self) -> dict[str, str]:
        return {name: info.state for name, info in self.stack.status().items()}

    def start_settings(self) -> tuple[DbSettings, CacheSettings]:
        return self.db, self.cache

    async def pause(self, service: str) -> dict[str, Any]:
        await in_thread(self.stack.pause, service)
        return {}

    async def resume(self, service: str) -> dict[str, Any]:
        await in_thread(self.stack.resume, service)
        return {}

    async def cache_admins(self) -> AsyncIterator[Admin]:
        """Admin clients of the DB and of each cache replica in turn."""
        for name in self.caches:
            async with self.cache_admin(name) as admin:
                yield admin

    async def hold(self, seconds: float, revert: Callable[[], Awaitable[object]]) -> None:
        """A fault set for a while is the service's to undo: the timeline goes on."""

    def note(self, verb: str, service: str, **details: Any) -> None:
        """A composite action's steps are the step's own: the trial's journal has the step."""

    async def reconnect_lag(self, up_at: float) -> dict[str, Any]:
        """The `reconnect_lag_s` measure reads it from the DB's record at the end."""
        return {}

    # -- the run --------------------------------------------------------------------------------

    async def run(self) -> Observations:
        raise_open_files()  # the herd runs in this process: every connection is an open file
        cores = os.sched_getaffinity(0)
        try:
            return await self._run()
        finally:
            os.sched_setaffinity(0, cores)

    def _pin_others(self) -> None:
        """With `[stack] own_core`: this process, and what it starts from now on (the stack,
        the herd's processes), on every core it may use but the cache's."""
        if not self.shape.own_core:
            return
        cores = os.sched_getaffinity(0)
        if len(cores) < 2:
            raise TrialError(f"{self.name}: own_core needs two cores; this process may use one")
        os.sched_setaffinity(0, cores - {min(cores)})
        self.cache_core = min(cores)

    def _pin_cache(self) -> None:
        """The cache (a fresh incarnation too) on its own core, with `[stack] own_core`."""
        pid = self.pids.get(self.caches[0])
        if self.cache_core is not None and pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(pid, {self.cache_core})

    async def _run(self) -> Observations:
        self._pin_others()
        async with scenario_stack(self.name.split(":")[0]) as stack:
            self.stack = stack
            info = await in_thread(
                stack.up,
                db_args=self.db.to_argv(),
                cache_args=self.cache.to_argv(),
                proxy=self.wire.proxied(),
                replicas=self.shape.replicas,
                store=self.shape.store,
                tls=self.shape.tls,
                tls_key=self.shape.tls_key,
            )
            self.tls_ca = info.tls_ca
            self.caches = cache_names(info.services)
            self.targets = {name: s.grpc for name, s in info.services.items()}
            self.herd_target = info.proxy.get("cache") or self.targets[self.caches[0]]
            if "wire" in info.services:
                self.wire_address = info.services["wire"].grpc
            self.metrics_urls = {name: s.metrics for name, s in info.services.items()}
            self.pids = {name: s.pid for name, s in info.services.items()}
            self._pin_cache()
            for step in self.experiment.setup:
                await self._do(step, "setup")
            try:
                return await self._release()
            finally:
                await self._stop_herd()

    async def _before_release(self) -> None:
        """The stack's records up to the release, which the trial's are counted from."""
        async with self.admin() as admin:
            state = await admin.reset_db_peaks()  # setup's queries (warming) are not the trial's
            self.db_baseline = state.arrivals
            self._db_counters_at_release = state
        for name in self.caches:
            async with self.cache_admin(name) as admin:
                self._cache_baselines[name] = (await admin.cache_state()).db_attempts
        self.cache_baseline = self._cache_baselines[self.caches[0]]

    async def _connect_gate(self, put: bool) -> None:
        """Puts (or lifts) the first connect's admission gate on the cache's link: at most
        `[stack] connect_pending` connections unanswered while the herd first connects."""
        pending = self.wire.connect_pending
        if not pending:
            return
        async with WireClient(self.wire_admin("cache")) as client:
            if not put:
                await client.remove(CONNECT_GATE)
                return
            await client.add(
                new_fault(
                    "cache",
                    "admit",
                    {
                        "rate": CEILING,
                        "burst": CEILING,
                        "pending": float(pending),
                        "max_wait_ms": self._connect_hold_s() * 1000,
                    },
                    name=CONNECT_GATE,
                )
            )

    def _connect_hold_s(self) -> float:
        """The longest the first connect's gate holds a connection: under the herd's connect
        timeout (gRPC's 20 s when not set), so a client is let through while it still waits."""
        timeout_s = self.herd.connect_timeout_s or GRPC_CONNECT_TIMEOUT_S
        return CONNECT_HOLD_SHARE * timeout_s

    async def _release(self) -> Observations:
        await self._before_release()
        for name in self.observer_names:
            self.observers[name] = OBSERVERS.get(name)(self)
        for observer in self.observers.values():
            await observer.start()
        await self._connect_gate(put=True)

        def on_release() -> None:
            self.t0_ns = time.time_ns()
            self.released.set()
            self.gate_lifted = asyncio.ensure_future(self._connect_gate(put=False))
            for observer in self.observers.values():
                observer.on_release()

        herd: Coroutine[Any, Any, HerdResult]
        if self.herd.rounds:
            self.rounds = HerdRounds(self.herd_config(), on_release)
            herd = self.rounds.run()
        elif self.herd.on_locust:
            herd = run_on_workers(self.herd, self.herd_config(), on_release)
        elif (self.herd.processes or 1) > 1:
            herd = self._fleet(self.herd.processes or 1, on_release)
        else:
            herd = run_herd(self.herd_config(), HerdHooks(self.on_progress, on_release=on_release))
        self.herd_task = asyncio.create_task(herd)
        deadline = asyncio.get_running_loop().time() + self.experiment.end_limit_s
        try:
            await self._until_released()
            await asyncio.wait_for(self._timeline(), self._left(deadline))
            if self.rounds is not None:
                self.rounds.stop()
            result = await asyncio.wait_for(asyncio.shield(self.herd_task), self._left(deadline))
        except TimeoutError:
            raise TrialError(
                f"{self.name}: not ended within the limit of {self.experiment.end_limit_s:g}s"
            ) from None
        series = {}
        for name, observer in self.observers.items():
            series[name] = await observer.finish()
        return await self._observations(result, series)

    async def _fleet(self, processes: int, on_release: Callable[[], None]) -> HerdResult:
        """The herd over `processes` child processes (`herd_fleet`), run from a thread; the
        release is signalled on this loop. Cancelled (the trial stopped), the thread is told to
        stop, which kills the children at once."""
        loop = asyncio.get_running_loop()
        stop = threading.Event()

        def released() -> None:
            loop.call_soon_threadsafe(on_release)

        try:
            return await asyncio.to_thread(run_fleet, self.herd_config(), processes, released, stop)
        except FleetError as exc:
            raise TrialError(f"{self.name}: {exc}") from None
        finally:
            stop.set()

    @staticmethod
    def _left(deadline: float) -> float:
        return max(0.001, deadline - asyncio.get_running_loop().time())

    async def _until_released(self) -> None:
        assert self.herd_task is not None
        waiter = asyncio.create_task(self.released.wait())
        try:
            await asyncio.wait({waiter, self.herd_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if not self.released.is_set():
            self.herd_task.result()
            raise TrialError(f"{self.name}: the herd ended before it was released")

    async def _stop_herd(self) -> None:
        for observer in self.observers.values():
            with contextlib.suppress(Exception):
                await observer.close()
        if self.herd_task is not None and not self.herd_task.done():
            self.herd_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.herd_task

    async def _timeline(self) -> None:
        if self.gate_lifted is not None:
            await self.gate_lifted  # the timeline's faults meet the link without it
        loop = asyncio.get_running_loop()
        release = loop.time() - (time.time_ns() - self.t0_ns) / 1e9
        previous = release
        for step in self.experiment.timeline:
            if not step.runs_in(self.variant):
                continue
            if step.at_s is not None:
                await asyncio.sleep(max(0.0, release + step.at_s - loop.time()))
            elif step.after_s is not None:
                await asyncio.sleep(max(0.0, previous + step.after_s - loop.time()))
            seen = await self._until(step, release) if step.when is not None else None
            await self._do(step, "timeline", {} if seen is None else {"when": seen})
            # `after` counts from the end of the previous step: after a kill, from the SIGKILL
            # (reading the dying DB's records first must not shorten the outage).
            previous = loop.time()

    async def _until(self, step: Step, release: float) -> dict[str, Any]:
        """Polls the step's condition every POLL_S until it holds, the step's `within` has
        passed since the release, or the herd has ended; returns what it saw."""
        assert step.when is not None and self.herd_task is not None
        loop = asyncio.get_running_loop()
        condition = CONDITIONS.get(step.when.name)
        bound = step.within_s if step.within_s is not None else MAX_CONDITION_WAIT_S
        seen = 0.0
        async with self.admin() as admin:
            for _ in range(math.ceil(MAX_CONDITION_WAIT_S / POLL_S)):
                seen = await condition(self, admin)
                if step.when.holds(seen):
                    return {"condition": str(step.when), "seen": seen, "held": True}
                if self.herd_task.done() or loop.time() >= release + bound:
                    break
                await asyncio.sleep(POLL_S)
        return {"condition": str(step.when), "seen": seen, "held": False}

    async def _do(self, step: Step, phase: str, context: dict[str, Any] | None = None) -> None:
        t_ns = time.time_ns()
        details = {**(context or {}), **await step.action.run(self)}
        self.journal.append(JournalEntry(t_ns, step.do, phase, details))
        if phase == "setup":
            self.setup_results[step.do.split()[0]] = details
        shown = f" at +{(t_ns - self.t0_ns) / 1e9:.2f}s" if phase == "timeline" else ""
        when = details.get("when")
        if when:
            shown += f" ({when['condition'].split()[0]} {when['seen']:,.0f}"
            shown += ")" if when["held"] else ", not reached in time)"
        extra = ", ".join(
            f"{k} {v}" for k, v in details.items() if k != "when" and not isinstance(v, dict)
        )
        self.emit(
            f"  {self.label}: {step.action.said() or step.do}{shown}"
            + (f" ({extra})" if extra else "")
        )

    async def _observations(self, result: HerdResult, series: dict[str, Any]) -> Observations:
        status = self.stack.status()
        await self.clear_wire()  # a wire fault left in force ends with the trial
        leases = await self._lease_counters(status)
        for service in ("db", *self.caches):
            if status[service].state == "running":
                await self._harvest(service)
        capacity_per_s = self.db.capacity_per_s
        if status["db"].state == "running":
            async with self.admin() as admin:
                capacity_per_s = (await admin.db_state()).capacity_per_s
        cache_pid = self.pids.get(self.caches[0])
        return Observations(
            variant=self.variant,
            db=self.db,
            cache=self.cache,
            herd=self.herd,
            herd_result=result,
            t0_ns=self.t0_ns,
            end_ns=time.time_ns(),
            db_arrivals=self._db_arrivals,
            cache_attempts=self._cache_attempts,
            db_counters=self._db_counters,
            db_capacity_per_s=capacity_per_s,
            outages=self.outages,
            journal=self.journal,
            setup=self.setup_results,
            cache_peak_rss_bytes=peak_rss_bytes(cache_pid) if cache_pid else 0,
            series=series,
            stack=self.shape,
            lease_counters=leases,
        )

    async def _lease_counters(self, status: Mapping[str, Any]) -> dict[str, float]:
        """The replicas' lease counters, summed over those still running (a killed replica's
        are gone with it: it held a lease, the others waited and took over)."""
        if self.shape.store != "redis":
            return {}
        totals: dict[str, float] = {}
        for name in self.caches:
            if status[name].state != "running":
                continue
            for metric, value in (await in_thread(lease_samples, status[name].metrics)).items():
                totals[metric] = totals.get(metric, 0.0) + value
        return totals

    async def lease_holder(self) -> str:
        """The replica holding a lease now: the one whose `herdlab_cache_leases_total` is the
        highest (in a trial on one cold key, the only one that took one)."""
        status = self.stack.status()
        taken = {
            name: (await in_thread(lease_samples, status[name].metrics)).get("leases", 0.0)
            for name in self.caches
            if status[name].state == "running"
        }
        holder = max(taken, key=lambda name: taken[name], default=None)
        if holder is None or taken[holder] == 0:
            raise TrialError(f"{self.name}: no replica holds a lease")
        return holder

    async def set_db_capacity(
        self, concurrency: int | None = None, queue: int | None = None
    ) -> None:
        async with self.admin() as admin:
            await admin.set_capacity(admin_pb2.Capacity(concurrency=concurrency, queue=queue))
