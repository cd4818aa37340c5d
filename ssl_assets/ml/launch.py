"""`python -m ssl_assets.ml.launch --parent PID -- COMMAND [ARG ...]`: run COMMAND so that it
dies with the process that started it.

Why: the orchestrating step starts the trainer (`python -m ssl_assets.ml.entrypoint` or
`torchrun ...`) as a child process. When that step is killed outright (`kill -9`, the OOM
killer, a node drain), nothing is left to stop the child: an orphaned trainer keeps the CPU or
GPU busy and finally writes a model nobody registers. Linux can tie a process to its parent:
`prctl(PR_SET_PDEATHSIG, sig)` asks the kernel to send `sig` when the parent dies, and the
setting survives `execve`. So this launcher sets it, checks that its parent is still the
process that started it (it may have died before the `prctl`, and then no signal would ever
come), and replaces itself with COMMAND; the trainer keeps the launcher's pid and the tie.

`die_with_parent` is also called by the training entry point itself, so that the workers of
`torchrun` die with their agent too.

Limits, deliberately accepted: the tie is Linux-only (elsewhere this is a no-op and COMMAND
simply runs); the kernel sends the signal when the *thread* that started the child exits, which
for Dagster's step processes is their main thread; SIGTERM (not SIGKILL) is sent, so torchrun's
agent can stop its workers, and the trainer's atomic checkpoints keep a resumable state.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
from collections.abc import Sequence

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(sig: int = signal.SIGTERM, expected_parent: int | None = None) -> bool:
    """Ask the kernel to send `sig` to this process when its parent dies (Linux); True if set.

    With `expected_parent`, exit at once (status 1) when the parent is no longer that process:
    it died before the request was made, so no signal would ever come.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        ok = libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
    if expected_parent is not None and os.getppid() != expected_parent:
        print(
            f"ssl_assets.ml.launch: parent {expected_parent} is gone; not starting",
            file=sys.stderr,
        )
        sys.exit(1)
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ssl_assets.ml.launch", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--parent", type=int, required=True, help="pid of the starting process")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG ...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    die_with_parent(signal.SIGTERM, expected_parent=args.parent)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(command[0], command)  # does not return; the death signal survives exec
    return 1  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
