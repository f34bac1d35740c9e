"""Keys and the DB's deterministic values."""

from __future__ import annotations

import pytest

from herdlab.values import MAX_KEY_BYTES, key_error, value_for


def test_keys_of_1_to_256_utf8_bytes_are_valid() -> None:
    assert key_error("k") is None
    assert key_error("k" * MAX_KEY_BYTES) is None
    assert key_error("é" * (MAX_KEY_BYTES // 2)) is None  # 2 bytes each


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "key must not be empty"),
        ("k" * 257, "key is 257 bytes; the limit is 256 bytes of UTF-8"),
        ("é" * 129, "key is 258 bytes; the limit is 256 bytes of UTF-8"),
        ("k" * 4096, "key is 4096 bytes"),
    ],
)
def test_invalid_keys_are_explained(key: str, message: str) -> None:
    problem = key_error(key)
    assert problem is not None and message in problem


def test_values_are_deterministic_per_key_and_version() -> None:
    assert value_for("user:1", 1) == value_for("user:1", 1)
    assert value_for("user:1", 1).startswith("v1:")
    distinct = {value_for(f"user:{i}", v) for i in range(100) for v in (1, 2, 3)}
    assert len(distinct) == 300
