"""File-system helpers shared by the downloader, the exporter and the synthetic checkpoints: the only copies.

Temporary files are named ``.<name>.<pid>.<random>.tmp`` beside their final
path, so that :func:`remove_dead_temps` can tell a leftover of a killed
process (its pid is gone) from the work of a live one: the downloader's
short-lived files in a cache of one host. The directories of long work that
another machine or container may share (an export's temporary directory, the
reference worker's) are told apart by a lock instead (:func:`make_locked_dir`,
:func:`remove_unlocked_dirs`): a pid means nothing across PID namespaces.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import BitconvertError

TEMP_SUFFIX = ".tmp"
#: fsync of a directory is not supported everywhere (some network and FUSE filesystems).
_NO_DIR_FSYNC = (errno.EINVAL, errno.ENOTSUP, errno.EBADF)


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a directory, so a rename inside it survives a power cut (raises OSError)."""
    fd = os.open(Path(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir_if_supported(path: Path) -> None:
    try:
        fsync_dir(path)
    except OSError as exc:
        if exc.errno not in _NO_DIR_FSYNC:
            raise


def temp_path(path: str | os.PathLike) -> Path:
    """A process-unique temporary name beside ``path``: ``.<name>.<pid>.<8 hex>.tmp``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}")


def replace_durably(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """``os.replace(src, dest)``, then fsync ``dest``'s directory so the rename is on disk."""
    dest = Path(dest)
    os.replace(src, dest)
    _fsync_dir_if_supported(dest.parent)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content into; ``path`` changes only if the block succeeds.

    The bytes go to a temporary file in the same directory, which is fsynced,
    renamed over ``path`` and followed by an fsync of the directory. On any
    exception the temporary file is removed and ``path`` is untouched. OSError
    propagates as is (callers word it).
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "xb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        replace_durably(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (str as UTF-8) to ``path`` atomically and durably; returns ``path``."""
    with atomic_writer(path) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def pid_alive(pid: int) -> bool:
    """True when a process ``pid`` exists (also one of another user, which we may not signal)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    pieces = re.split(r"(\{pid\}|\*)", pattern)
    if "{pid}" not in pieces:
        raise ValueError(f"pattern {pattern!r} has no {{pid}}")
    table = {"{pid}": r"(?P<pid>\d+)", "*": r".*"}
    return re.compile("".join(table.get(p, re.escape(p)) for p in pieces))


def remove_dead_temps(directory: str | os.PathLike, pattern: str) -> list[Path]:
    """Remove the files and directories in ``directory`` whose name matches ``pattern`` and whose pid is gone.

    ``pattern`` is a name with ``{pid}`` where the owner's process id stands
    and ``*`` for any text, e.g. ``".obj.bin.{pid}.*.tmp"`` (the names of
    :func:`temp_path`) or ``".r50x1-160.tmp-{pid}"``. Entries of this process
    and of live processes are kept. Returns what was removed.
    """
    directory = Path(directory)
    regex = _pattern_regex(pattern)
    removed = []
    try:
        children = list(directory.iterdir())
    except OSError:
        return removed
    for child in children:
        match = regex.fullmatch(child.name)
        if match is None:
            continue
        pid = int(match["pid"])
        if pid == os.getpid() or pid_alive(pid):
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                child.unlink()
        removed.append(child)
    return removed


def _try_lock(fd: int) -> bool | None:
    """An exclusive, non-blocking flock on ``fd``: True taken, False held by another, None unsupported here."""
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return None
    return True


def make_locked_dir(parent: str | os.PathLike, prefix: str) -> tuple[Path, int]:
    """A fresh directory ``<parent>/<prefix><pid>-<8 hex>`` and an open fd holding an exclusive flock on it.

    The lock, not a process id, says the directory is in use: process ids
    mean nothing across containers that share a volume. The directory is made
    under another name and renamed once locked, so it never exists unlocked
    under a name :func:`remove_unlocked_dirs` looks at. Close the fd (or end
    the process, however it ends) to release it.
    """
    parent = Path(parent)
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    making = parent / f".{token}.bitconvert-new"
    making.mkdir()
    try:
        fd = os.open(making, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        making.rmdir()
        raise
    _try_lock(fd)  # unsupported (some network filesystems): the directory is then never judged stale
    final = parent / f"{prefix}{token}"
    try:
        os.rename(making, final)
    except OSError:
        os.close(fd)
        shutil.rmtree(making, ignore_errors=True)
        raise
    return final, fd


def remove_unlocked_dirs(directory: str | os.PathLike, prefix: str) -> list[Path]:
    """Remove the directories in ``directory`` named ``<prefix>...`` that no process holds a lock on.

    Their owner was killed (a lock dies with its process). A directory whose
    lock cannot be tested, a symlink and a file are left alone. Returns what was removed.
    """
    removed = []
    try:
        children = [c for c in Path(directory).iterdir() if c.name.startswith(prefix)]
    except OSError:
        return removed
    for child in children:
        try:
            fd = os.open(child, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            if _try_lock(fd):  # held while removing: nobody can take it meanwhile
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child)
        finally:
            os.close(fd)
    return removed


# --- local inputs: only regular files are read ------------------------------------------------
# Open a local input (a checkpoint, an image) only when it is a regular file.
#
# A FIFO blocks its reader until someone writes, a character device such as
# ``/dev/zero`` never ends, a directory has no bytes: each is refused with one
# line before anything is read. The path is opened with ``O_NONBLOCK`` (so a
# FIFO does not block the open) and checked with ``fstat`` on the open
# descriptor, so the check and the read see the same file.

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
