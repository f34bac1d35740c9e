"""The lock-free metrics of the hot path expose exactly what prometheus-client's own would."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from herdlab.metrics import LoopCounter, LoopHistogram

BUCKETS = (0.001, 0.005, 0.01, 1, 2.5, 30)
PAIRS = (("hit", "ok"), ("miss", "error"), ("none", "invalid"))
# On a bound (`le` includes it), between bounds, past the last one, and zero.
AMOUNTS = (0.0, 0.001, 0.0011, 0.5, 1.0, 2.5, 29.0, 30.0, 31.0, 1e6)


def _exposition(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if "_created" not in line]


def test_counter_and_histogram_expose_the_same_samples_as_the_library() -> None:
    library, loop = CollectorRegistry(), CollectorRegistry()
    counter = Counter("x_requests", "Requests.", ["source", "result"], registry=library)
    histogram = Histogram("x_seconds", "Latency.", ["source"], buckets=BUCKETS, registry=library)
    for pair in PAIRS:
        counter.labels(*pair)
    for source in ("hit", "miss"):
        histogram.labels(source)
    fast_counter = LoopCounter("x_requests", "Requests.", ["source", "result"], PAIRS, loop)
    fast_histogram = LoopHistogram(
        "x_seconds", "Latency.", ["source"], [("hit",), ("miss",)], BUCKETS, loop
    )
    assert _exposition(loop) == _exposition(library)  # every child at 0 from the start

    for i, amount in enumerate(AMOUNTS):
        pair = PAIRS[i % len(PAIRS)]
        source = ("hit", "miss")[i % 2]
        counter.labels(*pair).inc()
        fast_counter.labels(*pair).inc()
        histogram.labels(source).observe(amount)
        fast_histogram.labels(source).observe(amount)
    counter.labels("hit", "ok").inc(2.5)
    fast_counter.labels("hit", "ok").inc(2.5)

    assert _exposition(loop) == _exposition(library)
    assert loop.get_sample_value("x_requests_total", {"source": "hit", "result": "ok"}) == 6.5
    assert loop.get_sample_value("x_seconds_bucket", {"source": "hit", "le": "0.001"}) == 1.0


def test_a_scrape_during_observations_sees_cumulative_buckets_that_never_decrease() -> None:
    registry = CollectorRegistry()
    histogram = LoopHistogram("y_seconds", "Latency.", ["source"], [("hit",)], BUCKETS, registry)
    done = threading.Event()
    observations = 200_000

    child = histogram.labels("hit")

    def write() -> None:
        for i in range(observations):
            child.observe(AMOUNTS[i % len(AMOUNTS)])
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    scrapes = 0
    while not done.is_set() and scrapes < 10_000:
        family = next(iter(histogram.collect()))
        buckets = [s.value for s in family.samples if s.name.endswith("_bucket")]
        count = next(s.value for s in family.samples if s.name.endswith("_count"))
        assert buckets == sorted(buckets)
        assert buckets[-1] == count
        scrapes += 1
    writer.join()
    assert registry.get_sample_value("y_seconds_count", {"source": "hit"}) == observations
