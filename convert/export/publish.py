"""Where an export is written until it is proven: the temporary directory, its clean-up, the atomic swap.

``DIR/<id>`` is only ever replaced when it holds an earlier bitconvert export
(a real directory whose manifest.json says so) that does not contain the
checkpoint being read; anything else there (a user's directory, a file, a
symlink) is refused before any work starts, and again just before the swap.
The temporary directory ``DIR/.<id>.tmp-<pid>-<random>`` is locked (flock)
for as long as its export runs: a directory nobody holds a lock on was left
by a killed export and is removed by the next one (convert.fsutil).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from .. import interrupts
from ..errors import LocalIOError
from ..fsutil import fsync_dir, make_locked_dir, remove_unlocked_dirs
from .manifest import MANIFEST_FORMAT, MANIFEST_NAME

Log = Callable[[str], None]


def _quiet(_msg: str) -> None:
    pass


def temp_dir_prefix(model_id: str) -> str:
    """The name of every temporary directory of ``model_id``'s exports begins so: ``.<id>.tmp-``."""
    return f".{model_id}.tmp-"


def clear_stale_temp_dirs(out: Path, model_id: str, log: Log = _quiet) -> None:
    """Remove ``.<id>.tmp-*`` directories left by killed exports (no process holds their lock)."""
    for child in remove_unlocked_dirs(out, temp_dir_prefix(model_id)):
        log(f"removed {child}, left by an interrupted export")


def is_bitconvert_export(path: Path, model_id: str) -> bool:
    """``path`` is a real directory holding the manifest.json of an export of ``model_id``."""
    if path.is_symlink() or not path.is_dir():
        return False
    manifest = path / MANIFEST_NAME
    if manifest.is_symlink() or not manifest.is_file():
        return False
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    fmt = MANIFEST_FORMAT.split("/")[0] + "/"
    return (
        isinstance(data, dict) and str(data.get("format", "")).startswith(fmt) and (data.get("model") or {}).get("id") == model_id
    )


def check_export_path(final: Path, checkpoint: Path | None = None) -> None:
    """Refuse (LocalIOError) when ``final`` holds anything but an earlier export that does not contain ``checkpoint``."""
    if not os.path.lexists(final):
        return
    model_id = final.name
    if final.is_symlink():
        what = "a symlink"
    elif not final.is_dir():
        what = "a file"
    elif not is_bitconvert_export(final, model_id):
        what = "a directory that is not a bitconvert export (no manifest.json of one)"
    elif checkpoint is not None and Path(checkpoint).resolve().is_relative_to(final.resolve()):
        what = "the export holding the checkpoint being read"
    else:
        return
    raise LocalIOError(f"{final} is {what}: not replacing it; move it away or choose another --output-dir")


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

    The caller has checked that ``final`` may be replaced (:func:`check_export_path`).

    With RENAME_EXCHANGE there is no instant at which ``final`` is missing or
    half-written. Without it (other OSes, some filesystems) the old export is
    renamed aside first and restored if the second rename fails.
    """
    if not os.path.lexists(final):
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


def export_bytes(weight_bytes: int, targets, options) -> int:
    """About what an export writes: the copies of the weights each target's artifacts hold, 5% for graphs and cards."""
    copies = sum(t.weight_copies(options) for t in targets)
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
    """A fresh, locked ``<out>/.<id>.tmp-<pid>-<random>``; on any exception or ending signal it is
    removed, and ``out`` too if this created it (and it is empty).

    The caller publishes with :func:`publish` inside the block; after that the
    temporary directory no longer exists and nothing is removed.
    """
    clear_stale_temp_dirs(out, model_id, log)
    created_out = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        tmp, lock_fd = make_locked_dir(out, temp_dir_prefix(model_id))
    except OSError as exc:
        raise io_error(f"cannot create {out}", exc) from exc

    def remove() -> None:
        shutil.rmtree(tmp, ignore_errors=True)
        if created_out:
            with contextlib.suppress(OSError):
                out.rmdir()  # only if still empty: nothing of ours remains

    try:
        with interrupts.on_stop(remove):
            yield tmp
    except BaseException:
        remove()
        raise
    finally:
        os.close(lock_fd)


def publish(tmp: Path, final: Path, checkpoint: Path | None = None) -> None:
    """fsync the finished temporary directory, swap it in at ``final``, fsync the parent.

    ``final`` is checked again (something may have appeared there meanwhile); a
    signal that has arrived stops the publishing (convert.interrupts).
    """
    fsync_dir(tmp)
    with interrupts.critical():
        check_export_path(final, checkpoint)
        publish_directory(tmp, final)
    fsync_dir(final.parent)
