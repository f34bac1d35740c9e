"""Reading a service's Prometheus `/metrics`: the one reader the lab's controller uses (`chaos
watch`, a trial's lease figures, the guard-state observer).

`read` fetches and parses one page and raises when it cannot (the caller decides what a service
that does not answer means); `fetch` is `read` for a caller that keeps going without it: a
failed scrape naming why, never an exception. Parsing is prometheus_client's text parser.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class Scrape:
    """One service's `/metrics` at one moment; `samples` is empty when the scrape failed."""

    service: str
    url: str
    samples: tuple[Sample, ...] = ()
    error: str | None = None

    @property
    def up(self) -> bool:
        return self.error is None

    def total(self, name: str, **match: str) -> float:
        """The sum of `name`'s samples whose labels include `match` (0.0 when there are none)."""
        return sum((s.value for s in self.select(name, **match)), 0.0)

    def select(self, name: str, **match: str) -> list[Sample]:
        return [
            s
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in match.items())
        ]


def parse(service: str, url: str, text: str) -> Scrape:
    """A scrape from an exposition text; ValueError when the text is not one."""
    samples = tuple(
        Sample(sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    )
    return Scrape(service, url, samples)


def read(service: str, url: str, timeout_s: float) -> Scrape:
    """Scrapes `url`; OSError when it cannot be reached in `timeout_s` (refused, or a paused
    process), ValueError when what it answered is not an exposition."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return parse(service, url, response.read().decode())


def fetch(service: str, url: str, timeout_s: float) -> Scrape:
    """Scrapes `url`; a refused, slow (a paused process) or broken endpoint gives a failed
    scrape naming why, never an exception."""
    try:
        return read(service, url, timeout_s)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        return Scrape(service, url, error=" ".join(str(reason).split()) or type(exc).__name__)
