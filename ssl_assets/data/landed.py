"""Read one file of the landing zone, which is untrusted input.

Why a reader of its own: `open(path).read()` on whatever a user (or an attacker) put under
`landing/` can hang forever (a FIFO blocks `open` until a writer appears, and a signal does not
interrupt it in a worker thread), trigger a driver (a device node), follow a link swapped in
after the walk, or pull a multi-gigabyte file into memory. So a landed file is read only when
it is a regular file no larger than a cap, judged from its metadata before a byte is read
(`lstat`), and opened so that none of the above can happen in the gap between the check and
the read (`O_NOFOLLOW`: a link swapped in fails; `O_NONBLOCK`: a FIFO swapped in does not
block; `fstat` of the open file repeats the check; the read stops at the cap).
"""

from __future__ import annotations

import os
import stat

#: written last into a batch folder: the batch is complete and may be picked up
READY_MARKER = "_READY"

_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISLNK, "a symbolic link"),
)
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)


class LandedFileError(Exception):
    """A landed file that must not be read; `reason` is a quarantine reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def kind_of(mode: int) -> str:
    """What a file of this `st_mode` is, in words."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "a regular file" if stat.S_ISREG(mode) else f"an unknown file type ({mode:o})"


def check_regular(st: os.stat_result) -> None:
    """Refuse, from its metadata alone, anything but a regular file."""
    if not stat.S_ISREG(st.st_mode):
        raise LandedFileError(
            "not_a_regular_file", f"{kind_of(st.st_mode)}: only regular files are read"
        )


def check_landed(st: os.stat_result, max_bytes: int) -> None:
    """Refuse, from its metadata alone, a file that is not regular or is larger than the cap."""
    check_regular(st)
    if st.st_size > max_bytes:
        raise LandedFileError(
            "file_too_large", f"{st.st_size} bytes exceed the limit of {max_bytes} bytes"
        )


def read_landed(
    path: str | os.PathLike[str], max_bytes: int, st: os.stat_result | None = None
) -> bytes:
    """The bytes of a landed regular file of at most `max_bytes` (`st`: its `lstat`, if known).

    Raises `LandedFileError` (reason `not_a_regular_file` or `file_too_large`) without opening a
    file that fails the check, and `OSError` when the file cannot be read.
    """
    check_landed(st if st is not None else os.lstat(path), max_bytes)
    fd = os.open(path, _OPEN_FLAGS)
    with os.fdopen(fd, "rb") as fh:
        check_landed(os.fstat(fd), max_bytes)  # the file opened is the file checked
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise LandedFileError(
            "file_too_large", f"grew past the limit of {max_bytes} bytes while being read"
        )
    return data
