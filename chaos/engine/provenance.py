"""Where a result came from: the lab's and the platform's versions, the machine's load, when,
with which seeds, by which command, from which experiment file (its content hash)."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from herdlab import loop

_CHECKOUT = Path(__file__).resolve().parents[2]


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    """The checkout's commit (with `+dirty` when files differ from it), or None outside one."""
    if not (_CHECKOUT / ".git").exists():
        return None
    try:
        commit = subprocess.run(
            ["git", "-C", str(_CHECKOUT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(_CHECKOUT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def start(command: str | None = None) -> dict[str, Any]:
    """Provenance as the run starts; `finish` adds the end."""
    return {
        "herdlab": _version("herdlab"),
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "grpcio": _version("grpcio"),
        # The controller's loop, which the services it starts inherit (`herdlab.loop`).
        "event_loop": loop.chosen(),
        "gc": loop.gc_mode(),
        "uvloop": _version("uvloop") if loop.chosen() == "uvloop" else None,
        "os": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "started_at": _now(),
        "command": command if command is not None else shlex.join(["chaos", *sys.argv[1:]]),
    }


def finish(provenance: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        **provenance,
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "ended_at": _now(),
        **extra,
    }
