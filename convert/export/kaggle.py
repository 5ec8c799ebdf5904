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
framework follows the artifact's target (``savedmodel`` -> ``tensorFlow2``,
``keras``, ``tflite`` -> ``tfLite``, ``onnx``). The artifact's files are hard
links (no second copy on disk; a copy where links are impossible), so each
instance folder is uploadable as it is, with ``-r tar`` for a SavedModel's
``variables/``. :func:`kaggle_files` is pure (text only);
:func:`link_instances` does the linking.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

from ..errors import LocalIOError
from ..fsutil import atomic_write
from .publish import io_error

#: The export target (``Artifact.target``) -> Kaggle framework name.
FRAMEWORKS = {"savedmodel": "tensorFlow2", "keras": "keras", "tflite": "tfLite", "onnx": "onnx"}
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


def _usage(entry, artifact, manifest: Mapping) -> str:
    name = Path(artifact.path).name
    lo, hi = manifest["input"]["min"], manifest["input"]["max"]
    res = entry.resolution
    imports, body = {
        "savedmodel": (["import tensorflow as tf"], ['model = tf.saved_model.load("${PATH}")', "outputs = model(images)"]),
        "keras": (["import keras"], [f'model = keras.saving.load_model("${{PATH}}/{name}")', "outputs = model(images)"]),
        "tflite": (
            ["from ai_edge_litert.interpreter import Interpreter"],
            [
                f'interpreter = Interpreter(model_path="${{PATH}}/{name}")',
                "runner = interpreter.get_signature_runner()",
                "outputs = runner(images=images)",
            ],
        ),
        "onnx": (
            ["import onnxruntime as ort"],
            [f'session = ort.InferenceSession("${{PATH}}/{name}")', 'outputs = session.run(None, {"images": images})[0]'],
        ),
    }[artifact.target]
    lines = [
        f"Input: float32 `[batch, height, width, 3]` RGB in [{lo:g}, {hi:g}]; trained at {res}x{res}.",
        "",
        "```python",
        "import numpy as np",
        *imports,
        "",
        f"images = np.random.uniform({lo:g}, {hi:g}, (1, {res}, {res}, 3)).astype(np.float32)  # your images",
        *body,
        "```",
    ]
    if artifact.variant == "classification":
        if artifact.target == "savedmodel" and manifest.get("labels", {}).get("embedded"):
            lines += ["", "Class names: `${PATH}/assets/labels.txt`, line i = output i."]
        if entry.multi_label:
            lines += ["", "The head is multi-label: use a sigmoid per class, not a softmax."]
    return "\n".join(lines)


def _instance(entry, artifact, manifest: Mapping, owner: str, model: str) -> dict:
    what = "classifier (logits)" if artifact.variant == "classification" else "feature vector (pre-logits)"
    return {
        "ownerSlug": owner,
        "modelSlug": model,
        "instanceSlug": variation_slug(entry.id, artifact.variant),
        "framework": FRAMEWORKS[artifact.target],
        "overview": f"BiT {entry.arch_name} {what}: {entry.description}. Converted by bitconvert, checked against JAX.",
        "usage": _usage(entry, artifact, manifest),
        "licenseName": LICENSE_NAME,
        "fineTunable": True,
        "trainingData": [entry.dataset],
        "modelInstanceType": "Unspecified",
        "baseModelInstance": "",
    }


def kaggle_files(entry, manifest: Mapping, cards: Mapping[str, str], artifacts: Iterable, handle: str) -> dict[str, str]:
    """``{relative path: JSON text}`` of the Kaggle metadata of one export.

    ``entry``: the registry entry; ``manifest``: the export's manifest dict
    (``source_url``, ``input``); ``cards``: variant -> Markdown card (the
    classification card, else the first, is the model's description);
    ``artifacts``: the :class:`convert.export.target.Artifact` objects written
    (``target``, ``variant``, ``path``), each becoming one instance;
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
    for artifact in artifacts:
        if artifact.target not in FRAMEWORKS:
            continue
        folder = f"{KAGGLE_DIR}/{FRAMEWORKS[artifact.target]}/{variation_slug(entry.id, artifact.variant)}"
        files[f"{folder}/{INSTANCE_METADATA}"] = _instance(entry, artifact, manifest, owner, model)
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


def link_instances(export_dir: str | os.PathLike, entry, artifacts: Iterable) -> None:
    """Hard-link each artifact into its instance folder (a SavedModel's content, a file as itself)."""
    export_dir = Path(export_dir)
    for artifact in artifacts:
        if artifact.target not in FRAMEWORKS:
            continue
        folder = export_dir / KAGGLE_DIR / FRAMEWORKS[artifact.target] / variation_slug(entry.id, artifact.variant)
        src = export_dir / artifact.path
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _link_tree(src, folder if src.is_dir() else folder / src.name)
        except OSError as exc:
            raise LocalIOError(f"cannot place {artifact.path} in {folder}: {exc.strerror or exc}") from exc


def write_kaggle(job, handle: str, manifest: dict, written, cards: dict) -> None:
    """--kaggle: model-metadata.json and one instance folder per (format, variant) written (convert.export.kaggle)."""
    artifacts = [a for artifacts in written.values() for a in artifacts]
    texts: dict[str, str] = {}  # variant -> card, the first target's (savedmodel's when written)
    for (target, path), card in cards.items():
        variant = next(a.variant for a in written[target] if a.path == path)
        texts.setdefault(variant, (job.export_dir / card).read_text(encoding="utf-8"))
    try:
        for rel, text in kaggle_files(job.entry, manifest, texts, artifacts, handle).items():
            (job.export_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            atomic_write(job.export_dir / rel, text)
        link_instances(job.export_dir, job.entry, artifacts)
    except OSError as exc:
        raise io_error(f"cannot write the Kaggle metadata of {job.model_id}", exc) from exc
