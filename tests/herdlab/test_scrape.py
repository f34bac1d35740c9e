"""The controller's one reader of a service's /metrics (`herdlab.scrape`) and what each of its
callers does with a service that does not answer: `chaos watch` shows it down, a trial's lease
figures fail the trial, the guard-state observer leaves a gap."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from types import SimpleNamespace
from typing import TYPE_CHECKING, cast

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from chaos.engine.measures.guard_state import GuardSampler, guard_state
from chaos.engine.trial import lease_samples
from herdlab.scrape import fetch, parse, read

if TYPE_CHECKING:
    from chaos.engine.trial import Trial

PAGE = """# TYPE herdlab_cache_leases_total counter
herdlab_cache_leases_total{outcome="taken"} 3
herdlab_cache_leases_total{outcome="renewed"} 2
# TYPE herdlab_guard_state gauge
herdlab_guard_state{side="cache",guard="breaker",key="state"} 2
herdlab_guard_state{side="cache",guard="limit",key="in_flight"} 4
herdlab_guard_state{side="herd",guard="breaker",key="state"} 1
"""


def refused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/metrics"


@pytest.fixture()
def lease_page() -> Iterator[str]:
    """A /metrics endpoint with lease counters under two labels and no takeovers."""
    registry = CollectorRegistry()
    leases = Counter("herdlab_cache_leases", "Leases.", ["outcome"], registry=registry)
    leases.labels("taken").inc(3)
    leases.labels("renewed").inc(2)
    Gauge("herdlab_cache_unrelated", "Not a lease figure.", registry=registry).set(7)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_total_sums_the_matching_samples_and_is_zero_without_any() -> None:
    scrape = parse("cache", "http://127.0.0.1/cache", PAGE)
    assert scrape.up
    assert scrape.total("herdlab_cache_leases_total") == 5.0
    assert scrape.total("herdlab_cache_leases_total", outcome="taken") == 3.0
    absent = scrape.total("herdlab_cache_lease_takeovers_total")
    assert absent == 0.0 and isinstance(absent, float)


def test_a_refused_scrape_is_a_down_service_not_an_exception() -> None:
    scrape = fetch("db", refused_url(), timeout_s=2.0)
    assert not scrape.up and scrape.error and scrape.samples == ()


def test_read_raises_where_fetch_reports() -> None:
    with pytest.raises(OSError):
        read("db", refused_url(), timeout_s=2.0)


def test_lease_samples_sum_over_labels_and_count_absent_figures_as_zero(lease_page: str) -> None:
    assert lease_samples(lease_page) == {
        "leases": 5.0,
        "takeovers": 0.0,
        "waits": 0.0,
        "fallbacks": 0.0,
    }


def test_lease_samples_of_a_replica_that_does_not_answer_raise() -> None:
    """A running replica that cannot be read fails the trial: its lease figures would be
    missing from the sum, not zero."""
    with pytest.raises(OSError):
        lease_samples(refused_url())


def test_guard_state_is_the_cache_sides_state_by_guard_and_key() -> None:
    state = guard_state(parse("cache", "http://127.0.0.1/cache", PAGE))
    assert state == {"breaker_state": 2.0, "limit_in_flight": 4.0}


def test_the_guard_sampler_leaves_a_gap_for_a_cache_that_does_not_answer() -> None:
    trial = SimpleNamespace(
        metrics_urls={"cache": refused_url()}, experiment=SimpleNamespace(end_limit_s=0.3)
    )
    sampler = GuardSampler(cast("Trial", trial))
    asyncio.run(sampler.start())
    sampler._run()  # until the experiment's limit: every scrape refused, none raised
    assert sampler.samples == []
