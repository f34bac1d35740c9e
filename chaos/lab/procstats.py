"""What the controller reads of a service's process: peak and current memory, open files."""

from __future__ import annotations

from pathlib import Path


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident set size (VmHWM), in bytes; 0 if it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return 0
    return 0
