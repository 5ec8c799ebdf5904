"""Class names inside the classification SavedModel: ``assets/labels.txt``, a tracked asset.

The file is a ``tf.saved_model.Asset`` tracked by the exported root (as
``root.labels_file``), so ``tf.saved_model.save`` copies it into the
SavedModel's ``assets/`` and ``tf.saved_model.load`` gives it back as
``loaded.labels_file.asset_path``, pointing into wherever the SavedModel was
moved or extracted (an untracked file dropped into ``assets/`` would not be
in the graph and a loader could not find it). One name per line, line i =
output i (:func:`convert.export.labels_asset.labels_text`).

The savedmodel target wraps the save of the classifier::

    with tracked_labels(root, job.labels):   # job.labels None: nothing is attached
        tf.saved_model.save(root, path, signatures=...)

and checks the reloaded model with :func:`check_reloaded_labels`.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import ExportError
from .labels_asset import LABELS_FILE, labels_text

#: The root attribute that tracks the asset.
LABELS_ATTRIBUTE = "labels_file"


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


def saved_labels_path(model_dir: str | Path) -> Path:
    return Path(model_dir) / "assets" / LABELS_FILE


def read_saved_labels(model_dir: str | Path) -> tuple[str, ...] | None:
    """The class names a SavedModel carries (``assets/labels.txt``), or None when it has none."""
    path = saved_labels_path(model_dir)
    if not path.is_file():
        return None
    return tuple(path.read_text(encoding="utf-8").splitlines())


def check_reloaded_labels(loaded, model_dir: str | Path, labels: Sequence[str] | None, model_id: str) -> None:
    """The reloaded SavedModel tracks exactly ``labels`` (or no labels when None); ExportError otherwise."""
    asset = getattr(loaded, LABELS_ATTRIBUTE, None)
    if labels is None:
        if asset is not None or saved_labels_path(model_dir).exists():
            raise ExportError(f"{model_id}: the SavedModel carries labels although none were given")
        return
    if asset is None:
        raise ExportError(f"{model_id}: the reloaded SavedModel has no {LABELS_ATTRIBUTE} asset")
    got = Path(asset.asset_path.numpy().decode())
    if got.resolve() != saved_labels_path(model_dir).resolve():
        raise ExportError(f"{model_id}: the labels asset points at {got}, not at assets/{LABELS_FILE}")
    if got.read_text(encoding="utf-8") != labels_text(labels):
        raise ExportError(f"{model_id}: assets/{LABELS_FILE} does not hold the {len(labels)} labels written")
