"""The export target interface: one module per format under ``convert/export/``.

A target (``savedmodel``, ``keras``, ``tflite``, ``onnx``) is an
:class:`ExportTarget`: it knows how to write its files and how a user's
runtime loads them, and it carries every fact of its format (its card, where
its labels go, its Kaggle framework and usage, how its runs are named). The
orchestrator owns everything else: the JAX reference, the comparison rule,
the manifest, the cards' placement and the atomic publication, and it names
no format. Each target:

0. ``prepare(job, images)`` (optional; default nothing), before anything is
   written: starts what its check needs and returns a handle with ``stop()``
   that is given back to ``check`` (the Keras target's child processes
   import keras and their backend while the other targets write); the
   orchestrator stops every handle when the export ends, whichever way;
1. ``write(job)`` writes its artifacts under ``job.export_dir`` (the temporary
   export directory; nothing there is final until the orchestrator publishes
   it) and returns one :class:`Artifact` per file or directory written;
2. ``check(job, artifacts, images, prepared=None)`` starts reloading them from disk in the
   runtime a user would use (possibly in child processes, possibly several
   runtimes per artifact) and returns a callable that waits and returns one
   :class:`Run` per (artifact, runtime): the outputs on ``images``, which are
   already in the export's input range. Starting and waiting are separate so
   that slow checks (fresh processes per Keras backend) overlap other work;
3. ``card(job, artifact, figures)`` returns the Markdown card of one artifact
   (``figures``: {runtime: ParityFigures} of each runtime that ran it, or None
   with ``--skip-parity``), or None when the target has no card of its own;
4. ``finish(job, artifacts, options)`` (optional; default nothing), once every
   artifact is proven: returns the artifacts with what it added in their
   facts (savedmodel's ``--archive`` tarballs).

The orchestrator (``orchestrator.py``) checks every :class:`Run`'s shape
(``(images, classes)`` or ``(images, features)``) and compares it with the JAX
reference at the variant's stage (``VARIANT_STAGES``) under the architecture's
tolerance (``judge.py``), the same rule for every target; one failing run
removes the whole export. It writes each card next to its artifact
(``Path(artifact.path).with_suffix(".md")``: ``keras/classification.keras`` ->
``keras/classification.md``), the class names at :meth:`ExportTarget.labels_path`
unless the target embeds them itself, and records under
``manifest["targets"][name]`` a list of ``{variant, path, card, sha256, facts,
parity: {runtime: {seconds, facts, report}}}``; ``sha256`` is
:meth:`ExportTarget.digests`. ``job.net`` is None in ``check`` and ``card``:
the TF weights are dropped once every target has written. A target raises
:class:`convert.errors.BitconvertError` subclasses only. Register a new
module in ``formats.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .labels_asset import LABELS_FILE

if TYPE_CHECKING:
    from ..model.architecture import Architecture
    from ..model.tf_model import BiTResNetV2
    from ..registry import ModelEntry
    from .state import ExportOptions

#: The two variants of every export, and the reference stage each is compared with.
VARIANTS = ("classification", "feature_extraction")
VARIANT_STAGES = {"classification": "logits", "feature_extraction": "pre_logits"}
#: The single input of every artifact, and each variant's output name (the serving signature's key).
INPUT_NAME = "images"
OUTPUT_NAMES = {"classification": "logits", "feature_extraction": "feature_vector"}
#: ``--input-range`` choices: the value range every exported artifact takes.
INPUT_RANGES = {"unit": (0.0, 1.0), "symmetric": (-1.0, 1.0)}


def images_spec():
    """The input every traced artifact function takes: float32 ``[batch, height, width, 3]``, named ``images``."""
    import tensorflow as tf

    return tf.TensorSpec([None, None, None, 3], tf.float32, name=INPUT_NAME)


def to_model_range(images, input_range: str):
    """``images`` in ``input_range`` mapped to the model's [-1, 1] (no op at all for "symmetric")."""
    from ..model.numerics import INPUT_RANGE, pixels_to_model_range

    lo, hi = INPUT_RANGES[input_range]
    return images if (lo, hi) == INPUT_RANGE else pixels_to_model_range(images, lo, hi)


def from_model_range(images, lo: float, hi: float):
    """Images in the model's [-1, 1] (numpy) expressed in the input range ``[lo, hi]`` as float32: the inputs
    an artifact is checked on (the images themselves for "symmetric", as :func:`to_model_range` maps nothing)."""
    import numpy as np

    from ..model.numerics import INPUT_RANGE, model_range_to_pixels

    if (lo, hi) == INPUT_RANGE:
        return np.asarray(images, np.float32)
    return model_range_to_pixels(np.asarray(images, np.float64), lo, hi).astype(np.float32)


#: Checkpoints from this size up get a full garbage collection after each model is
#: done with, in the export and in the Keras check processes (docs/performance.md).
COLLECT_ABOVE_BYTES = 250_000_000

Log = Callable[[str], None]


def _nothing() -> object:
    return None


@dataclass(frozen=True)
class ExportJob:
    """What every target is given. Read-only: targets return what they learn."""

    model_id: str
    entry: ModelEntry
    arch: Architecture
    #: The TF BiT module, holding the weights in its variables; None once every target has written.
    net: BiTResNetV2 | None
    input_range: str  # "unit" ([0, 1]) or "symmetric" ([-1, 1])
    export_dir: Path  # the temporary export directory
    log: Log
    #: Class names of the classifier head, index order; None when not published.
    labels: tuple[str, ...] | None = None
    #: Where the checkpoint came from and its sha256 (for cards).
    source_url: str = ""
    sha256: str = ""
    #: Called after each big model is done with (a garbage collection for big checkpoints, else nothing).
    release: Callable[[], object] = _nothing
    #: The forward pass every artifact computes (convert.model.forward.ForwardPass; cards and manifest
    #: say it); ``net`` is built with its root pool padding. None: zero padding, big_transfer's.
    forward: object = None

    def without_net(self) -> ExportJob:
        """The job for check() and card(): the TF weights dropped, so nothing keeps them alive while reloading."""
        return dataclasses.replace(self, net=None)

    def arrays(self) -> dict[str, np.ndarray]:
        """The weights by checkpoint key (float32 numpy), read from the TF variables."""
        return {key: var.numpy() for key, var in self.net.variables_by_key.items()}


@dataclass(frozen=True)
class Artifact:
    """One file or directory a target wrote, relative to the export directory."""

    target: str  # the --format value
    variant: str  # one of VARIANTS
    path: str  # e.g. "keras/classification.keras"; a SavedModel's directory for savedmodel
    #: Manifest facts of the target's own (converter and version, opset, variable count, ...).
    facts: Mapping = field(default_factory=dict)


@dataclass(frozen=True)
class Run:
    """One artifact reloaded from disk and run in one runtime."""

    artifact: Artifact
    runtime: str  # e.g. "tensorflow", "keras-jax", "litert", "onnxruntime"
    outputs: np.ndarray  # (images, classes) or (images, features), float32
    seconds: float = 0.0
    facts: Mapping = field(default_factory=dict)  # runtime version, provider, ...


def check_in_process(run_one: Callable[[Artifact], Run], artifacts: list[Artifact]) -> Callable[[], list[Run]]:
    """An in-process check: ``run_one`` on each artifact in turn, once waited for (so that other targets' child processes start first)."""
    return lambda: [run_one(a) for a in artifacts]


class ExportTarget:
    """Base class of every target: the steps above, and the facts of its format with their usual values.

    A subclass sets ``name`` and ``summary`` and implements ``write``,
    ``check`` and ``card``; the rest has defaults that suit a format whose
    artifacts are single files with the class names beside the classifier.
    """

    #: The --format value.
    name: str
    #: One line for ``bitconvert export --help``.
    summary: str
    #: The Kaggle Models framework of its artifacts (convert.export.kaggle); None: no Kaggle instance.
    kaggle_framework: str | None = None
    #: Whether write() puts the class names inside the artifact itself (else the orchestrator writes labels_path()).
    embeds_labels: bool = False

    def prepare(self, job: ExportJob, images: np.ndarray):
        """Start what check() needs before anything is written; a handle with ``stop()``, or None."""
        return None

    def write(self, job: ExportJob) -> list[Artifact]:
        raise NotImplementedError

    def check(
        self, job: ExportJob, artifacts: list[Artifact], images: np.ndarray, prepared: object = None
    ) -> Callable[[], list[Run]]:
        raise NotImplementedError

    def card(self, job: ExportJob, artifact: Artifact, figures: Mapping | None) -> str | None:
        return None

    def finish(self, job: ExportJob, artifacts: list[Artifact], options: ExportOptions) -> list[Artifact]:
        """After every check passed and the cards are written: the artifacts, with anything added to their facts."""
        return artifacts

    def weight_copies(self, options: ExportOptions) -> int:
        """How many copies of the weights its artifacts hold on disk (the free-space check): one per variant."""
        return len(VARIANTS)

    def labels_path(self, artifact: Artifact) -> str:
        """Where a classifier's class names are, relative to the export directory: ``labels.txt`` beside it."""
        return (Path(artifact.path).parent / LABELS_FILE).as_posix()

    def digests(self, job: ExportJob, artifact: Artifact):
        """The manifest's ``sha256`` of an artifact: of the file, or {relative path: digest} of a directory."""
        from ..fetch import sha256_file

        path = job.export_dir / artifact.path
        if path.is_file():
            return sha256_file(path)
        return {p.relative_to(path).as_posix(): sha256_file(p) for p in sorted(path.rglob("*")) if p.is_file()}

    def what(self, run: Run) -> str:
        """A run in an error message: "the reloaded <what> ..."."""
        return f"{run.artifact.variant} {self.name} artifact ({run.runtime})"

    def where(self, run: Run) -> str:
        """A run in the log: "parity after export, <where>: ..."."""
        return f"{self.name} {run.artifact.variant} in {run.runtime}"

    def kaggle_usage(self, artifact: Artifact) -> tuple[list[str], list[str]]:
        """The Kaggle instance's usage code: (imports, body), loading from ``${PATH}`` and running ``images``."""
        return [], []
