"""A frozen replica, over real processes: three cache replicas, one SIGSTOPped a second into an
open-loop herd spread over them with round_robin. Without health checking and keepalive every
request sent to the frozen replica waits out its deadline, a third of all after the pause; with
them (`chaos herd`'s default over replicas) the replica leaves the rotation within about 2 s and
only the requests sent to it meanwhile fail."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos.engine.herd import HerdHooks, replicas_target, run_herd
from chaos.engine.herd_settings import REPLICAS_KEEPALIVE, HerdSettings
from chaos.lab.backends.local import LocalStack, StackInfo

REPLICAS = ("cache-1", "cache-2", "cache-3")
RATE_PER_S = 100
DURATION_S = 10.0
PAUSED_AFTER_S = 1.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, StackInfo]]:
    lab = LocalStack(Path(tmp_path_factory.mktemp("frozen")))
    info = lab.up(replicas=len(REPLICAS))
    try:
        yield lab, info
    finally:
        lab.down()


def _settings(health_check: bool) -> HerdSettings:
    return dataclasses.replace(
        HerdSettings(),
        rate_per_s=RATE_PER_S,
        duration_s=DURATION_S,
        deadline_s=3.0,
        channels=4,
        distribution="uniform",
        keys=100,
        seed=1,
        health_check=health_check,
    )


async def _failed_with_one_replica_paused(
    lab: LocalStack, info: StackInfo, health_check: bool
) -> tuple[int, dict[str, int]]:
    target = replicas_target([info.services[name].grpc for name in REPLICAS])
    config = _settings(health_check).config(target)
    released = asyncio.Event()
    herd = asyncio.create_task(run_herd(config, HerdHooks(on_release=released.set)))
    try:
        await asyncio.wait_for(released.wait(), 30)
        await asyncio.sleep(PAUSED_AFTER_S)
        await asyncio.to_thread(lab.pause, "cache-2")
        summary = (await herd).summary()
    finally:
        herd.cancel()
        await asyncio.to_thread(lab.resume, "cache-2")
    assert summary["lost"] == 0, summary
    errors: dict[str, int] = summary["errors"]
    return sum(errors.values()), errors


def test_replicas_get_health_checking_and_keepalive_a_single_target_neither() -> None:
    replicas = HerdSettings().config("ipv4:127.0.0.1:1,127.0.0.1:2")
    assert replicas.health_check and replicas.keepalive == REPLICAS_KEEPALIVE
    assert HerdSettings().config("127.0.0.1:1").keepalive is None
    # A dns: name may resolve to several pods (a Kubernetes headless Service): balanced too.
    assert HerdSettings().config("dns:///cache:50052").keepalive == REPLICAS_KEEPALIVE
    off = dataclasses.replace(HerdSettings(), health_check=False)
    assert off.config("ipv4:127.0.0.1:1,127.0.0.1:2").keepalive is None


async def test_a_paused_replica_leaves_the_rotation_with_health_checking(
    stack: tuple[LocalStack, StackInfo],
) -> None:
    lab, info = stack
    after_pause = RATE_PER_S * (DURATION_S - PAUSED_AFTER_S)
    cured, cured_errors = await _failed_with_one_replica_paused(lab, info, health_check=True)
    bare, bare_errors = await _failed_with_one_replica_paused(lab, info, health_check=False)
    # Without the cure about a third of the requests after the pause wait out their deadline.
    assert bare >= after_pause / 4, bare_errors
    assert set(bare_errors) == {"DEADLINE_EXCEEDED"}, bare_errors
    # With it only those sent to the frozen replica before the ping timeout closed it fail.
    assert cured <= after_pause / 8, cured_errors
    assert cured * 3 <= bare, (cured_errors, bare_errors)
