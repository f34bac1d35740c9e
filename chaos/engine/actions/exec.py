"""`exec [--timeout D] COMMAND...` (experiment files only): runs the user's own command, e.g. to
kill or restore their service (`exec docker kill api`, `exec systemctl restart api`, a script).

The command's words are split as a shell would (quotes keep words together) and run without a
shell (`exec sh -c '...'` for a pipe), in a session of its own, its input empty. It is bounded
in time: past `--timeout` (default 60 s, at most 1 h) its whole process group is killed and the
step says so. Its exit
status and the last `MAX_OUTPUT` bytes of its output (stdout and stderr together) go into the
journal; a command that fails does not stop the run (the journal has why).

A file is someone else's code: `chaos run` refuses a file with an exec step unless its command
line says `--allow-exec`, and `chaos run --check` lists the commands a file would run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Any

import click

from chaos.engine.actions.base import Action, Arg, positive_duration
from chaos.engine.registry import ACTIONS
from herdlab.config import DURATION

MAX_OUTPUT = 4096
DEFAULT_TIMEOUT_S = 60.0
READ_BYTES = 64 * 1024


@dataclass(frozen=True)
class Exec(Action):
    timeout_s: float
    command: tuple[str, ...]
    usage = "exec [--timeout D] COMMAND..."
    args = (
        Arg(
            "timeout_s",
            DURATION,
            "Kill the command after this long.",
            "--timeout",
            required=False,
            default=DEFAULT_TIMEOUT_S,
            check=positive_duration,
        ),
        Arg("command", click.STRING, "The command and its arguments.", many=True),
    )

    def said(self) -> str:
        return f"ran {shlex.join(self.command)}"

    def acts_on(self) -> str:
        return self.command[0]

    async def run(self, target: Any) -> dict[str, Any]:
        started = time.monotonic()
        done: dict[str, Any] = {"command": shlex.join(self.command)}
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            return done | {"exit": None, "error": exc.strerror or str(exc)}
        kept = bytearray()

        async def tail() -> None:
            assert proc.stdout is not None
            while chunk := await proc.stdout.read(READ_BYTES):
                kept.extend(chunk)
                del kept[:-MAX_OUTPUT]

        timed_out = False
        try:
            await asyncio.wait_for(asyncio.gather(tail(), proc.wait()), self.timeout_s)
        except TimeoutError:
            timed_out = True
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        return done | {
            "exit": proc.returncode,
            "timed_out": timed_out,
            "seconds": round(time.monotonic() - started, 3),
            "output": kept.decode(errors="replace"),
        }


ACTIONS.register("exec", Exec)
