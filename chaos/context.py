"""What every `chaos` command shares: the chosen backend, the local stack, the journal, output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from chaos.backends.base import Backend
from chaos.journal import Journal
from chaos.stack import LocalStack

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
BACKENDS = ("local", "docker")

out = Console(highlight=False, soft_wrap=True)
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
            from chaos.backends.docker import DockerBackend  # the SDK loads only when asked for

            return DockerBackend()
        return self.stack


pass_lab = click.make_pass_decorator(Lab)


def emit_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2))
