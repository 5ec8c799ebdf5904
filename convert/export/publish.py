"""Where an export is written until it is proven: the temporary directory, its clean-up, the atomic swap."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import LocalIOError
from ..fsutil import fsync_dir, remove_dead_temps

Log = Callable[[str], None]


def _quiet(_msg: str) -> None:
    pass


def temp_dir_for(out: Path, model_id: str, pid: int | None = None) -> Path:
    return out / f".{model_id}.tmp-{pid or os.getpid()}"


def clear_stale_temp_dirs(out: Path, model_id: str, log: Log = _quiet) -> None:
    """Remove ``.<id>.tmp-<pid>`` directories left by killed exports (their pid is gone)."""
    for child in remove_dead_temps(out, f".{model_id}.tmp-{{pid}}"):
        log(f"removed {child}, left by an interrupted export")


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE). False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def publish_directory(tmp: Path, final: Path) -> None:
    """Move a finished export from ``tmp`` to ``final``; an older ``final`` is replaced atomically.

    With RENAME_EXCHANGE there is no instant at which ``final`` is missing or
    half-written. Without it (other OSes, some filesystems) the old export is
    renamed aside first and restored if the second rename fails.
    """
    if not final.exists():
        os.rename(tmp, final)
        return
    if _exchange(tmp, final):
        shutil.rmtree(tmp)  # now holds the old export
        return
    aside = final.with_name(f".{final.name}.old-{os.getpid()}")
    os.rename(final, aside)
    try:
        os.rename(tmp, final)
    except OSError:
        os.rename(aside, final)
        raise
    shutil.rmtree(aside)


def io_error(what: str, exc: BaseException) -> LocalIOError:
    """A LocalIOError of one line from an OSError or a (multi-line) TF error."""
    detail = getattr(exc, "strerror", None) or getattr(exc, "message", None) or str(exc)
    detail = " ".join(str(detail).split())
    return LocalIOError(f"{what}: {detail}")


def export_bytes(weight_bytes: int, formats, archive: bool = False) -> int:
    """About what an export writes: two variants of the weights per format, two archives of the
    SavedModels with ``archive`` (random-looking floats barely compress), 5% for graphs and cards."""
    copies = 2 * len(formats) + (2 if archive and "savedmodel" in formats else 0)
    return int(weight_bytes * copies * 1.05)


def check_free_space(out: Path, needed: int) -> None:
    """Refuse early when ``out``'s filesystem clearly cannot hold ``needed`` bytes."""
    probe = out
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise LocalIOError(
            f"not enough free space in {probe}: the export needs about {needed / 1e9:.2f} GB, {free / 1e9:.2f} GB free"
        )


@contextlib.contextmanager
def temporary_export(out: Path, model_id: str, log: Log = _quiet) -> Iterator[Path]:
    """A fresh ``<out>/.<id>.tmp-<pid>``; on any exception it is removed, and ``out`` too if this created it (and it is empty).

    The caller publishes with :func:`publish` inside the block; after that the
    temporary directory no longer exists and nothing is removed.
    """
    clear_stale_temp_dirs(out, model_id, log)
    created_out = not out.exists()
    tmp = temp_dir_for(out, model_id)
    try:
        out.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    except OSError as exc:
        raise io_error(f"cannot create {out}", exc) from exc
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created_out:
            with contextlib.suppress(OSError):
                out.rmdir()  # only if still empty: nothing of ours remains
        raise


def publish(tmp: Path, final: Path) -> None:
    """fsync the finished temporary directory, swap it in at ``final``, fsync the parent."""
    fsync_dir(tmp)
    publish_directory(tmp, final)
    fsync_dir(final.parent)
