"""Kaggle Models metadata for an export (``bitconvert export --kaggle OWNER/MODEL``).

Kaggle Models (tfhub.dev's successor) names an upload
``<owner>/<model>/<framework>/<variation>``. The kaggle CLI reads
``model-metadata.json`` for ``kaggle models create -p DIR`` and
``model-instance-metadata.json`` beside the files of one framework variation
for ``kaggle models instances create -p DIR``. For each export this writes::

    <id>/kaggle/model-metadata.json
    <id>/kaggle/<framework>/<variation>/model-instance-metadata.json   one per artifact written
    <id>/kaggle/<framework>/<variation>/...                            the artifact, hard-linked

The variation is ``<id>-classification`` or ``<id>-feature-vector``; the
framework and the usage code are the target's
(:attr:`convert.export.target.ExportTarget.kaggle_framework`, ``kaggle_usage``);
a target without a framework has no instance. The artifact's files are hard
links (no second copy on disk; a copy where links are impossible), so each
instance folder is uploadable as it is, with ``-r tar`` for a directory's
subfolders. :func:`kaggle_files` is pure (text only); :func:`link_instances`
does the linking.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import LocalIOError
from ..fsutil import atomic_write
from .publish import io_error
from .target import Artifact

if TYPE_CHECKING:
    from ..registry import ModelEntry
    from .state import ExportState
    from .target import ExportTarget

VARIATION_SUFFIX = {"classification": "classification", "feature_extraction": "feature-vector"}
LICENSE_NAME = "Apache 2.0"  # the BiT weights' license (google-research/big_transfer)
KAGGLE_DIR = "kaggle"
MODEL_METADATA = "model-metadata.json"
INSTANCE_METADATA = "model-instance-metadata.json"
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,48}[a-z0-9]$|^[a-z0-9]$")


def parse_handle(value: str) -> tuple[str, str]:
    """``OWNER/MODEL`` -> (owner, model); both Kaggle slugs (lowercase letters, digits, hyphens)."""
    parts = value.split("/")
    if len(parts) != 2 or not all(_SLUG.match(p) for p in parts):
        raise ValueError(f"--kaggle wants OWNER/MODEL, two slugs of lowercase letters, digits and hyphens, got {value!r}")
    return parts[0], parts[1]


def variation_slug(model_id: str, variant: str) -> str:
    return f"{model_id}-{VARIATION_SUFFIX[variant]}".replace("_", "-").lower()


@dataclass(frozen=True)
class Instance:
    """One artifact as a Kaggle Models instance: its framework and the usage code that loads it from ``${PATH}``."""

    artifact: Artifact
    framework: str
    imports: tuple[str, ...]
    body: tuple[str, ...]
    #: Where the class names are inside the instance folder (the artifact embeds them), or None.
    labels: str | None = None


def instance_of(target: ExportTarget, artifact: Artifact, labels_embedded: bool) -> Instance | None:
    """What ``target`` says of ``artifact`` as a Kaggle instance; None when the target has no Kaggle framework."""
    if target.kaggle_framework is None:
        return None
    imports, body = target.kaggle_usage(artifact)
    labels = None
    inside = f"{artifact.path}/"
    if labels_embedded and target.embeds_labels and target.labels_path(artifact).startswith(inside):
        labels = target.labels_path(artifact).removeprefix(inside)
    return Instance(artifact, target.kaggle_framework, tuple(imports), tuple(body), labels)


def _usage(entry: ModelEntry, instance: Instance, manifest: Mapping) -> str:
    lo, hi = manifest["input"]["min"], manifest["input"]["max"]
    res = entry.resolution
    lines = [
        f"Input: float32 `[batch, height, width, 3]` RGB in [{lo:g}, {hi:g}]; trained at {res}x{res}.",
        "",
        "```python",
        "import numpy as np",
        *instance.imports,
        "",
        f"images = np.random.uniform({lo:g}, {hi:g}, (1, {res}, {res}, 3)).astype(np.float32)  # your images",
        *instance.body,
        "```",
    ]
    if instance.artifact.variant == "classification":
        if instance.labels is not None:
            lines += ["", f"Class names: `${{PATH}}/{instance.labels}`, line i = output i."]
        if entry.multi_label:
            lines += ["", "The head is multi-label: use a sigmoid per class, not a softmax."]
    return "\n".join(lines)


def _folder(entry: ModelEntry, instance: Instance) -> str:
    return f"{KAGGLE_DIR}/{instance.framework}/{variation_slug(entry.id, instance.artifact.variant)}"


def _instance(entry: ModelEntry, instance: Instance, manifest: Mapping, owner: str, model: str) -> dict:
    variant = instance.artifact.variant
    what = "classifier (logits)" if variant == "classification" else "feature vector (pre-logits)"
    return {
        "ownerSlug": owner,
        "modelSlug": model,
        "instanceSlug": variation_slug(entry.id, variant),
        "framework": instance.framework,
        "overview": f"BiT {entry.arch_name} {what}: {entry.description}. Converted by bitconvert, checked against JAX.",
        "usage": _usage(entry, instance, manifest),
        "licenseName": LICENSE_NAME,
        "fineTunable": True,
        "trainingData": [entry.dataset],
        "modelInstanceType": "Unspecified",
        "baseModelInstance": "",
    }


def kaggle_files(
    entry: ModelEntry, manifest: Mapping, cards: Mapping[str, str], instances: Iterable[Instance], handle: str
) -> dict[str, str]:
    """``{relative path: JSON text}`` of the Kaggle metadata of one export.

    ``entry``: the registry entry; ``manifest``: the export's manifest dict
    (``source_url``, ``input``); ``cards``: variant -> Markdown card (the
    classification card, else the first, is the model's description);
    ``instances``: one :class:`Instance` per artifact offered (:func:`instance_of`);
    ``handle``: ``OWNER/MODEL``.
    """
    owner, model = parse_handle(handle)
    description = cards.get("classification") or next(iter(cards.values()), entry.description)
    files = {
        f"{KAGGLE_DIR}/{MODEL_METADATA}": {
            "ownerSlug": owner,
            "title": f"BiT {entry.arch_name} ({entry.id})",
            "slug": model,
            "subtitle": entry.description[:80],
            "isPrivate": True,
            "description": description,
            "provenanceSources": manifest.get("source_url", ""),
            "licenseName": LICENSE_NAME,
        }
    }
    for instance in instances:
        files[f"{_folder(entry, instance)}/{INSTANCE_METADATA}"] = _instance(entry, instance, manifest, owner, model)
    return {path: json.dumps(data, indent=2) + "\n" for path, data in files.items()}


def _link_tree(src: Path, dest: Path) -> None:
    if src.is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        for child in sorted(src.iterdir()):
            _link_tree(child, dest / child.name)
        return
    try:
        os.link(src, dest)
    except OSError:  # another file system or no hard links: a copy
        shutil.copy2(src, dest)


def link_instances(export_dir: str | os.PathLike, entry: ModelEntry, instances: Iterable[Instance]) -> None:
    """Hard-link each artifact into its instance folder (a directory's content, a file as itself)."""
    export_dir = Path(export_dir)
    for instance in instances:
        folder = export_dir / _folder(entry, instance)
        src = export_dir / instance.artifact.path
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _link_tree(src, folder if src.is_dir() else folder / src.name)
        except OSError as exc:
            raise LocalIOError(f"cannot place {instance.artifact.path} in {folder}: {exc.strerror or exc}") from exc


def write_kaggle(state: ExportState) -> None:
    """--kaggle: model-metadata.json and one instance folder per artifact whose target has a Kaggle framework."""
    job, manifest = state.job, state.manifest
    embedded = manifest["labels"]["embedded"]
    instances = [i for t, a in state.artifacts() if (i := instance_of(t, a, embedded)) is not None]
    texts: dict[str, str] = {}  # variant -> card, the first target's
    for target, artifact in state.artifacts():
        card = state.cards.get((target.name, artifact.path))
        if card is not None:
            texts.setdefault(artifact.variant, (job.export_dir / card).read_text(encoding="utf-8"))
    try:
        for rel, text in kaggle_files(state.entry, manifest, texts, instances, state.options.kaggle).items():
            (job.export_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            atomic_write(job.export_dir / rel, text)
        link_instances(job.export_dir, state.entry, instances)
    except OSError as exc:
        raise io_error(f"cannot write the Kaggle metadata of {job.model_id}", exc) from exc
