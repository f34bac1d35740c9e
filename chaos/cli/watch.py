"""`chaos watch`: the running stack at a glance, read from its services' `/metrics`.

Every `--interval` the DB's and every cache's `/metrics` are scraped (concurrently, each bounded
by a timeout); what is shown comes from the last two scrapes, as Prometheus' `rate()` and
`histogram_quantile()` would compute it over that window:

- rates are counter deltas over the seconds between the scrapes (a counter that went down was
  reset by a restart: its new value is the delta, as Prometheus does);
- p50 / p99 are interpolated linearly inside the cumulative buckets of the interval's delta of
  `herdlab_cache_request_latency_seconds` (every source, every cache), as `histogram_quantile`
  does; a quantile falling into the `+Inf` bucket is the highest finite bound;
- gauges (waiters, keys in flight, queue depth, guard state) are the newest scrape's values.

Caches are every service of the stack named `cache` or `cache-<n>`; their figures are summed
(guards are listed per cache, since a breaker state does not add up). A service whose scrape
fails is shown down and its figures are missing (JSON `null`); the view keeps going.
With `--backend docker` and no `HERDLAB_<SERVICE>_METRICS_URL` set, a Docker engine that cannot
be reached is an error (one line, exit 2) rather than a view of services all DOWN.

`figures()` holds the arithmetic, on parsed expositions and an elapsed time: no clock, no I/O.

The JSON document (`chaos watch --once --json`, or one line per interval with `--json`):

    interval_s                 seconds between the two scrapes the figures come from
    services                   {name: {"role": "db"|"cache", "up": bool, "metrics": URL,
                                        "error": str|null}}
    db_arrivals_per_s          requests reaching the DB handler per second
    db_capacity_per_s          what the DB can serve per second (concurrency / mean latency)
    db_load_ratio              db_arrivals_per_s / db_capacity_per_s
    db_queue_depth             queries waiting for a DB slot
    cache_db_attempts_per_s    {outcome: attempts per second}, outcome ok or a gRPC code
    cache_requests_per_s       Gets the caches finished per second
    shares                     {"hit", "miss", "coalesced", "stale"}: each source's share of the
                               Gets finished in the interval (0 for a source no cache exports;
                               null without Gets); the rest had no source (rejected as invalid)
    coalesced_waiters          callers waiting on a fetch another caller started
    keys_in_flight             keys with a DB fetch under way
    latency_p50_s, latency_p99_s   the caches' Get latency quantiles over the interval
    guards                     [{"service", "side", "guard", "state": {key: value},
                                 "rejected_per_s"}], one per guard a cache exports
    connections                {"db"|"cache": {"open", "accepted_per_s", "handshakes_per_s"}}:
                               the gRPC connections the role's servers hold now, accept and
                               complete a TLS handshake on per second (`ServerConnections`;
                               handshakes 0 in plaintext); caches summed; null when down

A figure that cannot be computed (its service down, no Gets in the interval) is `null`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import click
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from chaos.cli.context import CONTEXT, Lab, out, pass_lab
from chaos.lab.backends.base import SERVICES, BackendError, role_of
from herdlab.config import DURATION
from herdlab.metrics import (
    CACHE_COALESCED_WAITERS,
    CACHE_DB_ATTEMPTS,
    CACHE_IN_FLIGHT_KEYS,
    CACHE_REQUEST_LATENCY,
    CACHE_REQUESTS,
    DB_ARRIVALS,
    DB_CAPACITY_PER_SECOND,
    DB_QUEUE_DEPTH,
    GUARD_REJECTED,
    GUARD_STATE,
    SERVER_CONNECTIONS_ACCEPTED,
    SERVER_CONNECTIONS_OPEN,
    SERVER_TLS_HANDSHAKES,
    sample,
)
from herdlab.scrape import Sample, Scrape, fetch

SHARE_SOURCES = ("hit", "miss", "coalesced", "stale")
CONNECTION_ROLES = ("db", "cache")
QUANTILES = {"latency_p50_s": 0.5, "latency_p99_s": 0.99}
SCRAPE_TIMEOUT_S = 2.0
MAX_SCRAPERS = 16
MIN_INTERVAL_S = 0.2
MAX_INTERVAL_S = 60.0
BAR_WIDTH = 24
VIEW_WIDTH = 80  # columns of the live view (an 80x24 terminal)


def scrape_all(
    endpoints: Mapping[str, str], timeout_s: float = SCRAPE_TIMEOUT_S
) -> dict[str, Scrape]:
    """Every endpoint scraped at once: one paused service costs one timeout, not one each."""
    if not endpoints:
        return {}
    with ThreadPoolExecutor(max_workers=min(MAX_SCRAPERS, len(endpoints))) as pool:
        futures = {
            name: pool.submit(fetch, name, url, timeout_s) for name, url in endpoints.items()
        }
        return {name: future.result() for name, future in futures.items()}


# -- the arithmetic ---------------------------------------------------------------------------


def counter_delta(before: float, after: float) -> float:
    """How much a counter grew; a counter that went down was reset (its process restarted)."""
    return after - before if after >= before else after


def _keyed(samples: Iterable[Sample], keys: tuple[str, ...]) -> dict[tuple[str, ...], float]:
    out: dict[tuple[str, ...], float] = {}
    for s in samples:
        key = tuple(s.labels.get(k, "") for k in keys)
        out[key] = out.get(key, 0.0) + s.value
    return out


def _deltas(
    before: Scrape, after: Scrape, name: str, keys: tuple[str, ...]
) -> dict[tuple[str, ...], float]:
    """Per label combination `keys`, the growth of counter `name` between two scrapes of one
    service (a series new in `after` grew from 0)."""
    old = _keyed(before.select(name), keys)
    new = _keyed(after.select(name), keys)
    return {k: counter_delta(old.get(k, 0.0), v) for k, v in new.items()}


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The q-quantile of cumulative bucket counts {upper bound: count}, as Prometheus'
    `histogram_quantile`: linear inside the bucket the rank falls in, the lowest bucket starting
    at 0, the `+Inf` bucket answered by the highest finite bound. None without observations."""
    bounds = sorted(buckets)
    if not bounds or not math.isinf(bounds[-1]):
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def _up_pairs(
    before: Mapping[str, Scrape], after: Mapping[str, Scrape], role: str
) -> list[tuple[Scrape, Scrape]]:
    """(before, after) of every service of `role` up in both scrapes."""
    return [
        (before[name], scrape)
        for name, scrape in sorted(after.items())
        if role_of(scrape.service) == role and scrape.up and name in before and before[name].up
    ]


def _ups(after: Mapping[str, Scrape], role: str) -> list[Scrape]:
    return [s for _, s in sorted(after.items()) if role_of(s.service) == role and s.up]


def _gauge_sum(scrapes: list[Scrape], name: str) -> int | None:
    """A count-valued gauge summed over `scrapes`; None when none of them answered."""
    return round(sum(s.total(name) for s in scrapes)) if scrapes else None


def _per_s(value: float, elapsed_s: float) -> float:
    return value / elapsed_s


def figures(
    before: Mapping[str, Scrape], after: Mapping[str, Scrape], elapsed_s: float
) -> dict[str, Any]:
    """The watch document (see the module docstring) from two scrapes `elapsed_s` apart."""
    if not elapsed_s > 0:
        raise ValueError(f"elapsed time must be > 0, got {elapsed_s}")
    doc: dict[str, Any] = {
        "interval_s": round(elapsed_s, 3),
        "services": {
            name: {"role": role_of(s.service), "up": s.up, "metrics": s.url, "error": s.error}
            for name, s in sorted(after.items())
        },
    }
    doc.update(_db_figures(before, after, elapsed_s))
    doc.update(_cache_figures(before, after, elapsed_s))
    doc["guards"] = _guards(before, after, elapsed_s)
    doc["connections"] = {
        role: _connections(before, after, elapsed_s, role) for role in CONNECTION_ROLES
    }
    return doc


def _db_figures(
    before: Mapping[str, Scrape], after: Mapping[str, Scrape], elapsed_s: float
) -> dict[str, Any]:
    pairs = _up_pairs(before, after, "db")
    ups = _ups(after, "db")
    arrivals = (
        _per_s(
            sum(sum(_deltas(b, a, sample(DB_ARRIVALS), ()).values()) for b, a in pairs),
            elapsed_s,
        )
        if pairs
        else None
    )
    capacity = sum(s.total(sample(DB_CAPACITY_PER_SECOND)) for s in ups) if ups else None
    return {
        "db_arrivals_per_s": arrivals,
        "db_capacity_per_s": capacity,
        "db_load_ratio": arrivals / capacity if arrivals is not None and capacity else None,
        "db_queue_depth": _gauge_sum(ups, sample(DB_QUEUE_DEPTH)),
    }


def _cache_figures(
    before: Mapping[str, Scrape], after: Mapping[str, Scrape], elapsed_s: float
) -> dict[str, Any]:
    pairs = _up_pairs(before, after, "cache")
    ups = _ups(after, "cache")
    attempts: dict[str, float] = {}
    sources: dict[str, float] = {}
    buckets: dict[float, float] = {}
    for b, a in pairs:
        for (outcome,), n in _deltas(b, a, sample(CACHE_DB_ATTEMPTS), ("outcome",)).items():
            attempts[outcome] = attempts.get(outcome, 0.0) + n
        for (source,), n in _deltas(b, a, sample(CACHE_REQUESTS), ("source",)).items():
            sources[source] = sources.get(source, 0.0) + n
        for (le,), n in _deltas(b, a, sample(CACHE_REQUEST_LATENCY), ("le",)).items():
            buckets[float(le)] = buckets.get(float(le), 0.0) + n
    requests = sum(sources.values())
    doc: dict[str, Any] = {
        "cache_db_attempts_per_s": (
            {k: _per_s(v, elapsed_s) for k, v in sorted(attempts.items())} if pairs else None
        ),
        "cache_requests_per_s": _per_s(requests, elapsed_s) if pairs else None,
        "shares": {
            src: sources.get(src, 0.0) / requests if requests > 0 else None for src in SHARE_SOURCES
        },
        "coalesced_waiters": _gauge_sum(ups, sample(CACHE_COALESCED_WAITERS)),
        "keys_in_flight": _gauge_sum(ups, sample(CACHE_IN_FLIGHT_KEYS)),
    }
    for field_name, q in QUANTILES.items():
        doc[field_name] = histogram_quantile(q, buckets)
    return doc


def _connections(
    before: Mapping[str, Scrape], after: Mapping[str, Scrape], elapsed_s: float, role: str
) -> dict[str, Any]:
    pairs = _up_pairs(before, after, role)

    def per_s(name: str) -> float | None:
        if not pairs:
            return None
        return _per_s(
            sum(sum(_deltas(b, a, sample(name), ()).values()) for b, a in pairs), elapsed_s
        )

    return {
        "open": _gauge_sum(_ups(after, role), sample(SERVER_CONNECTIONS_OPEN)),
        "accepted_per_s": per_s(SERVER_CONNECTIONS_ACCEPTED),
        "handshakes_per_s": per_s(SERVER_TLS_HANDSHAKES),
    }


def _guards(
    before: Mapping[str, Scrape], after: Mapping[str, Scrape], elapsed_s: float
) -> list[dict[str, Any]]:
    guards: dict[tuple[str, str, str], dict[str, Any]] = {}
    for scrape in _ups(after, "cache"):
        for s in scrape.select(sample(GUARD_STATE)):
            key = (scrape.service, s.labels.get("side", ""), s.labels.get("guard", ""))
            entry = guards.setdefault(key, {"state": {}, "rejected_per_s": None})
            entry["state"][s.labels.get("key", "")] = s.value
    for b, a in _up_pairs(before, after, "cache"):
        for (side, guard), n in _deltas(b, a, sample(GUARD_REJECTED), ("side", "guard")).items():
            entry = guards.setdefault(
                (a.service, side, guard), {"state": {}, "rejected_per_s": None}
            )
            entry["rejected_per_s"] = _per_s(n, elapsed_s)
    return [
        {"service": service, "side": side, "guard": guard, **entry}
        for (service, side, guard), entry in sorted(guards.items())
    ]


# -- the view ---------------------------------------------------------------------------------


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}/s"


def _count(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1e3:,.1f} ms"


def _load_bar(ratio: float | None) -> Text:
    """Arrivals against capacity: the bar fills at capacity, red beyond it."""
    if ratio is None:
        return Text("")
    filled = min(BAR_WIDTH, round(ratio * BAR_WIDTH))
    style = "red" if ratio > 1 else "yellow" if ratio > 0.8 else "green"
    return Text.assemble(
        ("█" * filled, style), ("·" * (BAR_WIDTH - filled), "dim"), (f" {ratio:.2f}x", style)
    )


def _guard_items(guard: Mapping[str, Any]) -> list[str]:
    """A guard's state, one `key value` each, after its name; its rejections last, set apart by
    a second space."""
    state = [f"{k} {v:g}" for k, v in sorted(guard["state"].items())]
    rejected = guard["rejected_per_s"]
    tail = [f" rejected {rejected:,.1f}/s"] if rejected is not None else []
    return [f"{guard['guard']}:", *state, *tail]


def _packed(items: list[str], width: int) -> list[Text]:
    """`items` (rich markup) joined by spaces into lines of at most `width` columns, never
    splitting one (an item longer than the width has a line of its own)."""
    lines: list[Text] = []
    for item in items:
        text = Text.from_markup(item)
        if lines and lines[-1].cell_len + 1 + text.cell_len <= width:
            lines[-1].append_text(Text(" ") + text)
        else:
            lines.append(Text.from_markup(item.lstrip()))
    return lines


def render(doc: Mapping[str, Any], header: str) -> RenderableType:
    """The dashboard: at most ~20 lines, each within VIEW_WIDTH columns (an 80x24 terminal): a
    figure made of items (services, cache->DB outcomes, a guard's state) continues on the next
    line rather than wrapping inside an item."""
    services = [
        f"[green]{name} up[/]" if s["up"] else f"[red]{name} DOWN[/]"
        for name, s in doc["services"].items()
    ]
    attempts = doc["cache_db_attempts_per_s"]
    shares = doc["shares"]
    rows: list[tuple[str, RenderableType | list[str]]] = [
        ("services", services or ["[red]none found[/]"]),
        (
            "DB arrivals",
            f"{_rate(doc['db_arrivals_per_s'])} of capacity {_rate(doc['db_capacity_per_s'])}",
        ),
        ("DB load", _load_bar(doc["db_load_ratio"])),
        ("DB queue", _count(doc["db_queue_depth"])),
        (
            "cache->DB",
            ["-"]
            if attempts is None
            else [f"{k} {v:,.1f}/s" for k, v in attempts.items()] or ["0/s"],
        ),
        ("cache Gets", _rate(doc["cache_requests_per_s"])),
        (
            "shares",
            "  ".join(f"{k} {'-' if v is None else format(v, '.0%')}" for k, v in shares.items()),
        ),
        (
            "coalescing",
            f"waiters {_count(doc['coalesced_waiters'])}  keys in flight "
            f"{_count(doc['keys_in_flight'])}",
        ),
        ("Get latency", f"p50 {_ms(doc['latency_p50_s'])}  p99 {_ms(doc['latency_p99_s'])}"),
    ]
    rows += [
        (
            f"{role if role == 'cache' else 'DB'} conns",
            [
                f"open {_count(c['open'])}",
                f" accepted {_rate(c['accepted_per_s'])}",
                f" TLS handshakes {_rate(c['handshakes_per_s'])}",
            ],
        )
        for role, c in doc["connections"].items()
    ]
    rows += [(f"{guard['service']} guard", _guard_items(guard)) for guard in doc["guards"]]
    if not doc["guards"]:
        rows.append(("guards", "[dim]none exported[/]"))
    # Each cell is padded by a column on either side.
    width = VIEW_WIDTH - 4 - max(len(label) for label, _ in rows)
    table = Table(show_header=False, box=None, padding=(0, 1), expand=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for label, value in rows:
        if not isinstance(value, list):
            table.add_row(label, value)
            continue
        for n, line in enumerate(_packed(value, width)):
            table.add_row(label if n == 0 else "", line)
    return Group(Text(header, style="bold"), table)


# -- the loop ---------------------------------------------------------------------------------


@dataclass
class Watcher:
    """Two-scrape state of the view: `step()` scrapes once more and returns the figures from
    the previous scrape to this one. `endpoints()` is asked on every step (the stack may have
    been restarted on other ports, a replica added)."""

    endpoints: Callable[[], Mapping[str, str]]
    timeout_s: float = SCRAPE_TIMEOUT_S
    _last: tuple[float, dict[str, Scrape]] | None = field(default=None, repr=False)

    def prime(self) -> None:
        self._last = (time.monotonic(), scrape_all(self.endpoints(), self.timeout_s))

    def step(self) -> dict[str, Any]:
        if self._last is None:
            raise RuntimeError("Watcher.step() before prime()")
        started, before = self._last
        now = time.monotonic()
        after = scrape_all(self.endpoints(), self.timeout_s)
        self._last = (now, after)
        return figures(before, after, max(now - started, 1e-6))


# -- the command ------------------------------------------------------------------------------


def stack_endpoints(lab: Lab) -> dict[str, str]:
    """The /metrics URL of every DB and cache of the stack: the local stack's state file, or the
    compose stack's published ports (`chaos.lab.backends.docker.metrics_url`)."""
    if lab.backend_name == "docker":
        from chaos.lab.backends.docker import metrics_url  # the SDK loads only when asked for

        return {name: metrics_url(name) for name in SERVICES}
    return {
        name: info.metrics for name, info in lab.stack.status().items() if role_of(name) != "other"
    }


@click.command(context_settings=CONTEXT)
@click.option(
    "--interval",
    default="1s",
    type=DURATION,
    show_default=True,
    help=f"Time between scrapes; rates are over it ({MIN_INTERVAL_S:g}s to {MAX_INTERVAL_S:g}s).",
)
@click.option(
    "--once", is_flag=True, help="Scrape twice, --interval apart, print the figures and exit."
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the figures as JSON: one document with --once, else one line per interval.",
)
@click.option(
    "--count",
    default=None,
    type=click.IntRange(1, 1_000_000),
    help="Stop after COUNT updates [default: at Ctrl-C].",
)
@pass_lab
def watch(lab: Lab, interval: float, once: bool, as_json: bool, count: int | None) -> None:
    """A live view of the running stack from its /metrics: DB arrivals against capacity,
    cache->DB attempts by outcome, hit/miss/coalesced/stale shares, coalescing, DB queue,
    Get latency p50/p99, connections open, accepted and TLS handshakes per second (DB and
    cache), and the guards' state. Ctrl-C stops it."""
    if not MIN_INTERVAL_S <= interval <= MAX_INTERVAL_S:
        raise click.BadParameter(
            f"must be in [{MIN_INTERVAL_S:g}s, {MAX_INTERVAL_S:g}s], got {interval:g}s",
            param_hint="--interval",
        )
    if lab.backend_name == "docker":
        from chaos.lab.backends.docker import metrics_urls_given

        if not metrics_urls_given():
            lab.backend()  # BackendError in one line when the Docker engine cannot be reached
    if not stack_endpoints(lab):
        raise BackendError("no lab stack is up; run 'chaos up' first")
    watcher = Watcher(lambda: stack_endpoints(lab), timeout_s=min(SCRAPE_TIMEOUT_S, interval))
    updates = 1 if once else count
    header = f"herdlab watch  {lab.backend_name}  every {interval:g}s"

    def ticks() -> Iterator[dict[str, Any]]:
        """One document per interval, on a fixed schedule (a slow scrape does not shift it)."""
        watcher.prime()
        start = time.monotonic()
        done = 0
        while updates is None or done < updates:
            done += 1
            time.sleep(max(0.0, start + done * interval - time.monotonic()))
            yield watcher.step()

    if as_json:
        for doc in ticks():
            click.echo(json.dumps(doc, indent=2 if once else None))
        return
    if once or not out.is_terminal:  # in a pipe or a file: one frame after another
        for doc in ticks():
            out.print(render(doc, f"{header}  {time.strftime('%H:%M:%S')}"))
        return
    waiting = Text(f"{header}\nfirst figures in {interval:g}s ...", style="bold")
    with Live(waiting, console=out, auto_refresh=False, transient=False) as live:
        for doc in ticks():
            stamp = time.strftime("%H:%M:%S")
            live.update(render(doc, f"{header}  {stamp}  (Ctrl-C stops)"), refresh=True)
