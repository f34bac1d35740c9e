"""Checks of the docker compose stack for .ci/docker-stack.sh (standard library only).

    dashboard DASHBOARD DATASOURCES
        offline: the dashboard is valid JSON with a uid, every panel, target and query
        annotation queries the provisioned data source and has a PromQL expression; its
        refresh is one of its refresh intervals.
    queries --prometheus URL --start T --end T DASHBOARD
        every PromQL expression of the dashboard (annotations included) evaluates without error
        over [T, T] against the live Prometheus and returns data; every recording and alerting
        rule evaluates healthy.
    outage --prometheus URL --start T --end T --policy P --herd-summary FILE
        around the DB outage that Prometheus saw (up{job="db"} == 0): the DB had load before,
        its arrivals fell to zero, came back, and the cache's failed attempts towards the DB
        under the no-jitter policy P came in waves; the services counted the outage (the
        dashboard's chaos annotation); the herd lost nothing.
    leases --prometheus URL --start T --end T
        the cache's replicas on the shared Redis: every replica answered the herd (round_robin),
        they took leases and waited on each other's (Redis calls that failed over to the DB, a
        degraded mode that a loaded machine may show, are printed).

Each check prints what it measured; any failure exits 1 naming the check.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

# Load the DB must have had before the outage, in arrivals per second.
MIN_LOAD_PER_S = 50.0
# "Came back": the arrival rate reaches this share of its pre-outage mean.
RECOVERED_SHARE = 0.5
RECOVERY_WINDOW_S = 30
# A run of 1 s samples with no arrivals at the DB and no successful cache->DB attempt.
MIN_ZERO_RUN_S = 3
# A wave: a peak of failed attempts per second at least this high...
MIN_WAVE_PEAK_PER_S = 20.0
# ...separated from the next peak by a trough at most this share of the smaller peak.
WAVE_TROUGH_SHARE = 0.5
MIN_WAVES = 2
WAVE_WINDOW_AFTER_S = 15

Series = dict[int, float]


class CheckFailed(Exception):
    pass


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def get(self, path: str, params: dict[str, str]) -> Any:
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as reply:
                doc = json.load(reply)
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")
            raise CheckFailed(
                f"{path} {params.get('query', '')!r}: HTTP {exc.code}: {body}"
            ) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise CheckFailed(f"Prometheus at {self.url} not reachable: {exc}") from exc
        if doc.get("status") != "success":
            raise CheckFailed(f"{path} {params}: {doc.get('error', doc)}")
        return doc["data"]

    def range(self, expr: str, start: int, end: int) -> list[dict[str, Any]]:
        data = self.get(
            "/api/v1/query_range",
            {"query": expr, "start": str(start), "end": str(end), "step": "1s"},
        )
        result: list[dict[str, Any]] = data["result"]
        return result

    def series(self, expr: str, start: int, end: int) -> Series:
        """The one series `expr` yields, by whole second; {} if it yields none."""
        result = self.range(expr, start, end)
        if len(result) > 1:
            raise CheckFailed(f"{expr!r} gave {len(result)} series, expected one")
        if not result:
            return {}
        return {round(float(t)): float(v) for t, v in result[0]["values"]}


# -- dashboard ------------------------------------------------------------------------------


def dashboard_exprs(path: Path) -> list[tuple[str, str]]:
    """(panel or annotation title, expr) of every target and query annotation of the dashboard."""
    doc = json.loads(path.read_text())
    targets = [
        (str(panel["title"]), str(target["expr"]))
        for panel in doc["panels"]
        for target in panel.get("targets", [])
    ]
    return targets + [(f"annotation {a['name']}", str(a["expr"])) for a in annotations(doc)]


def annotations(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The dashboard's annotations that query a data source (not Grafana's built-in one)."""
    return [a for a in doc.get("annotations", {}).get("list", []) if not a.get("builtIn")]


def check_dashboard(path: Path, datasources: Path) -> None:
    try:
        doc = json.loads(path.read_text())
    except ValueError as exc:
        raise CheckFailed(f"{path}: not valid JSON: {exc}") from exc
    uids = re.findall(r"^\s*uid:\s*(\S+)\s*$", datasources.read_text(), re.MULTILINE)
    if not uids:
        raise CheckFailed(f"{datasources}: no data source uid")
    if not doc.get("uid") or not doc.get("title"):
        raise CheckFailed(f"{path}: the dashboard needs a uid and a title")
    panels = doc.get("panels") or []
    if not panels:
        raise CheckFailed(f"{path}: no panels")
    for panel in panels:
        title = panel.get("title") or f"panel {panel.get('id')}"
        sources = [panel.get("datasource"), *(t.get("datasource") for t in panel["targets"])]
        for source in sources:
            if not source or source.get("uid") not in uids:
                raise CheckFailed(f"{title}: data source {source} is not one of {uids}")
        if not panel.get("targets"):
            raise CheckFailed(f"{title}: no targets")
        for target in panel["targets"]:
            if not str(target.get("expr", "")).strip():
                raise CheckFailed(f"{title}: target {target.get('refId')} has no expr")
    for annotation in annotations(doc):
        name = annotation.get("name")
        if (annotation.get("datasource") or {}).get("uid") not in uids:
            raise CheckFailed(f"annotation {name}: data source is not one of {uids}")
        if not str(annotation.get("expr", "")).strip():
            raise CheckFailed(f"annotation {name}: no expr")
    if doc.get("refresh") not in (doc.get("timepicker", {}).get("refresh_intervals") or []):
        raise CheckFailed(f"refresh {doc.get('refresh')!r} is not one of the refresh intervals")
    print(f"dashboard {path}: {len(panels)} panels, {len(dashboard_exprs(path))} queries, ok")


SERIES_ONLY_WHEN_IN_USE = (
    "herdlab_guard",
    "job_stage:herdlab_db_dropped",
    '{source="stale"}',
    "herdlab_cache_stale_age_seconds",
    # Lease series exist only in replicas on the shared store (--store redis).
    "herdlab_cache_lease",
    "herdlab_cache_shared_fallbacks",
)


def check_queries(prom: Prometheus, start: int, end: int, path: Path) -> None:
    for title, expr in dashboard_exprs(path):
        result = prom.range(expr, start, end)
        if not result and any(series in expr for series in SERIES_ONLY_WHEN_IN_USE):
            # Evaluated without error, so the expression is sound; the CI stack runs no guard,
            # the DB exports drops only once it has dropped a query, and the cache serves
            # nothing stale without a stale bound set, and a cache without a shared store has
            # no lease series.
            print(f"  ok  {expr}  (no data: nothing of it in use in this run)")
            continue
        if not result:
            raise CheckFailed(f"dashboard query {expr!r} ({title}) returned no data")
        points = sum(len(s["values"]) for s in result)
        print(f"  ok  {expr}  ({len(result)} series, {points} points)")
    groups = prom.get("/api/v1/rules", {})["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    bad = [f"{r['name']}: {r.get('lastError')}" for r in rules if r["health"] != "ok"]
    alerts = sum(r["type"] == "alerting" for r in rules)
    if not rules or not alerts or bad:
        raise CheckFailed(f"rules not healthy: {bad or 'no recording or no alerting rule loaded'}")
    print(f"  ok  {len(rules)} rules ({alerts} alerting) evaluate healthy")


# -- outage ---------------------------------------------------------------------------------


def mean(series: Series, start: int, end: int) -> float:
    """The mean of the samples in [start, end]; 0 if there are none."""
    values = [series[t] for t in range(start, end + 1) if t in series]
    return sum(values) / len(values) if values else 0.0


def zero_run(series: Series, start: int, end: int) -> int:
    """The longest run of consecutive seconds in [start, end] at zero."""
    best = run = 0
    for t in range(start, end + 1):
        run = run + 1 if series.get(t, math.nan) == 0 else 0
        best = max(best, run)
    return best


def waves(series: Series, start: int, end: int) -> list[int]:
    """Times of the peaks that stand apart: each next one past a deep enough trough."""
    values = [series.get(t, 0.0) for t in range(start, end + 1)]
    peaks = [
        i
        for i in range(1, len(values) - 1)
        if values[i] >= MIN_WAVE_PEAK_PER_S and values[i - 1] < values[i] >= values[i + 1]
    ]
    kept: list[int] = []
    for i in peaks:
        if not kept:
            kept.append(i)
            continue
        last = kept[-1]
        trough = min(values[last : i + 1])
        if trough <= WAVE_TROUGH_SHARE * min(values[last], values[i]):
            kept.append(i)
        elif values[i] > values[last]:
            kept[-1] = i
    return [start + i for i in kept]


def check_outage(prom: Prometheus, start: int, end: int, policy: str, herd_summary: Path) -> None:
    up = prom.series('up{job="db"}', start, end)
    down = sorted(t for t, v in up.items() if v == 0)
    if len(down) < MIN_ZERO_RUN_S:
        raise CheckFailed(f"Prometheus saw the DB down for {len(down)} s; expected an outage")
    first, last = down[0], down[-1]
    window_end = min(end, last + RECOVERY_WINDOW_S)

    cache_up = prom.series('min(up{job="cache"})', first, window_end)  # every replica
    if not cache_up or min(cache_up.values()) < 1:
        raise CheckFailed("every cache replica must stay up through the DB's outage")

    rate = prom.series("sum(job:herdlab_db_arrivals:rate4s)", start, window_end)
    arrivals = prom.series("sum(job:herdlab_db_arrivals:irate4s) or vector(0)", start, window_end)
    cache_ok = prom.series(
        'sum(policy_outcome:herdlab_cache_db_attempts:irate4s{outcome="ok"}) or vector(0)',
        start,
        window_end,
    )
    # The same two views must show the load before the outage, or their zeros would prove nothing.
    load = mean(rate, first - 8, first - 2)
    if min(load, mean(arrivals, first - 8, first - 2)) < MIN_LOAD_PER_S:
        raise CheckFailed(f"DB arrivals before the outage {load:.0f}/s < {MIN_LOAD_PER_S:g}/s")
    served = mean(cache_ok, first - 8, first - 2)
    if served < MIN_LOAD_PER_S:
        raise CheckFailed(
            f"cache->DB successes before the outage {served:.0f}/s < {MIN_LOAD_PER_S:g}/s"
        )
    failed = prom.series(
        "sum(policy_outcome:herdlab_cache_db_attempts:irate4s"
        f'{{policy="{policy}", outcome!="ok"}}) or vector(0)',
        start,
        window_end,
    )
    print(f"DB down (up == 0) from +0 s to +{last - first} s; t relative to the first down scrape")
    print("     t  db_up  arrivals/s  cache_ok/s  cache_failed/s")
    for t in range(first - 4, window_end + 1):
        print(
            f"  {t - first:+4d}  {up.get(t, math.nan):5.0f}  {arrivals.get(t, math.nan):10.0f}"
            f"  {cache_ok.get(t, math.nan):10.0f}  {failed.get(t, math.nan):14.0f}"
        )

    zero_arrivals = zero_run(arrivals, first, window_end)
    zero_ok = zero_run(cache_ok, first, window_end)
    if min(zero_arrivals, zero_ok) < MIN_ZERO_RUN_S:
        raise CheckFailed(
            f"DB arrivals at zero for {zero_arrivals} s and successful cache->DB attempts for "
            f"{zero_ok} s; expected at least {MIN_ZERO_RUN_S} s of both"
        )
    print(
        f"ok  before: {load:.0f} arrivals/s; during: arrivals zero for {zero_arrivals} s, "
        f"successful cache->DB attempts zero for {zero_ok} s"
    )

    target = RECOVERED_SHARE * load
    back = [t for t in range(last + 1, window_end + 1) if rate.get(t, 0.0) >= target]
    if not back:
        raise CheckFailed(
            f"DB arrivals did not come back to {target:.0f}/s within {RECOVERY_WINDOW_S} s"
        )
    print(f"ok  came back: {rate[back[0]]:.0f} arrivals/s at +{back[0] - last} s after the outage")

    if not failed or max(failed.values()) == 0:
        raise CheckFailed(f"no failed cache->DB attempts under policy {policy!r}")
    peaks = waves(failed, first - 1, min(window_end, last + WAVE_WINDOW_AFTER_S))
    if len(peaks) < MIN_WAVES:
        raise CheckFailed(
            f"policy {policy!r}: {len(peaks)} wave(s) of failed cache->DB attempts, expected "
            f"at least {MIN_WAVES}"
        )
    shown = ", ".join(f"{failed[t]:.0f}/s at {t - first:+d} s" for t in peaks)
    print(f"ok  waves of failed cache->DB attempts under {policy!r}: {shown}")

    counted = prom.series(
        'max(verb_target:herdlab_chaos_actions:increase4s{verb="outage", target="db"})'
        " or vector(0)",
        first,
        window_end,
    )
    if max(counted.values(), default=0) < 1:
        raise CheckFailed("no service counted `chaos outage db` (herdlab_chaos_actions_total)")
    marked = [t - first for t, v in sorted(counted.items()) if v > 0]
    print(f"ok  chaos outage db counted; the dashboard annotates it from {marked[0]:+d} s")

    summary = json.loads(herd_summary.read_text())
    if summary.get("lost") != 0 or summary.get("wrong_values") != 0:
        raise CheckFailed(f"the herd lost requests or got wrong values: {summary}")
    print(
        f"ok  herd: {summary['sent']} sent, {summary['ok']} ok, errors {summary['errors']}, "
        f"lost {summary['lost']}"
    )


def last(prom: Prometheus, expr: str, end: int) -> dict[str, float]:
    """The value of `expr` at `end`, by instance (a single series: key "")."""
    result = prom.get("/api/v1/query", {"query": expr, "time": str(end)})["result"]
    return {str(r["metric"].get("instance", "")): float(r["value"][1]) for r in result}


def check_leases(prom: Prometheus, start: int, end: int) -> None:
    answered = last(prom, 'sum by (instance) (herdlab_cache_requests_total{job="cache"})', end)
    if len(answered) < 2 or min(answered.values()) <= 0:
        raise CheckFailed(f"every replica must answer the herd (round_robin): {answered}")
    leases = sum(last(prom, "sum(herdlab_cache_leases_total)", end).values())
    waits = sum(last(prom, "sum(herdlab_cache_lease_waits_total)", end).values())
    if leases <= 0 or waits <= 0:
        raise CheckFailed(f"the replicas took {leases:g} leases and waited {waits:g} times")
    fallbacks = last(prom, "sum(herdlab_cache_shared_fallbacks_total)", end)
    print(
        f"ok  replicas {sorted(answered)} answered {sum(answered.values()):.0f} requests; "
        f"{leases:.0f} leases taken, {waits:.0f} waits on another replica's lease, "
        f"{sum(fallbacks.values()):.0f} Redis calls failed over to the DB"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    dash = commands.add_parser("dashboard")
    dash.add_argument("dashboard", type=Path)
    dash.add_argument("datasources", type=Path)
    for name in ("queries", "outage", "leases"):
        sub = commands.add_parser(name)
        sub.add_argument("--prometheus", required=True)
        sub.add_argument("--start", type=float, required=True)
        sub.add_argument("--end", type=float, required=True)
    commands.choices["queries"].add_argument("dashboard", type=Path)
    commands.choices["outage"].add_argument("--policy", required=True)
    commands.choices["outage"].add_argument("--herd-summary", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "dashboard":
            check_dashboard(args.dashboard, args.datasources)
            return 0
        prom = Prometheus(args.prometheus)
        start, end = math.floor(args.start), math.ceil(args.end)
        if args.command == "queries":
            check_queries(prom, start, end, args.dashboard)
        elif args.command == "leases":
            check_leases(prom, start, end)
        else:
            check_outage(prom, start, end, args.policy, args.herd_summary)
    except CheckFailed as exc:
        print(f"FAILED {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
