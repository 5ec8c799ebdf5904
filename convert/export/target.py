"""The export target interface: one module per format under ``convert/export/``.

A target (``savedmodel``, ``keras``, ``tflite``, ``onnx``) knows how to write its
files and how a user's runtime loads them; the orchestrator owns everything
else: the JAX reference, the comparison rule, the manifest, the cards and the
atomic publication. Each target:

0. optionally ``prepare(job, images)``, before anything is written: starts
   what its check needs and returns a handle with ``stop()`` that is given
   back to ``check`` (the Keras target's child processes import keras and
   their backend while the other targets write); the orchestrator stops
   every handle when the export ends, whichever way;
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
   (``figures``: the parity figures of each runtime that ran it, or None
   with ``--skip-parity``), or None when the target has no card of its own.

The orchestrator (``orchestrator.py``) checks every :class:`Run`'s shape
(``(images, classes)`` or ``(images, features)``) and compares it with the JAX
reference at the variant's stage (``VARIANT_STAGES``) under the architecture's
tolerance (``judge.py``), the same rule for every target; one failing run
removes the whole export. It writes each card next to its artifact
(``Path(artifact.path).with_suffix(".md")``: ``keras/classification.keras`` ->
``keras/classification.md``) and records, for every target but savedmodel
(whose keys are the manifest's historical ones), under ``manifest["targets"][name]``
a list of ``{variant, path, card, sha256, facts, parity: {runtime: {seconds,
facts, report}}}``; ``sha256`` is the file's digest, or ``{relative path:
digest}`` for a directory. ``job.net`` is None in ``check`` and ``card``: the
TF weights are dropped once every target has written. A target raises
:class:`convert.errors.BitconvertError` subclasses only. Register a new
module in ``formats.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

#: The two variants of every export, and the reference stage each is compared with.
VARIANTS = ("classification", "feature_extraction")
VARIANT_STAGES = {"classification": "logits", "feature_extraction": "pre_logits"}
#: The single input of every artifact, and each variant's output name.
INPUT_NAME = "images"
OUTPUT_NAMES = {"classification": "logits", "feature_extraction": "feature_vector"}

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
    entry: object  # convert.registry.ModelEntry
    arch: object  # convert.model.architecture.Architecture
    #: The TF BiT module (convert.model.tf_model), holding the weights in its variables.
    net: object
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

    # ``net`` is None in check() and card(): the orchestrator drops the TF
    # weights once every target has written, before anything is reloaded.

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


class ExportTarget(Protocol):
    #: The --format value.
    name: str
    #: One line for ``bitconvert export --help``.
    summary: str

    def write(self, job: ExportJob) -> list[Artifact]: ...

    def check(
        self, job: ExportJob, artifacts: list[Artifact], images: np.ndarray, prepared: object = None
    ) -> Callable[[], list[Run]]: ...

    def card(self, job: ExportJob, artifact: Artifact, figures: Mapping | None) -> str | None: ...
