"""The Markdown card of one Keras export artifact (pure text, no keras import).

The usage blocks are meant to run exactly as written from the directory the
export was written under (tests/export/test_contract.py and test_keras_export.py run them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..target import INPUT_RANGES
from .common import (
    LICENSE,
    ParityFigures,
    classes_text,
    forward_text,
    probability_text,
    range_text,
    reference_lines,
    sidecar_labels_line,
)

_TITLES = {"classification": "image classifier", "feature_extraction": "image feature vector"}


def _verification(
    figures: Mapping[str, ParityFigures] | None, backends, hints: Mapping[str, str], installed: Callable[[str], bool]
) -> list[str]:
    if figures is None:
        return [
            "This export was written with `--skip-parity`: it was **not** compared with the JAX forward pass "
            "of the checkpoint on any backend."
        ]
    ran = [b for b in backends if f"keras-{b}" in figures]
    any_fig = figures[f"keras-{ran[0]}"] if ran else None
    lines = []
    if any_fig is not None:
        n, rnd, px = any_fig.images, any_fig.random_images, any_fig.size
        lines += [
            f"After writing, this file was loaded from disk with `keras.saving.load_model` (safe mode on) in a fresh "
            f"process per Keras backend, run on {n} images ({rnd} random, {n - rnd} structured: flat, gradients, "
            f"checkerboards) at {px}, and its "
            f"`{any_fig.output}` compared with the JAX (Flax) forward pass of the same checkpoint in float64:",
            "",
            "| backend | max abs error | relative L2 error | bound |",
            "|---|---|---|---|",
        ]
        for b in ran:
            f = figures[f"keras-{b}"]
            lines.append(f"| {b} | {f.max_abs_error:.3g} | {f.relative_l2_error:.3g} | {f.threshold:.3g} |")
        lines.append("")
    lines.append(f"Checked on: {', '.join(ran) or 'no backend'}.")
    for b in backends:
        if b not in ran:
            why = f"not installed where it was exported (`{hints[b]}`)" if not installed(b) else "not checked"
            lines.append(f"Not checked on {b}: {why}.")
    return lines


def _usage_lines(job, artifact) -> list[str]:
    """The Usage and Fine-tuning sections: blocks that run as written from the directory the export is under."""
    entry, classifier = job.entry, artifact.variant == "classification"
    res = entry.resolution
    lo, hi = INPUT_RANGES[job.input_range]
    path = f"exports/{entry.id}/{artifact.path}"
    out_shape = f"(2, {job.arch.classes})" if classifier else f"(2, {job.arch.features})"
    lines = [
        "## Usage",
        "",
        "Set `KERAS_BACKEND` to `jax`, `tensorflow` or `torch` before Python starts. The custom layers live in "
        "`convert.model.keras_layers` (this package, bitconvert), which imports only keras and numpy; import it before loading:",
        "",
        "```python",
        "import keras",
        "import numpy as np",
        "",
        "import convert.model.keras_layers  # noqa: F401  (registers the BiT layers)",
        "",
        f'model = keras.saving.load_model("{path}")',
        f'images = np.random.uniform({lo:g}, {hi:g}, (2, {res}, {res}, 3)).astype("float32")  # your images, in [{lo:g}, {hi:g}]',
        "outputs = model.predict(images, verbose=0)",
        f"assert outputs.shape == {out_shape}",
        "```",
        "",
        "For inference, `model.predict` and `model.predict_on_batch` are the fast ways on every backend (on JAX "
        "they run one compiled program per input shape); on torch they record no gradients, so the standardised "
        "kernels are computed once and kept until a weight changes (call the model under `torch.no_grad()` for the "
        "same).",
        "",
        "## Fine-tuning",
        "",
        "Every weight is trainable; `model.trainable = False` freezes them all.",
    ]
    if not classifier:
        lines += [
            "",
            "```python",
            "import keras",
            "import numpy as np",
            "",
            "import convert.model.keras_layers  # noqa: F401",
            "",
            f'backbone = keras.saving.load_model("{path}")',
            f"inputs = keras.Input(({res}, {res}, 3))",
            "model = keras.Model(inputs, keras.layers.Dense(5)(backbone(inputs)))  # 5 classes of your own",
            "model.compile(keras.optimizers.SGD(0.003, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True))",
            f'x, y = np.random.uniform({lo:g}, {hi:g}, (4, {res}, {res}, 3)).astype("float32"), np.arange(4) % 5',
            "model.fit(x, y, batch_size=2, epochs=1, verbose=0)  # fine-tunes the backbone too",
            "backbone.trainable = False  # then recompile: trains the new head only",
            "```",
        ]
    return lines


def render_keras_card(
    job,
    artifact,
    figures: Mapping[str, ParityFigures] | None,
    backends,
    hints: Mapping[str, str],
    installed: Callable[[str], bool],
) -> str:
    """The card of ``artifact`` (a .keras file of ``job``); ``figures``: {runtime: ParityFigures} or None.

    ``backends``: every backend the export is checked on; ``hints``: how to
    install each; ``installed``: whether a backend is installed here.
    """
    entry, variant = job.entry, artifact.variant
    classifier = variant == "classification"
    res = entry.resolution
    features, classes = job.arch.features, job.arch.classes
    lines = [
        f"# BiT {entry.arch_name} {_TITLES[variant]} for Keras 3 (`{entry.id}`)",
        "",
        "<!-- format: keras -->",
        f"<!-- task: {'image-classification' if classifier else 'image-feature-vector'} -->",
        f"<!-- dataset: {entry.dataset} -->",
        "<!-- fine-tunable: true -->",
        f"<!-- license: {LICENSE} -->",
        "",
        f"Big Transfer (BiT) ResNetV2-{entry.depth}x{entry.width}: {entry.description}. A native Keras 3 model "
        "(weight-standardised convolutions, group norm with 32 groups, no batch norm) that loads, predicts and "
        "fine-tunes on the JAX, TensorFlow and PyTorch backends alike.",
        "",
        "## Inputs and outputs",
        "",
        f"Input: float32 `(batch, height, width, 3)` RGB images, any batch and size, with {range_text(job.input_range)}. "
        f"The weights were trained at {res}x{res}.",
        "",
        (
            f"Output: logits `(batch, {classes})` over {classes_text(entry)} ({probability_text(entry)}). "
            + sidecar_labels_line(entry, job.labels is not None)
            if classifier
            else f"Output: the pre-logits feature vector `(batch, {features})` (after the final group norm, ReLU and "
            "global average pooling)."
        ),
        "",
        *_usage_lines(job, artifact),
    ]
    lines += ["", "## Verification", "", *_verification(figures, backends, hints, installed)]
    if job.forward is not None:
        lines += ["", forward_text(job.forward)]
    lines += ["", *reference_lines(entry)]
    return "\n".join(lines) + "\n"
