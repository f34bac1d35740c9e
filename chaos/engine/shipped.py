"""The scenarios the lab ships, one folder each (`chaos/scenarios/NAME/experiment.toml`, installed
with the package, beside the folder's module if the scenario needs one): the built-in scenarios,
readable by users as examples of the format. A folder `retry_storm` ships `retry-storm`."""

from __future__ import annotations

import tomllib
from pathlib import Path

from chaos.engine.params import Param, read

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "scenarios"
FILE_NAME = "experiment.toml"


def shipped() -> dict[str, Path]:
    """Every shipped experiment by name (its folder's name, `_` written `-`)."""
    return {p.parent.name.replace("_", "-"): p for p in sorted(SHIPPED_DIR.glob(f"*/{FILE_NAME}"))}


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


def typed_params(path: Path) -> tuple[Param, ...]:
    """The file's typed params (the options of `chaos scenario NAME`), read without checking the
    rest of the file; a shipped file is checked by its tests."""
    _, typed = read(tomllib.loads(path.read_text()).get("params", {}))
    return tuple(typed.values())
