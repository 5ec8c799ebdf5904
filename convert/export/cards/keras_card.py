"""The Markdown card of one Keras export artifact (pure text, no keras import).

The usage blocks are meant to run exactly as written from the directory the
export was written under (tests/export/test_contract.py and test_keras_export.py run them).
"""

from __future__ import annotations

from collections.abc import Mapping

from .model_card import INPUT_RANGES, LICENSE, _labels_text, _range_text, _references, probability_text, sidecar_labels_line

_TITLES = {"classification": "image classifier", "feature_extraction": "image feature vector"}


def _fig(f, name: str):
    return f[name] if isinstance(f, Mapping) else getattr(f, name)


def _verification(figures: Mapping | None, backends, hints: Mapping[str, str], installed) -> list[str]:
    if figures is None:
        return [
            "This export was written with `--skip-parity`: it was **not** compared with the JAX forward pass "
            "of the checkpoint on any backend."
        ]
    ran = [b for b in backends if f"keras-{b}" in figures]
    any_fig = figures[f"keras-{ran[0]}"] if ran else None
    lines = []
    if any_fig is not None:
        n, rnd = _fig(any_fig, "images"), _fig(any_fig, "random_images")
        lines += [
            f"After writing, this file was loaded from disk with `keras.saving.load_model` (safe mode on) in a fresh "
            f"process per Keras backend, run on {n} images ({rnd} random, {n - rnd} structured: flat, gradients, "
            f"checkerboards) at {_fig(any_fig, 'resolution')}x{_fig(any_fig, 'resolution')}, and its "
            f"`{_fig(any_fig, 'output')}` compared with the JAX (Flax) forward pass of the same checkpoint in float64:",
            "",
            "| backend | max abs error | relative L2 error | bound |",
            "|---|---|---|---|",
        ]
        for b in ran:
            f = figures[f"keras-{b}"]
            lines.append(
                f"| {b} | {_fig(f, 'max_abs_error'):.3g} | {_fig(f, 'relative_l2_error'):.3g} | {_fig(f, 'threshold'):.3g} |"
            )
        lines.append("")
    lines.append(f"Checked on: {', '.join(ran) or 'no backend'}.")
    for b in backends:
        if b not in ran:
            why = f"not installed where it was exported (`{hints[b]}`)" if not installed(b) else "not checked"
            lines.append(f"Not checked on {b}: {why}.")
    return lines


def render_keras_card(job, artifact, figures: Mapping | None, backends, hints: Mapping[str, str], installed=None) -> str:
    """The card of ``artifact`` (a .keras file of ``job``); ``figures``: {runtime: ParityFigures} or None."""
    from ..keras import installed as default_installed

    installed = installed or default_installed
    entry, variant = job.entry, artifact.variant
    classifier = variant == "classification"
    res = entry.resolution
    lo, hi = INPUT_RANGES[job.input_range]
    path = f"exports/{entry.id}/{artifact.path}"
    features = job.arch.features
    classes = job.arch.classes
    out_shape = f"(2, {classes})" if classifier else f"(2, {features})"
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
        f"Input: float32 `(batch, height, width, 3)` RGB images, any batch and size, with {_range_text(job.input_range)}. "
        f"The weights were trained at {res}x{res}.",
        "",
        (
            f"Output: logits `(batch, {classes})` over {_labels_text(entry)} ({probability_text(entry)}). "
            + sidecar_labels_line(entry, job.labels is not None)
            if classifier
            else f"Output: the pre-logits feature vector `(batch, {features})` (after the final group norm, ReLU and "
            "global average pooling)."
        ),
        "",
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
    lines += ["", "## Verification", "", *_verification(figures, backends, hints, installed)]
    lines += ["", "## References", ""]
    lines += [f"{i}. {ref}" for i, ref in enumerate(_references(entry), start=1)]
    return "\n".join(lines) + "\n"
