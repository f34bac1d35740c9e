"""The guard interface and its composition: GuardSet's ordering, release on refusal and shrinking
time budget; the spec grammar (good specs, their canonical forms, bad specs with their exact
one-line messages); the comma rule of parse_guard_sets; the scrape-time metrics. The per-guard
arithmetic is in test_guards_<guard>.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry

from cache_service.settings import CacheSettings
from chaos.engine.herd_settings import HerdSettings
from herdlab.guards import (
    GUARD_NAMES,
    RECOMMENDED,
    Guard,
    GuardRejected,
    GuardSet,
    Outcome,
    Permit,
    guard_set_spec,
    guard_texts,
    parse_guard_set,
    parse_guard_sets,
)
from herdlab.guards.base import CallbackPermit
from herdlab.guards.breaker import Breaker
from herdlab.guards.budget import A6Budget, FinagleBudget
from herdlab.guards.limit import ConcurrencyLimit
from herdlab.guards.limit_algorithms import AIMDLimit, StaticLimit, VegasLimit
from herdlab.guards.metrics import GuardCollector
from herdlab.guards.throttle import Throttle
from herdlab.settings import from_options, with_values


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Recorder(Guard):
    """A test guard: notes each acquire's timeout and each report, optionally refuses, and
    advances the clock by `takes_s` as if it had waited."""

    name = "recorder"

    def __init__(
        self,
        label: str,
        log: list[str],
        clock: FakeClock,
        *,
        refuse: bool = False,
        takes_s: float = 0,
    ) -> None:
        super().__init__()
        self.label = label
        self.log = log
        self.clock = clock
        self.refuse = refuse
        self.takes_s = takes_s
        self.timeouts: list[float] = []

    def spec_items(self) -> list[tuple[str, str | None]]:
        return [(self.label, None)]

    async def acquire(self, *, retry: bool, timeout_s: float) -> Permit:
        self.timeouts.append(timeout_s)
        self.clock.now += self.takes_s
        if self.refuse:
            self._reject("refused for the test")
        return CallbackPermit(
            lambda outcome, rtt_s: self.log.append(f"{self.label} {outcome.name}")
        )

    def state(self) -> dict[str, float]:
        return {"timeouts": float(len(self.timeouts))}


async def settle(until: Callable[[], bool], max_steps: int = 1_000) -> None:
    for _ in range(max_steps):
        if until():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached within the step bound")


def test_registry_holds_the_four_guards_in_order() -> None:
    assert GUARD_NAMES == ("budget", "throttle", "breaker", "limit")


def test_guard_rejected_is_one_line_naming_the_guard() -> None:
    error = GuardRejected("limit", "queue full")
    assert (error.guard, error.reason, str(error)) == ("limit", "queue full", "limit: queue full")


async def test_an_empty_set_admits_everything() -> None:
    guards = parse_guard_set("none")
    assert (guards.spec, guards.guards, guards.state()) == ("none", (), {})
    (await guards.acquire(retry=True, timeout_s=0.0)).done(Outcome.OVERLOAD, 0.1)


async def test_a_refusal_releases_the_earlier_permits_last_first() -> None:
    log: list[str] = []
    clock = FakeClock()
    a, b = Recorder("a", log, clock), Recorder("b", log, clock)
    c = Recorder("c", log, clock, refuse=True)
    guards = GuardSet([a, b, c], clock=clock)
    with pytest.raises(GuardRejected, match=r"^recorder: refused for the test$"):
        await guards.acquire(retry=False, timeout_s=1.0)
    assert log == ["b IGNORE", "a IGNORE"]
    assert (a.rejected, b.rejected, c.rejected, guards.rejected) == (0, 0, 1, 1)


async def test_the_set_permit_reports_to_every_guard_last_first() -> None:
    log: list[str] = []
    clock = FakeClock()
    guards = GuardSet([Recorder("a", log, clock), Recorder("b", log, clock)], clock=clock)
    (await guards.acquire(retry=False, timeout_s=1.0)).done(Outcome.OK, 0.1)
    assert log == ["b OK", "a OK"]


async def test_the_time_budget_shrinks_as_earlier_guards_wait() -> None:
    log: list[str] = []
    clock = FakeClock()
    recorders = [Recorder(label, log, clock, takes_s=0.3) for label in "abcd"]
    await GuardSet(recorders, clock=clock).acquire(retry=False, timeout_s=1.0)
    timeouts = [r.timeouts[0] for r in recorders]
    assert timeouts == pytest.approx([1.0, 0.7, 0.4, 0.1])
    clock.now = 0.0
    await GuardSet(recorders, clock=clock).acquire(retry=False, timeout_s=0.5)
    assert [r.timeouts[1] for r in recorders] == pytest.approx([0.5, 0.2, 0.0, 0.0])


async def test_a_real_refusal_gives_back_the_limit_slot() -> None:
    clock = FakeClock()
    guards = parse_guard_set("limit:n=1+breaker:failures=1", clock=clock)
    limit, breaker = guards.guards
    assert isinstance(limit, ConcurrencyLimit) and isinstance(breaker, Breaker)
    (await guards.acquire(retry=False, timeout_s=1.0)).done(Outcome.OVERLOAD, 0.1)
    with pytest.raises(GuardRejected, match=r"^breaker: open"):
        await guards.acquire(retry=False, timeout_s=1.0)
    assert guards.state() == {
        "limit_limit": 1.0,
        "limit_in_flight": 0.0,
        "limit_waiting": 0.0,
        "breaker_state": 2.0,
    }


async def test_a_caller_cancelled_while_waiting_releases_the_earlier_permits() -> None:
    log: list[str] = []
    clock = FakeClock()
    limit = ConcurrencyLimit(StaticLimit(1))
    guards = GuardSet([Recorder("a", log, clock), limit], clock=clock)
    holder = await guards.acquire(retry=False, timeout_s=1.0)
    task = asyncio.create_task(guards.acquire(retry=False, timeout_s=60.0))
    await settle(lambda: limit.waiting == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["a IGNORE"]
    holder.done(Outcome.OK, 0.1)
    assert limit.state() == {"limit": 1.0, "in_flight": 0.0, "waiting": 0.0}


def test_recommended_is_the_dbs_concurrency_as_a_static_limit_then_a_breaker() -> None:
    guards = parse_guard_set("recommended")
    assert RECOMMENDED == guards.spec == "limit:n=20+breaker"
    limit, breaker = guards.guards
    assert isinstance(limit, ConcurrencyLimit) and isinstance(limit.algorithm, StaticLimit)
    assert limit.algorithm.limit == 20
    assert isinstance(breaker, Breaker) and breaker.reset_s == 1.0


async def sent_through_an_open_breaker(spec: str) -> tuple[int, int]:
    """Three calls queue behind a held slot; the held call fails and opens the breaker
    (failures=1). Returns (calls sent afterwards, calls refused)."""
    guards = parse_guard_set(spec)
    limit = next(g for g in guards.guards if isinstance(g, ConcurrencyLimit))
    held = await guards.acquire(retry=False, timeout_s=1.0)
    outcomes: list[str] = []

    async def one() -> None:
        try:
            permit = await guards.acquire(retry=False, timeout_s=60.0)
        except GuardRejected:
            outcomes.append("refused")
            return
        outcomes.append("sent")
        permit.done(Outcome.OVERLOAD, 0.001)

    tasks = [asyncio.create_task(one()) for _ in range(3)]
    await settle(lambda: limit.waiting == 3)
    held.done(Outcome.OVERLOAD, 0.001)
    await asyncio.gather(*tasks)
    return outcomes.count("sent"), outcomes.count("refused")


async def test_the_breaker_decides_at_send_time_only_after_the_limit() -> None:
    """Why RECOMMENDED puts the limit first: with the breaker first, the calls queued in the
    limit before the breaker opened are all sent after it opened."""
    assert await sent_through_an_open_breaker("breaker:failures=1+limit:n=1") == (3, 0)
    assert await sent_through_an_open_breaker("limit:n=1+breaker:failures=1") == (0, 3)


@pytest.mark.parametrize(
    ("text", "spec", "kinds"),
    [
        ("none", "none", []),
        (" budget ", "budget", [A6Budget]),
        ("budget:token_ratio=0.5", "budget:token_ratio=0.5", [A6Budget]),
        ("budget:ttl=5s,ratio=0.1", "budget:ratio=0.1,ttl=5s", [FinagleBudget]),
        ("budget+limit:aimd", "budget+limit:aimd", [A6Budget, ConcurrencyLimit]),
        ("limit:n=20", "limit:n=20", [ConcurrencyLimit]),
        ("limit", "limit", [ConcurrencyLimit]),
        ("limit:static,n=5", "limit:n=5", [ConcurrencyLimit]),
        ("limit:aimd,max=100,initial=10", "limit:aimd,initial=10,max=100", [ConcurrencyLimit]),
        ("limit:vegas", "limit:vegas", [ConcurrencyLimit]),
        ("throttle:k=1.5,window=30s", "throttle:k=1.5,window=30s", [Throttle]),
        ("throttle:window=0.5m,k=1.50", "throttle:k=1.5,window=30s", [Throttle]),
        ("throttle:window=120s", "throttle:window=2m", [Throttle]),
        ("breaker:reset=500ms", "breaker:reset=500ms", [Breaker]),
        ("throttle + breaker:probes=2", "throttle+breaker:probes=2", [Throttle, Breaker]),
        ("recommended", "limit:n=20+breaker", [ConcurrencyLimit, Breaker]),
    ],
)
def test_good_specs_and_their_canonical_form(text: str, spec: str, kinds: list[type]) -> None:
    guards = parse_guard_set(text)
    assert guards.spec == spec
    assert [type(g) for g in guards.guards] == kinds


@pytest.mark.parametrize(
    "spec",
    [
        "budget:max_tokens=10,token_ratio=0.1",
        "budget:ratio=0.2,min_per_s=10,ttl=10s",
        "throttle:k=2,window=30s",
        "throttle:k=1.1,window=2m",
        "breaker:failures=5,reset=1s,probes=1",
        "breaker:failures=3,reset=250ms,probes=2",
        "limit:n=20,queue=100000",
        "limit:aimd,initial=20,min=1,max=200,backoff=0.9,queue=100000",
        "limit:vegas,initial=20,max=1000,queue=7",
    ],
)
def test_a_full_spec_reads_back_to_itself(spec: str) -> None:
    (guard,) = parse_guard_set(spec).guards
    assert guard.spec == spec


def test_the_algorithms_are_the_ones_named() -> None:
    kinds = [
        type(g.algorithm)
        for text in ("limit", "limit:aimd", "limit:vegas")
        for g in parse_guard_set(text).guards
        if isinstance(g, ConcurrencyLimit)
    ]
    assert kinds == [StaticLimit, AIMDLimit, VegasLimit]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "",
            "empty guard set; write none, recommended or guards joined by '+', "
            "e.g. budget+limit:aimd",
        ),
        (
            "bucket",
            "unknown guard 'bucket'; choose from budget, throttle, breaker, limit "
            "(or none, recommended)",
        ),
        ("throttle:k=0.5", "guard 'throttle': k must be in [1, 10], got 0.5"),
        ("throttle:k=fast", "guard 'throttle': k must be a number in [1, 10], got 'fast'"),
        ("throttle:k=nan", "guard 'throttle': k must be a number in [1, 10], got 'nan'"),
        (
            "throttle:window=30",
            "guard 'throttle': window must be a duration (e.g. 500ms, 30s, 2m) in [1s, 10m], "
            "got '30'",
        ),
        ("throttle:window=500ms", "guard 'throttle': window must be in [1s, 10m], got 500ms"),
        ("throttle:x=1", "guard 'throttle': unknown parameter 'x'; allowed: k, window"),
        ("throttle:k=2,k=3", "guard 'throttle': k is given twice"),
        ("throttle:", "guard 'throttle': empty parameter in 'throttle:'; write throttle:k=v,k=v"),
        ("throttle:fast", "guard 'throttle': 'fast' is not a k=v parameter; allowed: k, window"),
        ("budget:max_tokens=0", "guard 'budget': max_tokens must be in [1, 1000], got 0"),
        (
            "budget:max_tokens=2.5",
            "guard 'budget': max_tokens must be an integer in [1, 1000], got '2.5'",
        ),
        ("budget:ttl=0.5s", "guard 'budget': ttl must be in [1s, 1m], got 500ms"),
        (
            "budget:max_tokens=5,ttl=5s",
            "guard 'budget': max_tokens is a gRFC A6 parameter (max_tokens, token_ratio) and ttl "
            "a Finagle one (ratio, min_per_s, ttl); give one family's",
        ),
        ("breaker:failures=0", "guard 'breaker': failures must be in [1, 1000], got 0"),
        ("breaker:reset=0s", "guard 'breaker': reset must be in [1ms, 10m], got 0s"),
        ("limit:n=0", "guard 'limit': n must be in [1, 100000], got 0"),
        ("limit:queue=-1", "guard 'limit': queue must be in [0, 1000000], got -1"),
        (
            "limit:gradient",
            "guard 'limit': unknown algorithm 'gradient'; choose from static, aimd, vegas",
        ),
        (
            "limit:aimd,n=5",
            "guard 'limit': unknown parameter 'n' for algorithm aimd; allowed: initial, min, max, "
            "backoff, queue",
        ),
        ("limit:aimd,backoff=1", "guard 'limit': backoff must be in [0.5, 1), got 1"),
        ("limit:aimd,initial=300", "guard 'limit': initial must be in [1, 200], got 300"),
        ("limit:aimd,min=10,max=5", "guard 'limit': max must be in [10, 100000], got 5"),
        (
            "limit:aimd,vegas",
            "guard 'limit': 'vegas' is not a k=v parameter for algorithm aimd; allowed: initial, "
            "min, max, backoff, queue",
        ),
        (
            "limit:initial=10,aimd",
            "guard 'limit': 'aimd' must come first after ':', before the k=v parameters",
        ),
        ("budget+budget", "guard set 'budget+budget': guard 'budget' appears twice"),
        ("none+budget", "guard set 'none+budget': none stands alone, not joined with '+'"),
        ("budget+", "guard set 'budget+': a guard name is missing"),
    ],
)
def test_bad_specs_fail_with_one_line_naming_guard_parameter_and_range(
    text: str, message: str
) -> None:
    with pytest.raises(ValueError) as error:
        parse_guard_set(text)
    assert str(error.value) == message
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("text", "sets"),
    [
        (
            "none,budget,limit:aimd,recommended",
            ["none", "budget", "limit:aimd", "recommended"],
        ),
        (
            "none,throttle:k=2,window=30s,limit:n=20",
            ["none", "throttle:k=2,window=30s", "limit:n=20"],
        ),
        (
            "limit:aimd,initial=10,max=100,budget:ttl=5s,ratio=0.1",
            ["limit:aimd,initial=10,max=100", "budget:ttl=5s,ratio=0.1"],
        ),
        (
            "budget+throttle:k=2,window=30s+limit:aimd,breaker",
            ["budget+throttle:k=2,window=30s+limit:aimd", "breaker"],
        ),
        (" none , budget ", ["none", "budget"]),
    ],
)
def test_parse_guard_sets_comma_rule(text: str, sets: list[str]) -> None:
    assert parse_guard_sets(text) == sets


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "k=2,budget",
            "guard sets 'k=2,budget': 'k=2' follows no guard's ':'; write guard:k=v "
            "(e.g. throttle:k=2,window=30s)",
        ),
        (
            "budget,max_tokens=5",
            "guard sets 'budget,max_tokens=5': 'max_tokens=5' follows no guard's ':'; write "
            "guard:k=v (e.g. throttle:k=2,window=30s)",
        ),
        (
            "limit:n=20,aimd",
            "unknown guard 'aimd'; choose from budget, throttle, breaker, limit "
            "(or none, recommended)",
        ),
        (",", "no guard set named; e.g. none,budget,limit:aimd,recommended"),
        ("none,throttle:k=2,window=1s,k=3", "guard 'throttle': k is given twice"),
    ],
)
def test_parse_guard_sets_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as error:
        parse_guard_sets(text)
    assert str(error.value) == message


async def test_the_collector_reads_the_current_set_at_scrape_time() -> None:
    clock = FakeClock()
    current = [parse_guard_set("breaker:failures=1+limit:n=3", clock=clock)]
    registry = CollectorRegistry()
    GuardCollector(lambda: current[0], registry, "cache")

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"side": "cache", **labels})

    permit = await current[0].acquire(retry=False, timeout_s=1.0)
    assert sample("herdlab_guard_state", guard="limit", key="in_flight") == 1.0
    assert sample("herdlab_guard_state", guard="limit", key="limit") == 3.0
    permit.done(Outcome.OVERLOAD, 0.1)
    with pytest.raises(GuardRejected):
        await current[0].acquire(retry=False, timeout_s=1.0)
    assert sample("herdlab_guard_state", guard="breaker", key="state") == 2.0
    assert sample("herdlab_guard_rejected_total", guard="breaker") == 1.0
    assert sample("herdlab_guard_rejected_total", guard="limit") == 0.0
    current[0] = parse_guard_set("none")
    assert sample("herdlab_guard_state", guard="breaker", key="state") is None


def test_the_collector_checks_its_side() -> None:
    with pytest.raises(
        ValueError, match=r"^guard metrics side must be one of cache, herd, got 'db'$"
    ):
        GuardCollector(lambda: parse_guard_set("none"), CollectorRegistry(), "db")


@pytest.mark.parametrize(
    "written",
    [
        "limit:n=20,queue=0+breaker",
        ["limit:n=20,queue=0", "breaker"],
        ["limit:n=20,queue=0+breaker"],
    ],
)
def test_a_set_is_written_the_same_way_in_files_flags_and_sets(written: str | list[str]) -> None:
    """A `guards` key of an experiment file, the repeated `--guard` flags of the cache and of
    `chaos herd`: one grammar, read by parse_guard_set."""
    flags = tuple([written] if isinstance(written, str) else written)
    cache = with_values(CacheSettings(), {"guards": written}, where="stack.cache").guards
    herd = with_values(HerdSettings(), {"guards": written}, where="herd").guards
    assert cache == herd == from_options(CacheSettings, {"guards": flags}).guards
    assert herd == from_options(HerdSettings, {"guards": flags}).guards
    assert parse_guard_set(herd).spec == "limit:n=20,queue=0+breaker"
    assert guard_set_spec(guard_texts(herd)) == herd


def test_no_guard_given_is_none_and_a_list_of_non_text_is_refused() -> None:
    assert guard_set_spec([]) == "none" and guard_texts("none") == []
    with pytest.raises(ValueError, match=r"herd\.guards: guards must be a guard set or a list"):
        with_values(HerdSettings(), {"guards": [1]}, where="herd")
