"""The local stack's state file, `<state_dir>/stack.json`: what was started, so that separate
`chaos` invocations (up, kill, restore, status, down) act on the same processes. It is written
whole to a temporary file and renamed over the old one, so a reader never sees half of it."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from chaos.lab.backends.base import BackendError


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "herdlab"


@dataclass
class ServiceRecord:
    """What the state file keeps of one started service."""

    name: str
    argv: list[str]
    grpc: str
    metrics: str
    log: str
    pid: int | None = None
    started_at: float | None = None  # psutil create_time, to recognise the process
    state: str = "stopped"
    links: dict[str, str] | None = None  # the wire proxy: service -> address clients use
    kind: str = "grpc"  # how readiness is checked: gRPC health, or "redis" (PING)
    tls_ca: str | None = None  # a service serving TLS: the CA its clients verify it against


def read_records(state_file: Path) -> dict[str, ServiceRecord]:
    """The records as the file holds them now; {} where there is no file (no stack)."""
    try:
        raw = json.loads(state_file.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise BackendError(f"cannot read {state_file}: {exc}") from exc
    return {name: ServiceRecord(**record) for name, record in raw["services"].items()}


def save_records(state_file: Path, records: dict[str, ServiceRecord]) -> None:
    state_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"services": {n: asdict(r) for n, r in records.items()}}))
    tmp.replace(state_file)
