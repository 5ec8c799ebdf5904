"""Model cards in the tfhub.dev / Kaggle Models markdown format, as pure text.

One card per exported variant. Everything a card says comes from the
arguments (registry entry, input range, parity figures), so the text cannot
drift from what was exported: the task tag follows the variant, the usage
example loads this variant's own directory, the input range and resolution
are the ones the graph was built with, and parity is claimed only when it
was measured. No TensorFlow needed: testable on its own.

Defects of the published TF Hub collection (sayakpaul/bit-resnet) this avoids:
feature extractors tagged ``image-classification``, wrong titles and
resolutions, usage examples loading the other variant, mixed handle names.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ..target import INPUT_RANGES, OUTPUT_NAMES, VARIANTS
from .common import (
    LICENSE,
    ParityFigures,
    classes_text,
    forward_text,
    labels_line,
    probability_text,
    published_difference,
    range_text,
    reference_lines,
)

if TYPE_CHECKING:
    from ...registry import ModelEntry

#: tfhub.dev task tag of each variant (tags/task.yaml).
TASKS = {"classification": "image-classification", "feature_extraction": "image-feature-vector"}

DEFAULT_PUBLISHER = "bitconvert"
#: tfhub.dev network-architecture tag (tags/network_architecture.yaml): "Big Transfer".
#: Used for every depth and width; the list has no tag for R50x1 or R152x2 as such.
NETWORK_ARCHITECTURE = "bit"
#: Input range of the earlier published handles, by publisher: Google's BiT modules take
#: [0, 1] (the TF Hub convention); the sayakpaul/bit-resnet collection takes [-1, 1].
PUBLISHED_RANGES = {"google": "[0, 1]", "sayakpaul": "[-1, 1]"}
#: Root max-pool padding of the earlier published handles, by publisher, where known: the
#: sayakpaul/bit-resnet port (2022) pads with zeros for every file, as timm does (docs/family.md).
PUBLISHED_POOL_PADDING = {"sayakpaul": "zero"}


_META = re.compile(r"^<!--\s*([a-z-]+)\s*:\s*(.*?)\s*-->$")


def hub_model_name(entry: ModelEntry, variant: str) -> str:
    """One naming scheme for every handle: ``bit_<id>_<variant>`` (``bit_r50x1_160_classification``)."""
    _check_variant(variant)
    stem = entry.id.removeprefix("bit-").replace("-", "_")
    return f"bit_{stem}_{variant}"


def archive_name(entry: ModelEntry, variant: str) -> str:
    """File name of the variant's ``--archive`` tarball, also the card's asset-path."""
    return f"{hub_model_name(entry, variant)}.tar.gz"


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")


def published_line(handle: str, forward=None) -> str:
    rng = PUBLISHED_RANGES.get(handle.split("/", 1)[0])
    takes = f", which takes {rng} inputs" if rng else ""
    line = f"The same checkpoint was published earlier as [`{handle}`](https://tfhub.dev/{handle}){takes}."
    return line if forward is None else f"{line} {published_difference(handle, forward)}"


def _header_lines(entry: ModelEntry, variant: str) -> list[str]:
    """The ``# Module`` line, the one-line description and the tfhub.dev metadata."""
    arch = f"ResNetV2-{entry.depth}x{entry.width}"
    what = "image classifier" if variant == "classification" else "image feature vector"
    return [
        f"# Module {DEFAULT_PUBLISHER}/{hub_model_name(entry, variant)}/1",
        "",
        f"BiT {arch} {what}, converted from the authors' JAX checkpoint: {entry.description}.",
        "",
        f"<!-- asset-path: {archive_name(entry, variant)} -->",
        f"<!-- task: {TASKS[variant]} -->",
        f"<!-- network-architecture: {NETWORK_ARCHITECTURE} -->",
        f"<!-- dataset: {entry.dataset} -->",
        "<!-- fine-tunable: true -->",
        "<!-- format: saved_model_2 -->",
        f"<!-- license: {LICENSE} -->",
        "",
    ]


def _outputs_lines(entry: ModelEntry, variant: str, features: int, labels_embedded: bool) -> list[str]:
    """The card's Outputs section."""
    classifier, key = variant == "classification", OUTPUT_NAMES[variant]
    return [
        "## Outputs",
        "",
        (
            f"`logits`: float32 `[batch, {entry.classes}]`, unnormalised ({probability_text(entry)}); "
            f"index i is class i of {classes_text(entry)}. {labels_line(entry, labels_embedded)}"
            if classifier
            else f"`feature_vector`: float32 `[batch, {features}]`, the same size for every input size."
        ),
        "",
        "The `serving_default` signature takes `images` and returns the dict "
        f'`{{"{key}": ...}}`; calling the model object directly returns the tensor.',
        "",
    ]


#: The line of usage code (cards, Kaggle) that traces a loaded SavedModel's ``__call__`` once for every
#: input shape (convert.predict.runners.load_savedmodel says why).
TRACE_EVERY_SHAPE = "model.__call__.get_concrete_function(tf.TensorSpec([None, None, None, 3], tf.float32))"


def _usage_lines(entry: ModelEntry, variant: str, features: int, input_range: str) -> list[str]:
    """The card's Usage section: tf.saved_model.load, hub.KerasLayer, Keras 3 TFSMLayer."""
    res, key, classifier = entry.resolution, OUTPUT_NAMES[variant], variant == "classification"
    path = f"exports/{entry.id}/{variant}"
    lo, hi = INPUT_RANGES[input_range]
    return [
        "## Usage",
        "",
        "```python",
        "import tensorflow as tf",
        "",
        f'model = tf.saved_model.load("{path}")  # the exported directory, or the extracted {archive_name(entry, variant)}',
        "# Once: one trace for every batch and image size (else each new shape is traced and prepared again).",
        TRACE_EVERY_SHAPE,
        f"images = tf.random.uniform([2, {res}, {res}, 3], {lo:g}, {hi:g})  # your images, in [{lo:g}, {hi:g}]",
        f"{'logits' if classifier else 'features'} = model(images)  # [2, {entry.classes if classifier else features}]",
        "```",
        "",
        "Fine-tuning with `tensorflow_hub` (a tf-keras layer: `pip install tf-keras tensorflow-hub`):",
        "",
        "```python",
        "import tensorflow_hub as hub",
        "import tf_keras",
        "",
        "model = tf_keras.Sequential([",
        f"    tf_keras.Input(({res}, {res}, 3)),",
        f'    hub.KerasLayer("{path}", trainable=True),',
        *(["    tf_keras.layers.Dense(5),  # 5 classes of your own"] if not classifier else []),
        "])",
        "```",
        "",
        "With Keras 3 (TensorFlow backend):",
        "",
        "```python",
        "import keras",
        "",
        f'layer = keras.layers.TFSMLayer("{path}", call_endpoint="serving_default")',
        f'outputs = layer(images)["{key}"]',
        "```",
        "",
    ]


def _verification_text(parity: ParityFigures | None) -> str:
    if parity is None:
        return (
            "This export was written with `--skip-parity`: it was **not** compared with the JAX forward pass "
            "of the checkpoint. Run `bitconvert export` without that flag (or `bitconvert verify`) for a checked export."
        )
    return (
        f"After writing, this SavedModel was reloaded from disk and its `{parity.output}` compared with the "
        f"JAX (Flax) forward pass of the same checkpoint, run in float64, on {parity.images} images ({parity.random_images} random, "
        f"{parity.images - parity.random_images} structured: flat, gradients, checkerboards) at "
        f"{parity.size}: maximum absolute error {parity.max_abs_error:.3g}, "
        f"relative L2 error {parity.relative_l2_error:.3g} (bound {parity.threshold:.3g})."
    )


def _overview_lines(entry: ModelEntry, variant: str, features: int, source_url: str, sha256: str) -> list[str]:
    """The card's overview: what the variant computes, and where its weights came from."""
    arch = f"ResNetV2-{entry.depth}x{entry.width}"
    return [
        "## Overview",
        "",
        f"Big Transfer (BiT) {arch} ({entry.arch_name}): {entry.description}. "
        + (
            f"This SavedModel computes the classification logits over {classes_text(entry)}."
            if variant == "classification"
            else f"This SavedModel computes the {features}-dimensional pre-logits feature vector "
            "(after the final group norm, ReLU and global average pooling), for transfer learning."
        ),
        "",
        f"Weights: `{source_url}` (sha256 `{sha256}`), converted by bitconvert. "
        "Architecture: pre-activation ResNetV2 with weight-standardised convolutions and group norm (32 groups); "
        "no batch norm and no dropout, so training and inference behave the same.",
        "",
    ]


def _inputs_lines(entry: ModelEntry, input_range: str) -> list[str]:
    """The card's inputs: the tensor, its range and the resolution the weights were trained at."""
    res = entry.resolution
    return [
        "## Inputs",
        "",
        f"A float32 tensor `[batch, height, width, 3]` of RGB images with {range_text(input_range)}. "
        f"Any batch size, height and width are accepted. The weights were trained at **{res}x{res}**: "
        f"resize (or crop) to {res}x{res} for the accuracy of the original model."
        + (f" On that resolution: {entry.resolution_note}." if entry.resolution_note else ""),
        "",
    ]


def render_card(
    entry: ModelEntry,
    variant: str,
    *,
    input_range: str,
    source_url: str,
    sha256: str,
    parity: ParityFigures | None,
    features: int,
    labels_embedded: bool = False,
    forward=None,
) -> str:
    """The markdown card of one exported variant.

    ``parity`` is None when the export skipped the JAX check: the card then
    says so instead of claiming equality. The usage examples load
    ``exports/<id>/<variant>``, the CLI's default path. ``labels_embedded``:
    the classifier carries its class names as ``assets/labels.txt``.
    ``forward``: the convert.model.forward.ForwardPass the SavedModel computes.
    """
    _check_variant(variant)
    range_text(input_range)  # validates
    classifier = variant == "classification"
    lines = [
        *_header_lines(entry, variant),
        *_overview_lines(entry, variant, features, source_url, sha256),
        *_inputs_lines(entry, input_range),
        *_outputs_lines(entry, variant, features, labels_embedded),
        *_usage_lines(entry, variant, features, input_range),
        "## Verification",
        "",
    ]
    lines.append(_verification_text(parity))
    if forward is not None:
        lines += ["", forward_text(forward)]
    published = entry.hub.classification if classifier else entry.hub.feature_extraction
    if published:
        lines += ["", published_line(published, forward)]
    lines += ["", *reference_lines(entry)]
    return "\n".join(lines) + "\n"


def parse_card(text: str) -> tuple[str, dict[str, str]]:
    """(handle from the ``# Module`` line, metadata dict) of a card; for tests and checks.

    Raises ValueError when the first line is not ``# Module publisher/model/version``
    or a metadata key repeats.
    """
    lines = text.splitlines()
    m = re.match(r"^# Module (\S+/\S+/\d+)$", lines[0] if lines else "")
    if not m:
        raise ValueError("first line must be '# Module <publisher>/<model>/<version>'")
    meta: dict[str, str] = {}
    for line in lines[1:]:
        mm = _META.match(line.strip())
        if mm:
            if mm.group(1) in meta:
                raise ValueError(f"metadata {mm.group(1)!r} given twice")
            meta[mm.group(1)] = mm.group(2)
    return m.group(1), meta
