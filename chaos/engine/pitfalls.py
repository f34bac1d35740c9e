"""Settings that run but cannot show what their author meant. `chaos run` warns about them (with
`--check` too) and runs anyway: a lab may set them on purpose, so they are not refused.

- `keys` > 1 with the `hot` distribution: every request asks the one hot key, whatever `keys`
  says;
- a DB latency at or above the cache's attempt timeout: no query can answer within an attempt's
  deadline, so every fetch fails after its retries.
"""

from __future__ import annotations

from chaos.engine.model import Experiment
from herdlab.config import format_duration


def pitfalls(experiment: Experiment) -> list[str]:
    """One line per pitfall, naming the settings and the rows it is in (all rows: none named)."""
    rows: dict[str, list[str]] = {}
    combinations = experiment.combinations()
    for variant in combinations:
        db, cache, herd = experiment.settings_for(variant)
        found = []
        if herd.keys > 1 and herd.distribution == "hot":
            found.append(
                f"herd.keys = {herd.keys} with distribution 'hot': every request asks one key; "
                "spread them with uniform, zipf, round-robin or unique"
            )
        if db.latency_s >= cache.attempt_timeout_s:
            found.append(
                f"db.latency = {format_duration(db.latency_s, short=True)} is at or above "
                f"cache.attempt_timeout = {format_duration(cache.attempt_timeout_s, short=True)}: "
                "no DB query can answer within an attempt's deadline, so every fetch fails"
            )
        row = ", ".join(f"{k}={v}" for k, v in variant.items())
        for line in found:
            rows.setdefault(line, []).append(row)
    return [
        line if len(where) == len(combinations) else f"{line} (in rows: {'; '.join(where)})"
        for line, where in rows.items()
    ]
