"""The tether: a scenario's stack does not outlive the `chaos` process that owns it.

A scenario starts its own stack and tears it down when it ends, is interrupted, or is sent
SIGTERM or SIGHUP. A controller that dies by SIGKILL (an OOM kill, `kill -9`, a CI runner that
gives up) runs no code at all, so something else must: `python -m chaos.lab.tether OWNER_PID
STATE_DIR`, started beside the stack in a session of its own, waits for the owner to exit
(a pidfd: woken by the kernel, no polling) and then stops every process the stack's state file
names, whatever kind it is, and removes the folder. When the owner ends normally it stops the
tether first, so the tether acts only on a death nobody cleaned up after.

Stacks started by `chaos up` have no tether: they keep running until `chaos down`.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
from pathlib import Path

# A scenario longer than a day is not one the lab ships; past it the tether stops watching.
MAX_WATCH_S = 86_400.0


def start(owner_pid: int, state_dir: Path) -> subprocess.Popen[bytes]:
    """Starts the tether for the stack in `state_dir`, owned by `owner_pid`."""
    return subprocess.Popen(
        [sys.executable, "-m", "chaos.lab.tether", str(owner_pid), str(state_dir)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C and a terminal's hangup reach the owner, not this
    )


def release(tether: subprocess.Popen[bytes]) -> None:
    """Stops the tether of a stack its owner has torn down itself."""
    tether.terminate()
    try:
        tether.wait(timeout=5)
    except subprocess.TimeoutExpired:
        tether.kill()
        tether.wait(timeout=5)


def wait_exit(pid: int, timeout_s: float) -> bool:
    """True once process `pid` has exited (also when it had already), False after `timeout_s`."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(timeout_s * 1000))
    finally:
        os.close(fd)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[0].isdigit():
        print("usage: python -m chaos.lab.tether OWNER_PID STATE_DIR", file=sys.stderr)
        return 2
    owner, state_dir = int(argv[0]), Path(argv[1])
    # The owner's release is a SIGTERM: leave at once, the stack is the owner's to stop.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if not wait_exit(owner, MAX_WATCH_S):
        return 0
    from chaos.lab.backends.local import (
        LocalStack,  # only on the path that needs it: a tether starts fast
    )

    LocalStack(state_dir).down()
    shutil.rmtree(state_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
