"""The optional parts of an install (`pip install 'herdlab[EXTRA]'`) and what a command does
when the one it needs is missing.

A plain `pip install herdlab` runs the services, herds, verbs on local stacks, scenarios and
reports. Three extras add what only some commands need: `plot` (matplotlib, the figures of
reports and benchmarks), `docker` (the Docker SDK, `--backend docker`) and `tls` (cryptography,
the certificates of `chaos up --tls`). A command that needs a
missing extra to do its job exits 2 with one line naming the install; reports are the exception:
they are written without their figures and say so (the tables are the results; the figures draw
them).
"""

from __future__ import annotations

import importlib.util

PLOT = "plot"
DOCKER = "docker"
TLS = "tls"

_MODULES = {PLOT: "matplotlib", DOCKER: "docker", TLS: "cryptography"}


class MissingExtra(Exception):
    """A command needs an extra that is not installed; the message names the install."""


def installed(extra: str) -> bool:
    return importlib.util.find_spec(_MODULES[extra]) is not None


def install_hint(extra: str) -> str:
    return f"pip install 'herdlab[{extra}]'"


def require(extra: str, purpose: str) -> None:
    """Raises MissingExtra unless `extra` is installed; `purpose` says what needs it."""
    if not installed(extra):
        raise MissingExtra(
            f"{purpose} needs {_MODULES[extra]}, which is not installed: {install_hint(extra)}"
        )
