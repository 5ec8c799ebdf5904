"""``bitconvert predict``: classify images with whichever classifier an export holds.

The export under ``<output-dir>/<id>/`` says everything needed: its
``manifest.json`` gives the input range ([0, 1] or [-1, 1]), the model's
native resolution, whether the head is multi-label and which formats it
holds; the class names are the SavedModel's ``assets/labels.txt`` or, for
the other formats, ``<format>/labels.txt`` (else the output names class
indices only).

Which classifier: ``--format auto`` takes the first of :data:`PREFERENCE`
the export holds and whose runtime is installed: LiteRT, then ONNX Runtime,
then the SavedModel, the order of their time to a first answer
(docs/inference.md). Only that runtime is imported: no TensorFlow for ONNX
or LiteRT. The SavedModel runs its plain graph (``training=True``), also in
exports written before issue 19, whose inference path XLA compiled at each new
input shape.

Images are decoded and fitted by :mod:`convert.predict.images` (bounded memory,
no TensorFlow); every image's header is checked before the model is loaded,
so a bad one fails fast. They go through the model in batches of at most
:data:`BATCH` (the last one padded to the same shape: one shape, one
compilation or allocation).

Scores: softmax over the classes for single-label heads; an independent
sigmoid per class for the BiT-M ImageNet-21k heads, which were trained
multi-label (their scores do not sum to 1).

Exit status: 0 ok; 1 an image is missing, unreadable or not an image
(:class:`convert.errors.ImageError`), the export is damaged
(:class:`convert.errors.ExportError`) or its labels do not fit its head;
2 no export of that id under the output directory (or an unknown id), or no
classifier in the format asked for.
"""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ExportError, LabelsError, UsageError, one_line
from ..export.target import OUTPUT_NAMES
from . import images as image_io
from . import runners

CLASSIFIER = "classification"
#: What ``--format auto`` picks, in order: the fastest to a first answer first (docs/inference.md).
PREFERENCE = ("tflite", "onnx", "savedmodel")
#: The module each format's runtime needs.
RUNTIME_MODULES = {"onnx": "onnxruntime", "tflite": "ai_edge_litert", "savedmodel": "tensorflow"}
#: Images per model call at most: bounds the activations' memory whatever the number of images.
BATCH = 8

Runner = runners.Runner


@dataclass(frozen=True)
class ExportedClassifier:
    """What predict needs to know about an export, read from its manifest and label files."""

    model_id: str
    format: str  # one of PREFERENCE
    path: Path  # the classifier: a SavedModel directory, a .onnx or a .tflite file
    resolution: int
    input_min: float
    input_max: float
    classes: int
    multi_label: bool
    labels: tuple[str, ...] | None
    #: Every format whose classifier the export holds.
    holds: tuple[str, ...] = ()


def _no_export(model_id: str, output_dir: Path, why: str) -> UsageError:
    hint = f"run `bitconvert export --model {model_id} --output-dir {output_dir}` first"
    try:
        from ..registry import load_registry

        load_registry().get(model_id)
    except UsageError as exc:  # an unknown id: say so, with the registry's suggestion
        return UsageError(f"no export of {model_id!r} under {output_dir} ({why}); {exc}")
    return UsageError(f"no export of {model_id} under {output_dir} ({why}); {hint}")


def _damaged(model_id: str, what: str) -> ExportError:
    return ExportError(
        f"{what}: the export of {model_id} is damaged; export it again with `bitconvert export --model {model_id}`"
    )


def classifiers_in(manifest: dict, root: Path) -> dict[str, Path]:
    """``format -> classifier path`` for every format the manifest lists (the SavedModel's in ``variants``)."""
    found = {}
    variant = (manifest.get("variants") or {}).get(CLASSIFIER)
    if variant is not None:
        found["savedmodel"] = root / variant.get("path", CLASSIFIER)
    for fmt, artifacts in (manifest.get("targets") or {}).items():
        for artifact in artifacts:
            if artifact.get("variant") == CLASSIFIER and artifact.get("path"):
                found[fmt] = root / artifact["path"]
    return found


def choose_format(holds: dict[str, Path], asked: str, installed: Callable[[str], bool]) -> str:
    """The format to run: ``asked``, or for ``auto`` the first of PREFERENCE held and installed; UsageError otherwise."""
    if asked != "auto":
        if asked not in holds:
            raise UsageError(f"the export holds no {asked} classifier (it holds: {', '.join(sorted(holds)) or 'none'})")
        return asked
    usable = [f for f in PREFERENCE if f in holds and installed(RUNTIME_MODULES[f])]
    if not usable:
        needs = ", ".join(f"{RUNTIME_MODULES[f]} for {f}" for f in holds)
        raise UsageError(f"no runtime installed for the classifiers this export holds ({needs})")
    return usable[0]


def _module_installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _check_files(model_id: str, fmt: str, path: Path) -> None:
    """The classifier's files are there (not whether their bytes are good: loading tells)."""
    needed = [path / "saved_model.pb", path / "variables" / "variables.index"] if fmt == "savedmodel" else [path]
    for file in needed:
        if not file.is_file():
            raise _damaged(model_id, f"{file} is missing")


def _labels(fmt: str, path: Path, root: Path, classes: int) -> tuple[str, ...] | None:
    from ..export.labels_asset import LABELS_FILE
    from ..export.saved_labels import read_saved_labels

    if fmt == "savedmodel":
        labels, where = read_saved_labels(path), path / "assets" / LABELS_FILE
    else:
        where = root / fmt / LABELS_FILE
        labels = tuple(where.read_text(encoding="utf-8").splitlines()) if where.is_file() else None
    if labels is not None and len(labels) != classes:
        raise LabelsError(f"{where}: {len(labels)} lines but the head has {classes} classes")
    return labels


def open_export(model_id: str, output_dir: str | Path, fmt: str = "auto", installed=_module_installed) -> ExportedClassifier:
    """Read ``<output_dir>/<model_id>/manifest.json`` and the chosen classifier's labels; no framework is imported."""
    from ..export.manifest import MANIFEST_NAME

    output_dir = Path(output_dir)
    root = output_dir / model_id
    try:
        text = (root / MANIFEST_NAME).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _no_export(model_id, output_dir, f"{root / MANIFEST_NAME} does not exist") from None
    except OSError as exc:
        raise _damaged(model_id, f"{root / MANIFEST_NAME} is unreadable ({exc.strerror or exc})") from None
    try:
        manifest = json.loads(text)
        inp, model = manifest["input"], manifest["model"]
        classes = int(manifest["architecture"]["classes"])
        holds = classifiers_in(manifest, root)
        resolution, lo, hi = int(inp["native_resolution"]), float(inp["min"]), float(inp["max"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _damaged(model_id, f"{root / MANIFEST_NAME} is unreadable ({type(exc).__name__}: {exc})") from None
    chosen = choose_format(holds, fmt, installed)
    _check_files(model_id, chosen, holds[chosen])
    return ExportedClassifier(
        model_id=model_id,
        format=chosen,
        path=holds[chosen],
        resolution=resolution,
        input_min=lo,
        input_max=hi,
        classes=classes,
        # Manifests written before the registry knew multi_label: the 21843-class heads are the multi-label ones.
        multi_label=bool(model.get("multi_label", classes == 21843)),
        labels=_labels(chosen, holds[chosen], root, classes),
        holds=tuple(f for f in PREFERENCE if f in holds),
    )


# -- the runtimes: each imported only when chosen -----------------------------------------


#: The classifier's runtime per format (convert.predict.runners).
RUNNERS: dict[str, Callable[[Path], Runner]] = {
    "onnx": lambda path: runners.onnx_runner(path, OUTPUT_NAMES[CLASSIFIER]),
    "tflite": runners.tflite_runner,
    "savedmodel": runners.savedmodel_runner,
}


def load_runner(export: ExportedClassifier) -> Runner:
    """The classifier loaded in its runtime: a function from a float32 NHWC batch (model input range) to logits."""
    try:
        return RUNNERS[export.format](export.path)
    except ImportError as exc:
        raise UsageError(f"the {export.format} classifier needs {RUNTIME_MODULES[export.format]}: {one_line(exc)}") from None
    except Exception as exc:  # whatever the runtime raises on bytes it cannot load: a damaged export
        raise _damaged(export.model_id, f"{export.path} cannot be loaded ({one_line(exc, 200)})") from None


# -- scores --------------------------------------------------------------------------------


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


def plan_batches(count: int, limit: int = BATCH) -> tuple[int, list[range]]:
    """``(size, ranges)``: ``count`` images in as few batches of at most ``limit`` as possible, all of one ``size``
    (the images split evenly; the last range may be shorter and is padded to ``size``)."""
    if count <= 0:
        return 0, []
    size = math.ceil(count / math.ceil(count / limit))
    return size, [range(start, min(start + size, count)) for start in range(0, count, size)]


def predict(
    export: ExportedClassifier, images: list[str], top: int = 5, batch: int = BATCH, runner: Runner | None = None
) -> list[dict]:
    """``[{"image": PATH, "top": [{"index", "label", "score"}, ...]}, ...]`` in the order of ``images``.

    Every image's header is checked before the model is loaded (a bad one fails fast); then they
    are decoded and run ``batch`` at a time. ``runner`` replaces the export's runtime (tests).
    """
    size = export.resolution
    for path in images:
        image_io.check_image(path, size)
    run = runner or load_runner(export)
    k = min(top, export.classes)
    batch_size, ranges = plan_batches(len(images), batch)
    results = []
    for rows in ranges:
        pixels = np.zeros((batch_size, size, size, 3), np.float32)
        for slot, i in enumerate(rows):
            pixels[slot] = image_io.load(images[i], size)
        if (export.input_min, export.input_max) != (0.0, 1.0):
            pixels = (export.input_min + pixels * (export.input_max - export.input_min)).astype(np.float32)
        scores = scores_from_logits(np.asarray(run(pixels))[: len(rows)], export.multi_label)
        results += [{"image": str(images[i]), "top": top_k(row, k, export.labels)} for i, row in zip(rows, scores, strict=True)]
    return results


def render_text(results: list[dict], multi_label: bool = False) -> str:
    """One block per image: rank, score, class index, label (or ``-`` without labels)."""
    what = "sigmoid (multi-label)" if multi_label else "softmax"
    lines = []
    for result in results:
        lines.append(f"{result['image']}  (top {len(result['top'])}, {what})")
        for rank, t in enumerate(result["top"], start=1):
            lines.append(f"  {rank:>2}  {t['score']:.4f}  {t['index']:>5}  {t['label'] if t['label'] is not None else '-'}")
    return "\n".join(lines)
