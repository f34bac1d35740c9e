"""The journal: every chaos action, appended as one JSON line (time, verb, target, result).

Scenarios and reports read it to shade outages and mark actions on timelines. It lives beside
the stack's state (`<state_dir>/journal.jsonl`) and is bounded: past `MAX_BYTES` the oldest half
is dropped.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

MAX_BYTES = 4 * 1024 * 1024


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, verb: str, target: str, result: str, **details: Any) -> dict[str, Any]:
        entry = {
            "time": time.time(),
            "time_ns": time.time_ns(),
            "verb": verb,
            "target": target,
            "result": result,
            **details,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as journal:
            journal.write(json.dumps(entry) + "\n")
        if self.path.stat().st_size > MAX_BYTES:
            self._halve()
        return entry

    def read(self) -> list[dict[str, Any]]:
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return []
        entries = []
        for line in lines:
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue  # a line cut by a crash mid-write carries nothing to read
        return entries

    def _halve(self) -> None:
        lines = self.path.read_text().splitlines()
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in lines[len(lines) // 2 :]))
        tmp.replace(self.path)
