"""Open a local input (a checkpoint, an image) only when it is a regular file.

A FIFO blocks its reader until someone writes, a character device such as
``/dev/zero`` never ends, a directory has no bytes: each is refused with one
line before anything is read. The path is opened with ``O_NONBLOCK`` (so a
FIFO does not block the open) and checked with ``fstat`` on the open
descriptor, so the check and the read see the same file.
"""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path
from typing import BinaryIO

from .errors import BitconvertError

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def kind_of(mode: int) -> str:
    """What a non-regular file is, in words ("a directory", "a FIFO (named pipe)", ...)."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_regular(path: str | os.PathLike, error: type[BitconvertError], label: str = "") -> BinaryIO:
    """``path`` opened for binary reading, or ``error`` with one line when it is missing, unreadable or not a regular file.

    ``label`` prefixes the path in messages (e.g. ``"--checkpoint "``).
    """
    name = f"{label}{Path(path)}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise error(f"{name}: no such file") from None
    except OSError as exc:
        raise error(f"{name}: cannot read: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise error(f"{name}: is {kind_of(mode)}, not a regular file")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def require_regular(path: str | os.PathLike, error: type[BitconvertError], label: str = "") -> Path:
    """``Path(path)`` when it is a readable regular file; else ``error`` (see :func:`open_regular`)."""
    open_regular(path, error, label).close()
    return Path(path)
