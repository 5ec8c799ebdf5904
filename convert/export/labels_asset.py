"""The class names of an export's classifiers: one name per line, line i = output i, and where each target puts them.

Every target declares where a classifier's class names go
(:meth:`convert.export.target.ExportTarget.labels_path`): a target that embeds
them writes them itself (``embeds_labels``), for the others the orchestrator
writes :func:`labels_text` there with :func:`write_label_file`. The text is
the same as the bucket's label file. :func:`labels_manifest` is the
manifest's ``labels`` section.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..fsutil import atomic_write

#: The file name of the class names, beside a classifier or inside it.
LABELS_FILE = "labels.txt"


def labels_text(labels: Sequence[str]) -> str:
    return "".join(f"{name}\n" for name in labels)


def labels_manifest(entry, labels: Sequence[str] | None, paths: Sequence[str]) -> dict:
    """The manifest's ``labels`` section: which file, whether the classifiers carry it, and where.

    ``paths``: where each target put the class names (relative to the export
    directory; convert.export.target.ExportTarget.labels_path), in target order.
    """
    paths = list(paths) if labels is not None else None
    return {
        "file": entry.labels,
        "embedded": labels is not None,
        "path": paths[0] if paths else None,
        "paths": paths,
        "count": len(labels) if labels is not None else None,
    }


def write_label_file(export_dir: Path, rel: str, labels: Sequence[str]) -> None:
    """The class names at ``rel`` under the export directory (beside a classifier that does not embed them)."""
    atomic_write(Path(export_dir) / rel, labels_text(labels))
