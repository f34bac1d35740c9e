"""One trial against the user's own service: an experiment with a `[target]` section.

The run loop is the lab's (`chaos.engine.trial.Trial`: setup, release, timeline, end), with no lab
stack: the trial starts a wire proxy of its own in front of the upstream (`python -m chaos.wire`
with one link, `target`, stopped when the trial ends whatever happens), the herd calls the
`[target]` method through it, and the timeline's wire faults act on that link. What is measured
comes from the herd's own record and, with `[target] prometheus`, from the file's PromQL
measures, read over the run's window (release to end) once the herd has ended.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from typing import Any

from cache_service.settings import CacheSettings
from chaos.engine.herd import HerdConfig, HerdResult
from chaos.engine.model import PromQuery
from chaos.engine.observations import DbCounters, Observations
from chaos.engine.trial import Trial, TrialError
from chaos.engine.trial_stack import in_thread
from chaos.lab.backends.local import READY_TIMEOUT_S
from chaos.lab.ports import HOST, free_port
from chaos.wire.proxy import TARGET_LINK
from db_service.settings import DbSettings
from herdlab.grpcutil import wait_serving

STOP_TIMEOUT_S = 10.0
QUERY_TIMEOUT_S = 10.0
MAX_POINTS = 11_000  # Prometheus refuses a range query of more points per series


def start_proxy(upstream: str) -> tuple[subprocess.Popen[bytes], str, str]:
    """The wire proxy in front of `upstream`, serving: (its process, link address, admin)."""
    listen, admin = free_port(), free_port()
    argv = [sys.executable, "-m", "chaos.wire", "--host", HOST, "--port", str(admin)]
    proc = subprocess.Popen(
        [*argv, "--link", f"{TARGET_LINK}:{listen}:{upstream}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    if not wait_serving(f"{HOST}:{admin}", READY_TIMEOUT_S, alive=lambda: proc.poll() is None):
        stop_proxy(proc)
        why = (proc.stderr.read().decode(errors="replace") if proc.stderr else "").strip()
        last = why.splitlines()[-1] if why else f"not serving within {READY_TIMEOUT_S:g}s"
        raise TrialError(f"the wire proxy in front of {upstream} did not start: {last}")
    return proc, f"{HOST}:{listen}", f"{HOST}:{admin}"


def stop_proxy(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()


def reduce(points: list[float], over: str) -> float | None:
    """One number of a query's points (NaN left out); None when there is none."""
    values = [p for p in points if not math.isnan(p)]
    if not values:
        return None
    if over == "last":
        return values[-1]
    if over == "mean":
        return statistics.fmean(values)
    return max(values) if over == "max" else min(values)


def read_query(base_url: str, query: PromQuery, start_ns: int, end_ns: int) -> float | None:
    """`query` over [start, end] from the Prometheus at `base_url`, reduced; OSError or
    ValueError when it cannot be read."""
    span_s = max(0.001, (end_ns - start_ns) / 1e9)
    step_s = max(query.step_s, span_s / MAX_POINTS)
    params = urllib.parse.urlencode(
        {
            "query": query.query,
            "start": f"{start_ns / 1e9:.3f}",
            "end": f"{end_ns / 1e9:.3f}",
            "step": f"{step_s:.3f}",
        }
    )
    url = f"{base_url.rstrip('/')}/api/v1/query_range?{params}"
    with urllib.request.urlopen(url, timeout=QUERY_TIMEOUT_S) as answer:
        doc = json.load(answer)
    if doc.get("status") != "success":
        raise ValueError(doc.get("error", "the query failed"))
    points = [float(v) for series in doc["data"]["result"] for _, v in series["values"]]
    # Series in order: `last` is the last point of the last series (one series is the usual).
    return reduce(points, query.over)


class TargetTrial(Trial):
    """A trial whose stack is the user's service behind a wire proxy of the trial's own."""

    async def run(self) -> Observations:
        target = self.experiment.target
        assert target is not None and target.call is not None, "resolve the target first"
        proc, self.herd_target, self.wire_address = await in_thread(start_proxy, target.upstream)
        try:
            for step in self.experiment.setup:
                await self._do(step, "setup")
            try:
                return await self._release()
            finally:
                await self._stop_herd()
        finally:
            await in_thread(stop_proxy, proc)

    async def _before_release(self) -> None:
        """No stack records to count from: the herd's record is the trial's."""

    def herd_config(self) -> HerdConfig:
        target = self.experiment.target
        assert target is not None
        config = self.herd.config(self.herd_target)
        return dataclasses.replace(config, call=target.call, tls_ca=target.tls_ca)

    def wire_admin(self, link: str) -> str:
        if self.wire_address is None or link != TARGET_LINK:
            raise TrialError(f"wire fault on {link}: a [target] run's proxy has the target link")
        return self.wire_address

    async def _observations(self, result: HerdResult, series: dict[str, Any]) -> Observations:
        target = self.experiment.target
        assert target is not None
        with contextlib.suppress(OSError):
            await self.clear_wire()
        end_ns = time.time_ns()
        return Observations(
            variant=self.variant,
            db=DbSettings(),
            cache=CacheSettings(),
            herd=self.herd,
            herd_result=result,
            t0_ns=self.t0_ns,
            end_ns=end_ns,
            db_arrivals=[],
            cache_attempts=[],
            db_counters=DbCounters(),
            db_capacity_per_s=target.capacity_per_s or 0.0,
            outages=self.outages,
            journal=self.journal,
            setup=self.setup_results,
            cache_peak_rss_bytes=0,
            series=series,
            queried=await self._queries(end_ns),
        )

    async def _queries(self, end_ns: int) -> dict[str, Any]:
        target = self.experiment.target
        found: dict[str, Any] = {}
        if target is None or target.prometheus is None:
            return found
        for query in self.experiment.queries:
            try:
                found[query.name] = await in_thread(
                    read_query, target.prometheus, query, self.t0_ns, end_ns
                )
            except (OSError, ValueError, KeyError) as exc:
                self.emit(f"  {self.label}: measure {query.name}: not read: {exc}")
                found[query.name] = None
        return found
