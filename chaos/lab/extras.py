"""The optional parts of an install (`pip install 'herdlab[EXTRA]'`) and what a command does
when the one it needs is missing.

A plain `pip install herdlab` runs the services, herds, verbs on local stacks, scenarios and
reports. Extras add what only some commands need: `plot` (matplotlib, the figures of reports and
benchmarks), `docker` (the Docker SDK, `--backend docker`), `tls` (cryptography, the
certificates of `chaos up --tls`), `proto` (grpcio-tools, `chaos herd --proto`) and `locust`
(`chaos herd --workers`). A command that needs a missing extra to do its job exits 2 with one
line naming the install (in a clone, the editable install of that clone, which is how `make
setup` installed it); reports are the exception: they are written without their figures and say
so (the tables are the results; the figures draw them).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

PLOT = "plot"
DOCKER = "docker"
TLS = "tls"
PROTO = "proto"
LOCUST = "locust"

_MODULES = {
    PLOT: "matplotlib",
    DOCKER: "docker",
    TLS: "cryptography",
    PROTO: "grpc_tools",
    LOCUST: "locust",
}
_NAMES = {PROTO: "grpcio-tools", LOCUST: "Locust"}
# A source checkout (a clone): the project's own pyproject.toml above the package.
_CHECKOUT = Path(__file__).resolve().parents[2]


class MissingExtra(Exception):
    """A command needs an extra that is not installed; the message names the install."""


def installed(extra: str) -> bool:
    return importlib.util.find_spec(_MODULES[extra]) is not None


def install_hint(extra: str) -> str:
    if (_CHECKOUT / "pyproject.toml").is_file():
        return f"{sys.executable} -m pip install -e '{_CHECKOUT}[{extra}]'"
    return f"pip install 'herdlab[{extra}]'"


def require(extra: str, purpose: str) -> None:
    """Raises MissingExtra unless `extra` is installed; `purpose` says what needs it."""
    if not installed(extra):
        raise MissingExtra(
            f"{purpose} needs {_NAMES.get(extra, _MODULES[extra])}, which is not installed: "
            f"{install_hint(extra)}"
        )
