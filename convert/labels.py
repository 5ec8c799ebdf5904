"""Class names of a head: fetched from the bucket like checkpoints, parsed, checked.

Each registry entry names its label file (``entry.labels``):
``ilsvrc2012_wordnet_lemmas.txt`` for the 1000-class ImageNet heads,
``imagenet21k_wordnet_lemmas.txt`` for the 21843-class BiT-M heads, None for
heads whose labels are not published (VTAB-1k, the 128-px teachers). Line i
names class i (``tench, Tinca tinca``).

The file comes from ``--base-url`` (or the official bucket) through the same
verified, cached downloader as the checkpoints, also when ``--checkpoint``
gave a local weights file. Offline with nothing cached, :func:`load_labels`
returns None after one warning and the export goes on with indices. A file
whose line count differs from the head's classes is an error
(:class:`convert.errors.LabelsError`), never a silent misalignment.

The 1000 ILSVRC-2012 lemmas also ship with the package
(``convert/data/ilsvrc2012_wordnet_lemmas.txt``, derived from timm:
``scripts/make_labels.py``, license in ``convert/data/NOTICE``); the demo serves
that copy from its loopback mirror.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .errors import DownloadError, LabelsError, OfflineError
from .registry import LABEL_FILES, ModelEntry

Log = Callable[[str], None]
#: Package data directory (setup.cfg [options.package_data]).
DATA_DIR = Path(__file__).resolve().parent / "data"


def _silent(_msg: str) -> None:
    pass


def packaged_labels_path(name: str) -> Path | None:
    """The copy of label file ``name`` shipped with the package, if there is one."""
    path = DATA_DIR / name
    return path if name in LABEL_FILES and path.is_file() else None


def parse_labels(text: str, classes: int, source: str) -> tuple[str, ...]:
    """The class names of a label file, one per line; refuses a file that does not fit ``classes``."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline
    names = tuple(line.rstrip("\r") for line in lines)
    if len(names) != classes:
        raise LabelsError(f"{source}: {len(names)} lines but the head has {classes} classes; a wrong or damaged label file")
    empty = [i for i, n in enumerate(names) if not n.strip()]
    if empty:
        raise LabelsError(f"{source}: empty class name on line {empty[0] + 1} ({len(empty)} in all)")
    return names


def read_labels_file(path: str | os.PathLike, classes: int) -> tuple[str, ...]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelsError(f"{path}: cannot read the label file: {exc}") from exc
    return parse_labels(text, classes, str(path))


def labels_policy():
    """How hard to try for a label file: two requests, then export without names.

    The names are optional (an export proves the weights) and a few kB: the
    checkpoints' policy would hold an export for many seconds of retries on an
    unreachable bucket before the warning (docs/performance.md).
    """
    from .fetch import RetryPolicy

    return RetryPolicy(connect_timeout=10.0, read_timeout=30.0, attempts=2, max_requests=4, deadline=60.0)


def fetch_object(name: str, *, cache_dir=None, base_url=None, offline=False, log: Log = _silent) -> Path:
    """The verified cached copy of bucket object ``name`` (the checkpoints' downloader and cache, :func:`labels_policy`)."""
    from .fetch import fetch_file

    return fetch_file(name, cache_dir=cache_dir, base_url=base_url, offline=offline, quiet=True, log=log, policy=labels_policy())


Fetch = Callable[..., Path]


def load_labels(
    entry: ModelEntry,
    *,
    cache_dir=None,
    base_url=None,
    offline: bool = False,
    log: Log = _silent,
    fetch: Fetch = fetch_object,
) -> tuple[str, ...] | None:
    """The class names of ``entry``'s head, or None: not published, or offline and not cached.

    ``log`` gets one line when the labels are unavailable (``<id>: warning: ...``);
    a download that fails online is a warning too (the weights, not the names,
    are what an export proves). A file that arrives but does not fit the head
    raises :class:`LabelsError`; bytes that fail verification raise the
    downloader's own error.
    """
    if entry.labels is None:
        return None
    try:
        path = fetch(entry.labels, cache_dir=cache_dir, base_url=base_url, offline=offline, log=log)
    except OfflineError:
        log(f"{entry.id}: warning: offline and {entry.labels} is not cached: exporting without class names (indices only)")
        return None
    except DownloadError as exc:
        log(f"{entry.id}: warning: cannot fetch {entry.labels} ({exc}): exporting without class names (indices only)")
        return None
    return read_labels_file(path, entry.classes)
