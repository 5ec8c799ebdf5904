"""The SavedModel target: TF Hub-style SavedModels, the Reusable SavedModel API, one per variant.

Writes ``<export>/classification/`` and ``<export>/feature_extraction/``;
their cards go next to them (``classification.md``, ``feature_extraction.md``).
Each follows the Reusable SavedModel API (``__call__``, ``variables``,
``trainable_variables``, ``regularization_losses``) and the TF Hub image
conventions: float32 ``[batch, height, width, 3]`` of any batch and size, in
[0, 1] (``input_range="unit"``, rescaled in the graph) or [-1, 1]
(``"symmetric"``). Re-exports in fresh processes give byte-identical
``saved_model.pb`` and ``variables/`` (``fingerprint.pb`` holds a random UUID).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ExportError
from ..fetch import sha256_file
from ..model.architecture import HEAD_PREFIX
from .cards.model_card import TRACE_EVERY_SHAPE, archive_name, render_card
from .labels_asset import LABELS_FILE
from .publish import io_error
from .saved_labels import check_reloaded_labels, tracked_labels
from .target import (
    INPUT_NAME,
    OUTPUT_NAMES,
    VARIANTS,
    Artifact,
    ExportJob,
    ExportTarget,
    Run,
    check_in_process,
    images_spec,
    to_model_range,
)

if TYPE_CHECKING:
    from .state import ExportOptions


def variant_variables(net, variant: str) -> list:
    """The variables a variant's graph uses, in checkpoint layout order."""
    if variant == "classification":
        return list(net.variables_by_key.values())
    return [v for k, v in net.variables_by_key.items() if not k.startswith(HEAD_PREFIX)]


def trace_features(net, input_range: str):
    """The feature vector of float32 ``[batch, height, width, 3]`` images in ``input_range``, traced once.

    A concrete function over ``net``'s variables, group norm in its per-channel
    form (convert.export.reusable_call says why). Both variants call it: the
    classifier adds the head, so the network is traced once for the two SavedModels.
    """
    import tensorflow as tf

    graph = net.as_saved()

    def features(images):
        return graph.features(to_model_range(images, input_range))

    return tf.function(features, input_signature=[images_spec()], autograph=False).get_concrete_function()


def build_exportable(net, variant: str, input_range: str, features=None):
    """The SavedModel root of one variant: a ``tf.train.Checkpoint`` with the Reusable SavedModel API.

    A plain ``tf.Module`` root reloads without ``variables`` and
    ``trainable_variables`` (and its ``variables`` property cannot be assigned),
    hence the Checkpoint subclass, as TF's jax2tf examples export theirs. ``__call__`` takes float32
    ``[batch, height, width, 3]`` in ``input_range`` and returns a tensor; the
    ``serving_default`` signature (``root.serving_default``) takes ``images``
    and returns ``{"logits": ...}`` or ``{"feature_vector": ...}``. ``features``:
    :func:`trace_features` of the same ``net`` and ``input_range``, when already traced.
    """
    import tensorflow as tf

    from .reusable_call import reusable_call

    features = trace_features(net, input_range) if features is None else features
    key = OUTPUT_NAMES[variant]
    spec = images_spec()

    def model_fn(images):
        return net.head(features(images)) if variant == "classification" else features(images)

    call = reusable_call(model_fn, spec)

    def serving_fn(images):
        return {key: call(images)}

    serving = tf.function(serving_fn, input_signature=[spec], autograph=False)

    class BiTHubExport(tf.train.Checkpoint):
        """Root object: what ``tf.saved_model.load`` and ``hub.KerasLayer`` see."""

    root = BiTHubExport()
    root.variables = variant_variables(net, variant)
    # Every variable is trainable: BiT has no batch-norm statistics or other state.
    root.trainable_variables = [v for v in root.variables if v.trainable]
    root.regularization_losses = []
    root.__call__ = call
    root.serving_default = serving
    return root


def fingerprint(path: Path) -> dict:
    """TF's fingerprint of a SavedModel and the sha256 of each of its files (fingerprint.pb aside)."""
    import tensorflow as tf

    fp = tf.saved_model.experimental.read_fingerprint(str(path))
    files = {"saved_model.pb": sha256_file(path / "saved_model.pb")}
    for f in sorted((path / "variables").iterdir()):
        files[f"variables/{f.name}"] = sha256_file(f)
    return {"singleprint": fp.singleprint(), "saved_model_checksum": int(fp.saved_model_checksum), "sha256": files}


def _check_api(loaded, variant: str, facts: Mapping, width: int) -> list[str]:
    """The Reusable SavedModel API as users will find it; problems found."""
    problems = [
        f"no {attr}" for attr in ("variables", "trainable_variables", "regularization_losses") if not hasattr(loaded, attr)
    ]
    if problems:
        return problems
    if len(loaded.variables) != facts["variables"]:
        problems.append(f"{len(loaded.variables)} variables, expected {facts['variables']}")
    if len(loaded.trainable_variables) != facts["trainable_variables"]:
        problems.append(f"{len(loaded.trainable_variables)} trainable variables, expected {facts['trainable_variables']}")
    if list(loaded.regularization_losses):
        problems.append("unexpected regularization losses")
    return problems + _check_signature(loaded, variant, width)


def _check_signature(loaded, variant: str, width: int) -> list[str]:
    import tensorflow as tf

    signature = loaded.signatures.get("serving_default")
    key = OUTPUT_NAMES[variant]
    if signature is None:
        return ["no serving_default signature"]
    _, inputs = signature.structured_input_signature
    if list(inputs) != [INPUT_NAME]:
        return [f"signature inputs {sorted(inputs)}, expected [{INPUT_NAME!r}]"]
    if list(signature.structured_outputs) != [key]:
        return [f"signature outputs {sorted(signature.structured_outputs)}, expected [{key!r}]"]
    # Checked from the signature's specs, not by running it: a second function run
    # costs a graph optimisation (seconds on R152x2); the tests run it.
    problems = []
    in_spec, out_spec = inputs[INPUT_NAME], signature.structured_outputs[key]
    if in_spec.shape.as_list() != [None, None, None, 3] or in_spec.dtype != tf.float32:
        problems.append(f"signature input {in_spec}, expected float32 [None, None, None, 3]")
    if out_spec.shape.as_list() != [None, width] or out_spec.dtype != tf.float32:
        problems.append(f"signature output {out_spec}, expected float32 [None, {width}]")
    return problems


def _labels(job: ExportJob, variant: str):
    """The class names the variant carries as ``assets/labels.txt``: the classifier's, when known."""
    return job.labels if variant == "classification" else None


class SavedModelTarget(ExportTarget):
    name = "savedmodel"
    summary = "TF Hub-style SavedModels (Reusable SavedModel API, serving_default signature) [default]"
    kaggle_framework = "tensorFlow2"
    #: The classifier tracks its class names as ``assets/labels.txt`` (convert.export.saved_labels).
    embeds_labels = True

    def write(self, job: ExportJob) -> list[Artifact]:
        """Save both variants under ``job.export_dir``; each Artifact's facts are the manifest's."""
        import tensorflow as tf

        artifacts = []
        features = trace_features(job.net, job.input_range)  # the network, traced once for both variants
        for variant in VARIANTS:
            t = time.perf_counter()
            root = build_exportable(job.net, variant, job.input_range, features)
            path = job.export_dir / variant
            try:
                with tracked_labels(root, _labels(job, variant)):
                    tf.saved_model.save(root, str(path), signatures={"serving_default": root.serving_default})
            except (OSError, tf.errors.OpError) as exc:
                raise io_error(f"cannot write the {variant} SavedModel of {job.model_id} to {path}", exc) from exc
            width = job.arch.classes if variant == "classification" else job.arch.features
            facts = {
                "output": OUTPUT_NAMES[variant],
                "output_shape": [None, width],
                "variables": len(root.variables),
                "trainable_variables": len(root.trainable_variables),
                "parameters": int(sum(int(np.prod(v.shape)) for v in root.variables)),
            }
            del root
            facts["fingerprint"] = fingerprint(path)
            artifacts.append(Artifact(self.name, variant, variant, facts))
            job.log(f"{job.model_id}: wrote the {variant} SavedModel in {time.perf_counter() - t:.1f}s")
        return artifacts

    def check(self, job: ExportJob, artifacts: list[Artifact], images: np.ndarray, prepared=None) -> Callable[[], list[Run]]:
        """Reloads in this process, one variant at a time, when waited for (so that other targets' children start first)."""
        return check_in_process(lambda a: self._reload(job, a, images), artifacts)

    def _reload(self, job: ExportJob, artifact: Artifact, images: np.ndarray) -> Run:
        import tensorflow as tf

        t = time.perf_counter()
        variant, path = artifact.variant, job.export_dir / artifact.path
        try:
            loaded = tf.saved_model.load(str(path))
        except (OSError, tf.errors.OpError) as exc:
            raise ExportError(f"{job.model_id}: the {variant} SavedModel just written does not load: {exc}") from exc
        width = job.arch.classes if variant == "classification" else job.arch.features
        problems = _check_api(loaded, variant, artifact.facts, width)
        if problems:
            raise ExportError(f"{job.model_id}: the reloaded {variant} SavedModel is not as written: {'; '.join(problems)}")
        check_reloaded_labels(loaded, path, _labels(job, variant), job.model_id)
        outputs = loaded(tf.constant(images)).numpy()
        del loaded
        job.release()  # the loaded model's weights, before the next variant is loaded
        seconds = time.perf_counter() - t
        job.log(f"{job.model_id}: reloaded and checked the {variant} SavedModel in {seconds:.1f}s")
        return Run(artifact, "tensorflow", outputs, seconds)

    def card(self, job: ExportJob, artifact: Artifact, figures: Mapping | None) -> str | None:
        return render_card(
            job.entry,
            artifact.variant,
            input_range=job.input_range,
            source_url=job.source_url,
            sha256=job.sha256,
            parity=figures["tensorflow"] if figures else None,
            features=job.arch.features,
            labels_embedded=job.labels is not None,
            forward=job.forward,
        )

    def weight_copies(self, options: ExportOptions) -> int:
        """Its two SavedModels, and with ``--archive`` a .tar.gz of each (random-looking floats barely compress)."""
        return super().weight_copies(options) * (2 if options.archive else 1)

    def finish(self, job: ExportJob, artifacts: list[Artifact], options: ExportOptions) -> list[Artifact]:
        """``--archive``: a deterministic .tar.gz of each SavedModel (the TF Hub upload format); facts["archive"] either way."""
        return [replace(a, facts={**a.facts, "archive": self._archive(job, a) if options.archive else None}) for a in artifacts]

    def _archive(self, job: ExportJob, artifact: Artifact) -> dict:
        from .archive import write_archive

        t = time.perf_counter()
        dest = write_archive(job.export_dir / artifact.path, job.export_dir / archive_name(job.entry, artifact.variant))
        job.log(f"{job.model_id}: archived {artifact.variant} as {dest.name} in {time.perf_counter() - t:.1f}s")
        return {"file": dest.name, "sha256": sha256_file(dest)}

    def labels_path(self, artifact: Artifact) -> str:
        return f"{artifact.path}/assets/{LABELS_FILE}"

    def digests(self, job: ExportJob, artifact: Artifact):
        """Every file but ``fingerprint.pb``, which holds a random UUID (re-exports differ only there)."""
        return artifact.facts["fingerprint"]["sha256"]

    def what(self, run: Run) -> str:
        return f"{run.artifact.variant} SavedModel"

    def where(self, run: Run) -> str:
        return f"{run.artifact.variant} reloaded from disk"

    def kaggle_usage(self, artifact: Artifact) -> tuple[list[str], list[str]]:
        return ["import tensorflow as tf"], [
            'model = tf.saved_model.load("${PATH}")',
            f"{TRACE_EVERY_SHAPE}  # one trace for every input shape",
            "outputs = model(images)",
        ]


TARGET = SavedModelTarget()
