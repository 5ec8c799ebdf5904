"""Deterministic ``.tar.gz`` archives of a SavedModel directory (the TF Hub upload format).

The same directory contents always give the same archive bytes: members are
sorted by name, every mtime is 0, uid/gid are 0 with empty owner names, modes
are normalised (0644 files, 0755 directories) and the gzip header carries
neither a file name nor a timestamp. Only the members TF Hub hosting accepts
are stored (``saved_model.pb``, ``variables/``, ``assets/``, ...); anything
else in the directory is an error rather than silently shipped or dropped.

``fingerprint.pb`` is left out: it holds a random UUID (by design: TF's
SavedModel fingerprinting, ``tf.saved_model.experimental.read_fingerprint``), so including it would make two exports of the same
weights give different archives. TensorFlow loads a SavedModel without it.
"""

from __future__ import annotations

import gzip
import os
import re
import tarfile
from pathlib import Path

from ..errors import ExportError, LocalIOError
from ..fsutil import atomic_writer

#: Members TF Hub hosting accepts at the root of a SavedModel archive.
_ALLOWED = re.compile(
    r"^(saved_model\.pb|fingerprint\.pb|keras_metadata\.pb|tfhub_module\.pb"
    r"|variables|variables/variables\.(index|data-\d{5}-of-\d{5})"
    r"|assets|assets/.+|assets\.extra|assets\.extra/.+)$"
)
#: Fixed compression level: part of what makes the bytes reproducible.
COMPRESS_LEVEL = 6


def archive_members(root: Path) -> list[str]:
    """Relative POSIX names of everything under ``root`` that goes into the archive, sorted.

    Raises ExportError on a member TF Hub would not accept, or on a symlink.
    """
    names: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = Path(dirpath).relative_to(root)
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            rel = (rel_dir / name).as_posix()
            if full.is_symlink():
                raise ExportError(f"{full}: symbolic links are not archived")
            if rel == "fingerprint.pb":
                continue
            if not _ALLOWED.match(rel):
                raise ExportError(f"{full}: not a SavedModel member TF Hub accepts in an archive")
            names.append(rel)
    return sorted(names)


def _normalised_info(path: Path, name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if path.is_dir():
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        info.size = 0
    else:
        info.type = tarfile.REGTYPE
        info.mode = 0o644
        info.size = path.stat().st_size
    return info


def _add_member(tar: tarfile.TarFile, path: Path, name: str) -> None:
    info = _normalised_info(path, name)
    if info.isdir():
        tar.addfile(info)
    else:
        with open(path, "rb") as f:
            tar.addfile(info, f)


def write_archive(src_dir: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Write ``src_dir``'s SavedModel as a deterministic ``.tar.gz`` at ``dest``.

    Member names are relative to ``src_dir`` (``saved_model.pb``, not
    ``classification/saved_model.pb``), as TF Hub expects. The archive is written
    to a temporary name beside ``dest`` and renamed, so ``dest`` is either
    complete or absent.
    """
    src, dest = Path(src_dir), Path(dest)
    names = archive_members(src)
    try:
        with atomic_writer(dest) as raw:
            # filename="" and mtime=0 keep the gzip header free of the temp name and the clock.
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=COMPRESS_LEVEL, mtime=0) as gz:
                with tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
                    for name in names:
                        _add_member(tar, src / name, name)
    except OSError as exc:
        raise LocalIOError(f"cannot write archive {dest}: {exc.strerror or exc}") from exc
    return dest
