"""The experiments the lab ships (`chaos/experiments/*.toml`, installed with the package): the
built-in scenarios, readable by users as examples of the format."""

from __future__ import annotations

import tomllib
from pathlib import Path

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "experiments"


def shipped() -> dict[str, Path]:
    """Every shipped experiment by name (its file name without `.toml`)."""
    return {p.stem: p for p in sorted(SHIPPED_DIR.glob("*.toml"))}


def path_of(name: str) -> Path:
    """The shipped experiment `name`; ValueError listing the shipped ones otherwise."""
    found = shipped()
    if name not in found:
        raise ValueError(f"no shipped experiment {name!r}; shipped: {', '.join(found)}")
    return found[name]


def title_of(path: Path) -> str:
    """The experiment's title, read without checking the rest of the file."""
    try:
        title = tomllib.loads(path.read_text()).get("title", "")
    except (OSError, tomllib.TOMLDecodeError):
        return "(unreadable)"
    return str(title)
