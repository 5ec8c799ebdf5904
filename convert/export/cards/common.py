"""What every card says the same way: the parity figures, the input range, the classes, the labels, the references.

Pure text from the registry entry and the figures the export measured; the
three renderers (``model_card`` for SavedModels, ``keras_card``,
``deploy_card`` for LiteRT and ONNX) build on these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..target import INPUT_RANGES

if TYPE_CHECKING:
    from ...registry import ModelEntry

#: The BiT weights are released under Apache-2.0 (google-research/big_transfer).
LICENSE = "apache-2.0"
BUCKET_URL = "https://storage.googleapis.com/bit_models/"
#: Where an export keeps its class names inside the classification SavedModel (convert.export.saved_labels).
LABELS_ASSET = "assets/labels.txt"

#: Root max-pool padding of the earlier published handles, by publisher, where known: the
#: sayakpaul/bit-resnet port (2022) pads with zeros for every file, as timm does (docs/family.md).
PUBLISHED_POOL_PADDING = {"sayakpaul": "zero"}


def forward_text(forward) -> str:
    """Which forward pass an artifact computes, and why (``forward``: a convert.model.forward.ForwardPass)."""
    return f"Forward pass: {forward.describe()}. {forward.why()}"


def published_difference(handle: str, forward) -> str:
    """How this export's forward pass differs from the earlier publication's (one sentence), where known."""
    from ...model.forward import PADDING_NAMES

    ours = forward.root_pool_padding
    how = "as the code that trained the checkpoint does" if forward.is_authors else f"(--forward {forward.choice})"
    theirs = PUBLISHED_POOL_PADDING.get(handle.split("/", 1)[0])
    if theirs is None:
        return (
            f"This export pads the root max-pool with {PADDING_NAMES[ours]}, {how}; "
            "bitconvert has not compared it with that publication."
        )
    if theirs == ours:
        return f"That publication pads the root max-pool with {PADDING_NAMES[theirs]}, as this export does {how}."
    return (
        f"That publication pads the root max-pool with {PADDING_NAMES[theirs]}; this export pads it with "
        f"{PADDING_NAMES[ours]}, {how}, so their outputs differ slightly (bitconvert's docs/family.md gives the size); "
        "`--forward zero-pool` reproduces that publication's forward pass."
    )


@dataclass(frozen=True)
class ParityFigures:
    """The post-export parity check of one artifact in one runtime, as a card reports it."""

    output: str  # "logits" or "pre_logits"
    max_abs_error: float
    relative_l2_error: float
    threshold: float  # the relative L2 bound the check applied
    resolution: int | tuple[int, int]  # square, or (height, width)
    images: int  # images compared in all
    random_images: int  # of which random; the rest are structured (flat, gradients, checkerboards)

    @property
    def size(self) -> str:
        """The images' size, ``HxW``."""
        from ...parity.inputs import size_text

        return size_text(self.resolution)


def range_text(input_range: str) -> str:
    """The input range in words; ValueError for a range that is not one of INPUT_RANGES."""
    if input_range == "unit":
        return (
            "values in **[0, 1]** (the TF Hub image convention); the graph rescales them to the [-1, 1] "
            "the BiT weights were trained on, so do not rescale yourself"
        )
    if input_range == "symmetric":
        return (
            "values in **[-1, 1]**, that is `(pixel - 127.5) / 127.5`, as the BiT weights were trained on "
            "(and as the earlier published collection took them); this is *not* the TF Hub [0, 1] convention"
        )
    raise ValueError(f"input_range must be one of {tuple(INPUT_RANGES)}, got {input_range!r}")


def classes_text(entry: ModelEntry) -> str:
    """The head's classes, and where their names are published."""
    if entry.labels is None:
        return f"the {entry.classes} classes of {entry.dataset} (their names are not published with the checkpoint)"
    what = {1000: "ImageNet-1k (ILSVRC-2012)", 21843: "ImageNet-21k"}.get(entry.classes, entry.dataset)
    return f"the {entry.classes} {what} classes, in the order of [{entry.labels}]({BUCKET_URL}{entry.labels})"


def labels_line(entry: ModelEntry, embedded: bool) -> str:
    """Where the class names of an exported SavedModel classifier are, or why there are none."""
    if entry.labels is None:
        return (
            "Labels: the class names of this head are not published, so the export carries none: "
            f"output i is class index i (0 to {entry.classes - 1})."
        )
    if embedded:
        return (
            f"Labels: `{LABELS_ASSET}` inside this SavedModel (a tracked asset, `model.labels_file` after loading), "
            f"one class name per line, line i = output i; a copy of `{entry.labels}` from the BiT bucket."
        )
    return (
        f"Labels: not embedded (`{entry.labels}` could not be fetched when this was exported, e.g. offline); "
        f"line i of {BUCKET_URL}{entry.labels} names output i."
    )


def sidecar_labels_line(entry: ModelEntry, embedded: bool) -> str:
    """Where the class names of a classifier that is not a SavedModel are: ``labels.txt`` beside it."""
    if entry.labels is None or not embedded:
        return labels_line(entry, False)
    return f"Labels: `labels.txt` beside this file, one class name per line, line i = output i; a copy of `{entry.labels}`."


def probability_text(entry: ModelEntry) -> str:
    if entry.multi_label:
        return "multi-label: apply `tf.math.sigmoid` for per-class probabilities, not a softmax"
    return "apply `tf.nn.softmax` for probabilities"


def references(entry: ModelEntry) -> list[str]:
    """The papers and code of the checkpoint's family."""
    refs = ["[Big Transfer (BiT): General Visual Representation Learning, Kolesnikov et al.](https://arxiv.org/abs/1912.11370)"]
    if entry.source.startswith("distill/"):
        refs.append(
            "[Knowledge distillation: A good teacher is patient and consistent, Beyer et al.](https://arxiv.org/abs/2106.05237)"
        )
    refs.append("[BiT on GitHub](https://github.com/google-research/big_transfer)")
    return refs


def reference_lines(entry: ModelEntry) -> list[str]:
    """The card's References section, numbered."""
    return ["## References", "", *[f"{i}. {ref}" for i, ref in enumerate(references(entry), start=1)]]
