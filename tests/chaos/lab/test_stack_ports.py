"""A port picked free can be taken by another process before the service binds it: the stack
starts the service again on fresh ports instead of failing (ports the caller chose stay)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

import chaos.lab.backends.local
import chaos.lab.ports
from chaos.lab.backends.base import BackendError
from chaos.lab.backends.local import LocalStack


@pytest.fixture()
def taken_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_taken_port_is_replaced_by_a_fresh_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, taken_port: int
) -> None:
    real_free_port = chaos.lab.ports.free_port
    handed = iter([taken_port])
    monkeypatch.setattr(
        chaos.lab.backends.local, "free_port", lambda: next(handed, None) or real_free_port()
    )
    stack = LocalStack(tmp_path)
    try:
        info = stack.up()
        assert info.services["db"].grpc != f"127.0.0.1:{taken_port}"
        assert {s.state for s in info.services.values()} == {"running"}
    finally:
        stack.down()


def test_a_port_the_caller_chose_is_never_changed(tmp_path: Path, taken_port: int) -> None:
    stack = LocalStack(tmp_path)
    try:
        with pytest.raises(BackendError, match="did not become SERVING"):
            stack.up(db_port=taken_port, db_metrics_port=0, cache_port=0, cache_metrics_port=0)
    finally:
        stack.down()
