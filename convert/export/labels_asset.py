"""Class names inside the classification SavedModel: ``assets/labels.txt``.

The file is a ``tf.saved_model.Asset`` tracked by the exported root (as
``root.labels_file``), so ``tf.saved_model.save`` copies it into the
SavedModel's ``assets/`` and ``tf.saved_model.load`` gives it back as
``loaded.labels_file.asset_path``, pointing into wherever the SavedModel was
moved or extracted (an untracked file dropped into ``assets/`` would not be
in the graph and a loader could not find it). One name per line, line i =
output i; the same text as the bucket's label file.

The orchestrator wraps the save of the classifier::

    with tracked_labels(root, job.labels):   # job.labels None: nothing is attached
        tf.saved_model.save(root, path, signatures=...)

and checks the reloaded model with :func:`check_reloaded_labels`. Other targets
can write :func:`labels_text` beside their artifact.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import ExportError
from ..fsutil import atomic_write

#: File name inside ``<SavedModel>/assets/`` and the root attribute that tracks it.
LABELS_FILE = "labels.txt"
LABELS_ATTRIBUTE = "labels_file"


def labels_text(labels: Sequence[str]) -> str:
    return "".join(f"{name}\n" for name in labels)


@contextlib.contextmanager
def tracked_labels(root, labels: Sequence[str] | None) -> Iterator[Path | None]:
    """Attach ``labels`` to ``root`` as a tracked asset for the duration of a save.

    The source file lives in a temporary directory outside the export and is
    removed afterwards; the SavedModel keeps its own copy under ``assets/``.
    Yields the source path, or None when ``labels`` is None (nothing attached).
    """
    if labels is None:
        yield None
        return
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="bitconvert-labels-") as scratch:
        path = Path(scratch) / LABELS_FILE
        path.write_text(labels_text(labels), encoding="utf-8")
        setattr(root, LABELS_ATTRIBUTE, tf.saved_model.Asset(str(path)))
        yield path


def labels_manifest(entry, labels: Sequence[str] | None, formats: Sequence[str] = ("savedmodel",)) -> dict:
    """The manifest's ``labels`` section: which file, whether the classifiers carry it, and where.

    ``paths``: the SavedModel's tracked asset, and for every other format its
    ``<format>/labels.txt`` beside the classifier.
    """
    paths = None
    if labels is not None:
        paths = [f"classification/assets/{LABELS_FILE}" if f == "savedmodel" else f"{f}/{LABELS_FILE}" for f in formats]
    return {
        "file": entry.labels,
        "embedded": labels is not None,
        "path": paths[0] if paths else None,
        "paths": paths,
        "count": len(labels) if labels is not None else None,
    }


def saved_labels_path(savedmodel_dir: str | Path) -> Path:
    return Path(savedmodel_dir) / "assets" / LABELS_FILE


def read_saved_labels(savedmodel_dir: str | Path) -> tuple[str, ...] | None:
    """The class names a SavedModel carries (``assets/labels.txt``), or None when it has none."""
    path = saved_labels_path(savedmodel_dir)
    if not path.is_file():
        return None
    return tuple(path.read_text(encoding="utf-8").splitlines())


def check_reloaded_labels(loaded, savedmodel_dir: str | Path, labels: Sequence[str] | None, model_id: str) -> None:
    """The reloaded SavedModel tracks exactly ``labels`` (or no labels when None); ExportError otherwise."""
    asset = getattr(loaded, LABELS_ATTRIBUTE, None)
    if labels is None:
        if asset is not None or saved_labels_path(savedmodel_dir).exists():
            raise ExportError(f"{model_id}: the SavedModel carries labels although none were given")
        return
    if asset is None:
        raise ExportError(f"{model_id}: the reloaded SavedModel has no {LABELS_ATTRIBUTE} asset")
    got = Path(asset.asset_path.numpy().decode())
    if got.resolve() != saved_labels_path(savedmodel_dir).resolve():
        raise ExportError(f"{model_id}: the labels asset points at {got}, not at assets/{LABELS_FILE}")
    if got.read_text(encoding="utf-8") != labels_text(labels):
        raise ExportError(f"{model_id}: assets/{LABELS_FILE} does not hold the {len(labels)} labels written")


def write_label_files(job, written) -> None:
    """The class names beside every classifier that is not a SavedModel (which tracks them as an asset): ``<dir>/labels.txt``."""
    if job.labels is None:
        return
    for name, artifacts in written.items():
        for a in artifacts:
            if name != "savedmodel" and a.variant == "classification":
                atomic_write(job.export_dir / Path(a.path).parent / LABELS_FILE, labels_text(job.labels))
