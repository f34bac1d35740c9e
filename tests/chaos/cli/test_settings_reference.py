"""The README's settings reference is the one its generator renders from the declarations."""

from __future__ import annotations

from chaos.cli.settings_reference import COMMAND, README, render, updated


def test_the_readme_reference_matches_the_declarations() -> None:
    text = README.read_text()
    assert updated(text) == text, f"README.md's settings reference is stale; run: {COMMAND}"


def test_the_reference_shows_what_a_new_user_looked_for() -> None:
    reference = render()
    for row in (
        "| `--distribution` | `distribution` | `hot` |",
        "| `--attempt-timeout` | `attempt_timeout` | `2s` | in [0s, 1h] | "
        "`HERDLAB_CACHE_ATTEMPT_TIMEOUT` |",
        "| `--retry-attempts` | `retry_attempts` | `6` | in 1..100 | "
        "`HERDLAB_CACHE_RETRY_ATTEMPTS` |",
        "| `--latency` | `latency` | `50ms` | in [0s, 24h] | `HERDLAB_DB_LATENCY` |",
        "| `--port` | `50051` (db), `50052` (cache) | in 0..65535 | "
        "`HERDLAB_DB_PORT` (db), `HERDLAB_CACHE_PORT` (cache) |",
        "| `--admin-token` | `none` | text | `HERDLAB_ADMIN_TOKEN` |",
        "| - | `replicas` | `1` | in 1..16 | - |",
        "| - | `fault` | `partition` | one of partition, kill, stop | - |",
    ):
        assert row in reference, row
