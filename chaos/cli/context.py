"""What every `chaos` command shares: the chosen backend, the local stack, the journal, output."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from chaos.engine.herd import ProgressFactory, ProgressFn
from chaos.lab import extras
from chaos.lab.backends.base import Backend, BackendError
from chaos.lab.backends.local import LocalStack
from chaos.lab.journal import Journal
from chaos.lab.state import ServiceRecord
from herdlab.grpcutil import TLS_CA_ENV, env_tls_ca

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
BACKENDS = ("local", "docker")

# In a pipe rich would assume 80 columns and cut the tables; a log file has room for them.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class Lab:
    def __init__(self, state_dir: Path, backend_name: str) -> None:
        self.state_dir = state_dir
        self.backend_name = backend_name
        self.journal = Journal(state_dir / "journal.jsonl")

    @property
    def stack(self) -> LocalStack:
        return LocalStack(self.state_dir)

    def backend(self) -> Backend:
        if self.backend_name == "docker":
            extras.require(extras.DOCKER, "--backend docker")
            from chaos.lab.backends.docker import DockerBackend  # the SDK loads only when asked for

            return DockerBackend()
        return self.stack

    def tls_ca(self, records: Mapping[str, ServiceRecord] | None = None) -> str | None:
        """The CA the controller's clients verify the services against: `HERDLAB_TLS_CA`, else
        the local stack's (of `records`, default: its state file read now) when it runs TLS;
        None: plaintext."""
        given = env_tls_ca()
        if given is not None and not Path(given).is_file():
            raise BackendError(f"{TLS_CA_ENV}={given}: no such file")
        if given is not None or self.backend_name != "local":
            return given
        return self.stack.tls_ca(records)


pass_lab = click.make_pass_decorator(Lab)


def emit_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2))


@contextmanager
def progress_display(enabled: bool) -> Iterator[ProgressFactory]:
    """A live progress bar per phase on a terminal; nothing in a pipe."""
    if not (enabled and err.is_terminal):
        yield lambda _title: None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as progress:

        def make(title: str) -> ProgressFn:
            task = progress.add_task(title, total=None)

            def update(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            return update

        yield make
