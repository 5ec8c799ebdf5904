"""``bitconvert predict``: classify images with an exported classifier SavedModel.

The export under ``<output-dir>/<id>/`` says everything needed: its
``manifest.json`` gives the input range ([0, 1] or [-1, 1]), the model's
native resolution and whether the head is multi-label; the classifier
SavedModel carries its class names as ``assets/labels.txt`` when they were
published (else the output names class indices only).

Images: JPEG, PNG, GIF (first frame) or BMP, decoded by ``tf.io.decode_image``
into RGB (grey and RGBA are converted; 16-bit PNGs keep their precision),
scaled to [0, 1]. An image already at the model's resolution (``res x res``) is
fed as it is. Any other image keeps its aspect ratio: its shorter side is
resized to ``res`` (bilinear, antialiased when shrinking), then the centre
``res x res`` is cropped (the ImageNet evaluation convention, without the
extra margin of resize-then-crop schemes).

Scores: softmax over the classes for single-label heads; an independent
sigmoid per class for the BiT-M ImageNet-21k heads, which were trained
multi-label (their scores do not sum to 1).

Exit status: 0 ok; 1 an image is missing, unreadable or not an image
(:class:`convert.errors.ImageError`), or the export's labels do not fit its head;
2 no export of that id under the output directory (or an unknown id).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ImageError, LabelsError, UsageError

CLASSIFIER = "classification"
#: The export target whose classifier predict runs (convert.export.savedmodel).
SAVEDMODEL = "savedmodel"


@dataclass(frozen=True)
class ExportedClassifier:
    """What predict needs to know about an export, read from its manifest and assets."""

    model_id: str
    path: Path  # the classification SavedModel directory
    resolution: int
    input_min: float
    input_max: float
    classes: int
    multi_label: bool
    labels: tuple[str, ...] | None


def _no_export(model_id: str, output_dir: Path, why: str) -> UsageError:
    hint = f"run `bitconvert export --model {model_id} --output-dir {output_dir}` first"
    try:
        from .registry import load_registry

        load_registry().get(model_id)
    except UsageError as exc:  # an unknown id: say so, with the registry's suggestion
        return UsageError(f"no export of {model_id!r} under {output_dir} ({why}); {exc}")
    return UsageError(f"no export of {model_id} under {output_dir} ({why}); {hint}")


def _classifier_path(manifest: dict) -> str:
    """The classifier SavedModel's directory: listed under "targets" (manifest format 2) or "variants" (format 1)."""
    if "variants" in manifest:
        return manifest["variants"][CLASSIFIER].get("path", CLASSIFIER)
    entries = manifest["targets"].get(SAVEDMODEL, [])
    return next((e["path"] for e in entries if e["variant"] == CLASSIFIER), CLASSIFIER)


def open_export(model_id: str, output_dir: str | Path) -> ExportedClassifier:
    """Read ``<output_dir>/<model_id>/manifest.json`` and the classifier's labels; no TensorFlow needed."""
    from .export.manifest import MANIFEST_NAME
    from .export.saved_labels import read_saved_labels

    output_dir = Path(output_dir)
    root = output_dir / model_id
    try:
        manifest = json.loads((root / MANIFEST_NAME).read_text(encoding="utf-8"))
        inp, model = manifest["input"], manifest["model"]
        rel = _classifier_path(manifest)
        classes = int(manifest["architecture"]["classes"])
    except FileNotFoundError:
        raise _no_export(model_id, output_dir, f"{root / MANIFEST_NAME} does not exist") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _no_export(model_id, output_dir, f"{root / MANIFEST_NAME} is unreadable: {exc}") from None
    path = root / rel
    if not (path / "saved_model.pb").is_file():
        raise _no_export(model_id, output_dir, f"{path} holds no SavedModel")
    labels = read_saved_labels(path)
    if labels is not None and len(labels) != classes:
        raise LabelsError(f"{path}/assets/labels.txt: {len(labels)} lines but the head has {classes} classes")
    return ExportedClassifier(
        model_id=model_id,
        path=path,
        resolution=int(inp["native_resolution"]),
        input_min=float(inp["min"]),
        input_max=float(inp["max"]),
        classes=classes,
        # Manifests written before the registry knew multi_label: the 21843-class heads are the multi-label ones.
        multi_label=bool(model.get("multi_label", classes == 21843)),
        labels=labels,
    )


def decode_image(path: str | Path):
    """RGB float32 ``[h, w, 3]`` in [0, 1]; ImageError with one clear line otherwise."""
    import tensorflow as tf

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
        raise ImageError(f"{path}: not a JPEG, PNG, GIF or BMP image (or a damaged one)") from None
    return tf.image.convert_image_dtype(image, tf.float32)


def fit_to(image, size: int):
    """``image`` unchanged at ``size x size``; else shorter side to ``size`` (bilinear, antialiased), centre crop."""
    import tensorflow as tf

    h, w = int(image.shape[0]), int(image.shape[1])
    if (h, w) == (size, size):
        return image
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    resized = tf.image.resize(image, [nh, nw], method="bilinear", antialias=True)
    top, left = (nh - size) // 2, (nw - size) // 2
    return tf.clip_by_value(resized[top : top + size, left : left + size, :], 0.0, 1.0)


def scores_from_logits(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    """Probabilities in float64: a sigmoid per class (multi-label) or a softmax per row."""
    z = logits.astype(np.float64)
    if multi_label:
        return 1.0 / (1.0 + np.exp(-z))
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def top_k(scores: np.ndarray, k: int, labels: tuple[str, ...] | None) -> list[dict]:
    order = np.argsort(-scores, kind="stable")[:k]
    return [{"index": int(i), "label": labels[i] if labels else None, "score": float(scores[i])} for i in order]


def predict(export: ExportedClassifier, images: list[str], top: int = 5) -> list[dict]:
    """``[{"image": PATH, "top": [{"index", "label", "score"}, ...]}, ...]`` in the order of ``images``.

    Every image is decoded before the model is loaded: a bad one fails fast.
    """
    import tensorflow as tf

    batch = tf.stack([fit_to(decode_image(p), export.resolution) for p in images])
    if (export.input_min, export.input_max) != (0.0, 1.0):
        batch = export.input_min + batch * (export.input_max - export.input_min)
    model = tf.saved_model.load(str(export.path))
    logits = model(batch).numpy()
    scores = scores_from_logits(logits, export.multi_label)
    k = min(top, export.classes)
    return [{"image": str(p), "top": top_k(row, k, export.labels)} for p, row in zip(images, scores, strict=True)]


def render_text(results: list[dict], multi_label: bool = False) -> str:
    """One block per image: rank, score, class index, label (or ``-`` without labels)."""
    what = "sigmoid (multi-label)" if multi_label else "softmax"
    lines = []
    for result in results:
        lines.append(f"{result['image']}  (top {len(result['top'])}, {what})")
        for rank, t in enumerate(result["top"], start=1):
            lines.append(f"  {rank:>2}  {t['score']:.4f}  {t['index']:>5}  {t['label'] if t['label'] is not None else '-'}")
    return "\n".join(lines)
