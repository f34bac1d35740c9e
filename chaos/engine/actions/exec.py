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
import threading
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
READ_GRACE_S = 1.0  # how long the output is read after the command's end


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
        return await asyncio.to_thread(self._run)

    def _run(self) -> dict[str, Any]:
        """Runs the command in a thread with `subprocess`, not the event loop's subprocess
        support: the loop's (uvloop's) starts a new session with Python code in the forked child,
        which a process running gRPC's threads must not do (the child crashed with SIGSEGV);
        `subprocess` does it in C between fork and exec."""
        started = time.monotonic()
        done: dict[str, Any] = {"command": shlex.join(self.command)}
        try:
            proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            return done | {"exit": None, "error": exc.strerror or str(exc)}
        kept = bytearray()

        def tail() -> None:
            assert proc.stdout is not None
            while chunk := os.read(proc.stdout.fileno(), READ_BYTES):
                kept.extend(chunk)
                del kept[:-MAX_OUTPUT]

        reader = threading.Thread(target=tail, daemon=True)
        reader.start()
        timed_out = False
        try:
            proc.wait(self.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # Its output ends with its process group; one that left the group is not waited for.
        reader.join(READ_GRACE_S)
        assert proc.stdout is not None
        proc.stdout.close()
        return done | {
            "exit": proc.returncode,
            "timed_out": timed_out,
            "seconds": round(time.monotonic() - started, 3),
            "output": bytes(kept).decode(errors="replace"),
        }


ACTIONS.register("exec", Exec)
